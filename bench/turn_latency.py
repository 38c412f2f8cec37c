"""Per-turn decode latency: the shipped AR model vs the block-diffusion model on identical contexts.

Contexts come from oracle episodes on a held-out world (seed never used in training), rendered
with the same ``render_context`` the agents use, so both backends decode exactly the same
turns. For each backend: latency per turn (mean, p50, p95, p99), tokens per turn, forward passes
per turn, tokens per forward pass, valid-action rate, and for P-ReAct (action-first) decoding the
time until the action span is complete.

    PYTHONPATH=. python bench/turn_latency.py --questions 20 \
        --out bench/results/turn_latency_cpu.json                  # CPU, shipped checkpoints
    PYTHONPATH=. python bench/turn_latency.py --device cuda --ar /ckpt/ar --diffusion /ckpt/diff

Only torch/transformers/tokenizers are needed (it also runs on the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dllmflow.models.actions import parse_turn
from dllmflow.models.loader import load_backend
from dllmflow.models.local_search import InMemorySearch
from dllmflow.models.oracle import oracle_episode
from dllmflow.models.prompting import CONTEXT_TOKENS, render_context
from dllmflow.models.sampling import GenerationRequest
from dllmflow.models.world import eval_seeds, generate_world


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def contexts(n_questions: int, seed: int, tok, action_first: bool) -> list[str]:
    world = generate_world(seed, n_questions=n_questions)
    tools = InMemorySearch(world.documents)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    out = []
    for q in world.questions:
        steps = oracle_episode(q, tools, action_first=action_first)
        for i, step in enumerate(steps):
            out.append(
                render_context(
                    step.role,
                    q,
                    steps[:i],
                    max_tokens=CONTEXT_TOKENS,
                    count_tokens=count,
                    action_first=action_first,
                )
            )
    return out


def _valid(text: str) -> bool:
    try:
        return parse_turn(text).valid
    except ImportError:  # jsonschema missing (the GPU machine): fall back to "parses at all"
        return "</action>" in text


def measure(sampler, prompts: list[str], tau: float, action_first: bool) -> dict[str, Any]:
    for p in prompts[:3]:  # warm-up
        sampler.generate(GenerationRequest(prompt=p, tau=tau, action_first=action_first))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    rows = []
    for p in prompts:
        t0 = time.perf_counter()
        r = sampler.generate(GenerationRequest(prompt=p, tau=tau, action_first=action_first))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rows.append((time.perf_counter() - t0, r))
    lat = [dt for dt, _ in rows]
    toks = sum(r.tokens_generated for _, r in rows)
    passes = sum(r.forward_passes for _, r in rows)
    ready = [r.action_ready_seconds for _, r in rows if r.action_ready_seconds is not None]
    stops: dict[str, int] = {}
    for _, r in rows:
        stops[r.stop_reason] = stops.get(r.stop_reason, 0) + 1
    return {
        "turns": len(rows),
        "latency_s": {
            "mean": statistics.mean(lat),
            "p50": percentile(lat, 50),
            "p95": percentile(lat, 95),
            "p99": percentile(lat, 99),
        },
        "tokens_per_turn": toks / len(rows),
        "forward_passes_per_turn": passes / len(rows),
        "tokens_per_forward": toks / max(1, passes),
        "valid_action_rate": sum(_valid(r.text) for _, r in rows) / len(rows),
        "time_to_action_s_mean": statistics.mean(ready) if ready else None,
        "stop_reasons": stops,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ar", default="ar", help="AR checkpoint (shipped name or directory)")
    ap.add_argument("--diffusion", default="diffusion", help="diffusion checkpoint")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--eval-index", type=int, default=0, help="which held-out world")
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest for single-request decoding of these small models)",
    )
    ap.add_argument("--out", help="write the JSON here (else stdout only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ar = load_backend(args.ar, device=args.device)
    dm = load_backend(args.diffusion, device=args.device)
    seed = eval_seeds(1, offset=args.eval_index)[0]
    think_first = contexts(args.questions, seed, ar.tokenizer, action_first=False)
    act_first = contexts(args.questions, seed, ar.tokenizer, action_first=True)
    results = {
        "ar": measure(ar.sampler, think_first, args.tau, False),
        "diffusion": measure(dm.sampler, think_first, args.tau, False),
        "ar_action_first": measure(ar.sampler, act_first, args.tau, True),
        "diffusion_p_react": measure(dm.sampler, act_first, args.tau, True),
    }
    ar_mean = results["ar"]["latency_s"]["mean"]
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    payload = {
        "command": "PYTHONPATH=. python " + shlex.join([sys.argv[0], *(argv or sys.argv[1:])]),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu,
        "torch": torch.__version__,
        "eval_world_seed": seed,
        "questions": args.questions,
        "tau": args.tau,
        "results": results,
        "diffusion_speedup_vs_ar": ar_mean / results["diffusion"]["latency_s"]["mean"],
        "p_react_time_to_action_vs_ar_action_first": (
            (results["ar_action_first"]["time_to_action_s_mean"] or 0)
            / max(1e-9, results["diffusion_p_react"]["time_to_action_s_mean"] or 1e-9)
        ),
    }
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
