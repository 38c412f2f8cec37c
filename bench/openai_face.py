"""32 concurrent OpenAI SDK clients on /v1/chat/completions vs the same requests one at a time.

The official `openai` SDK, unmodified, calls the stack's API process (`dllmflow up` starts it),
which hands every request to the slot's Ray replica; the replica batches the concurrent ones
step by step. Both runs use the same prompts, in the same run, on the same replica; the outputs
are compared (greedy decoding: batching must not change a token).

    python bench/openai_face.py                     # private stack on free ports, both slots
    python bench/openai_face.py --clients 32 --max-tokens 64 --slots ar,diffusion --stream
    BENCH_USE_RUNNING=1 python bench/openai_face.py # the stack the DLLMFLOW_* variables name

Writes bench/results/openai_face_cpu.json (or --out NAME).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# The repository root first, this folder last: its kernels.py would otherwise shadow the
# `kernels` package that transformers imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

import openai

from bench.common import bench_stack, percentile, record
from dllmflow.agent.prompting import render_context
from dllmflow.api.auth import ensure_api_token

PEOPLE = ["Alma Verner", "Ivo Castel", "Rhea Lund", "Otto Brisk", "Nia Sorel", "Ugo Marr"]


def prompts(n: int) -> list[str]:
    return [
        render_context("seeker", f"Where was {PEOPLE[i % len(PEOPLE)]} {i} born?") for i in range(n)
    ]


def call(client: openai.OpenAI, model: str, prompt: str, max_tokens: int, stream: bool):
    t0 = time.perf_counter()
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        reply = client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens
        )
        ext = reply.model_extra["dllmflow"]
        return {
            "text": reply.choices[0].message.content,
            "tokens": reply.usage.completion_tokens,
            "latency_s": time.perf_counter() - t0,
            "ttft_s": None,
            "mean_batch": ext["mean_batch"],
        }
    text, first, ext = "", None, {}
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, stream=True
    ):
        if chunk.model_extra.get("dllmflow"):
            ext = chunk.model_extra["dllmflow"]
        if not chunk.choices or not chunk.choices[0].delta.content:
            continue
        first = first or time.perf_counter() - t0
        delta = chunk.choices[0].delta
        replace = (delta.model_extra or {}).get("dllmflow", {}).get("replace")
        text = delta.content if replace else text + delta.content
    return {
        "text": text,
        "tokens": ext["tokens"],
        "latency_s": time.perf_counter() - t0,
        "ttft_s": first,
        "mean_batch": ext["mean_batch"],
    }


def summary(rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    tokens = sum(r["tokens"] for r in rows)
    lat = [r["latency_s"] for r in rows]
    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    return {
        "requests": len(rows),
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "requests_per_s": round(len(rows) / wall, 3),
        "latency_p50_s": round(percentile(lat, 50), 3),
        "latency_p95_s": round(percentile(lat, 95), 3),
        "ttft_p50_s": round(percentile(ttft, 50), 3) if ttft else None,
        "mean_batch_mean": round(statistics.mean(r["mean_batch"] for r in rows), 2),
        "mean_batch_max": round(max(r["mean_batch"] for r in rows), 2),
    }


def bench_slot(base_url: str, token: str, slot: str, args: argparse.Namespace) -> dict[str, Any]:
    model = f"dllmflow-{slot}"
    work = prompts(args.clients)
    one = openai.OpenAI(base_url=base_url, api_key=token, timeout=600, max_retries=0)
    call(one, model, work[0], args.max_tokens, args.stream)  # load the replica, warm caches

    t0 = time.perf_counter()
    sequential = [call(one, model, p, args.max_tokens, args.stream) for p in work]
    seq_wall = time.perf_counter() - t0

    # One SDK client per concurrent caller, each on its own thread, released together.
    clients = [
        openai.OpenAI(base_url=base_url, api_key=token, timeout=600, max_retries=0) for _ in work
    ]
    barrier = threading.Barrier(len(work))

    def concurrent_call(i: int) -> dict[str, Any]:
        barrier.wait()
        return call(clients[i], model, work[i], args.max_tokens, args.stream)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(work)) as pool:
        together = list(pool.map(concurrent_call, range(len(work))))
    con_wall = time.perf_counter() - t0

    same = sum(a["text"] == b["text"] for a, b in zip(sequential, together, strict=True))
    seq, con = summary(sequential, seq_wall), summary(together, con_wall)
    return {
        "model": model,
        "one_at_a_time": seq,
        "concurrent": con,
        "throughput_ratio": round(con["tokens_per_s"] / seq["tokens_per_s"], 2),
        "wall_ratio": round(seq_wall / con_wall, 2),
        "identical_outputs": f"{same}/{len(work)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--slots", default="ar,diffusion")
    parser.add_argument("--stream", action="store_true", help="stream=true for every call")
    parser.add_argument("--out", default="openai_face_cpu")
    args = parser.parse_args()
    with bench_stack() as settings:
        base_url = f"http://{settings.api_host}:{settings.api_port}/v1"
        token = ensure_api_token(settings)
        results = {slot: bench_slot(base_url, token, slot, args) for slot in args.slots.split(",")}
    record(
        args.out,
        {
            "what": (
                f"{args.clients} concurrent openai SDK clients vs the same requests one at a "
                "time, /v1/chat/completions on the stack's API process, one Ray replica per "
                "slot (shipped tiny pair, 1 torch thread)"
            ),
            "clients": args.clients,
            "max_tokens": args.max_tokens,
            "stream": args.stream,
            "slots": results,
        },
    )


if __name__ == "__main__":
    main()
