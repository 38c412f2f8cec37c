"""Per-turn decode latency: the shipped AR model vs the block-diffusion model on identical contexts.

Contexts come from oracle episodes on a held-out world (seed never used in training), rendered
with the same ``render_context`` the agents use, so both backends decode exactly the same
turns, interleaved context by context (so background load hits every backend alike). For each
backend: latency per turn (mean, p50, p95, p99), tokens per turn, forward passes
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

from dllmflow.agent.actions import parse_turn
from dllmflow.agent.prompting import CONTEXT_TOKENS, render_context
from dllmflow.models.loader import load_backend
from dllmflow.models.sampling import GenerationRequest
from dllmflow.world.generator import eval_seeds, generate_world
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode


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


def _has_jsonschema() -> bool:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return False
    return True


def _valid(text: str) -> bool:
    if _has_jsonschema():
        return parse_turn(text).valid
    # jsonschema missing (the GPU machine): the action span must at least be JSON with a tool.
    span = text[text.find("<action>") + 8 : text.find("</action>")] if "</action>" in text else ""
    try:
        payload = json.loads(span)
    except json.JSONDecodeError:
        return False
    return isinstance(payload, dict) and "tool" in payload and isinstance(payload.get("args"), dict)


def _timed(sampler, prompt: str, tau: float, action_first: bool):
    t0 = time.perf_counter()
    r = sampler.generate(GenerationRequest(prompt=prompt, tau=tau, action_first=action_first))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, r


def measure_interleaved(
    configs: dict[str, tuple[Any, list[str], bool]], tau: float
) -> dict[str, dict[str, Any]]:
    """Per context, run every config in turn, so load from other processes hits all alike."""
    for sampler, prompts, action_first in configs.values():  # warm-up
        for p in prompts[:3]:
            _timed(sampler, p, tau, action_first)
    rows: dict[str, list] = {name: [] for name in configs}
    n = min(len(prompts) for _s, prompts, _a in configs.values())
    for i in range(n):
        for name, (sampler, prompts, action_first) in configs.items():
            rows[name].append(_timed(sampler, prompts[i], tau, action_first))
    return {name: _summary(r) for name, r in rows.items()}


def _summary(rows: list) -> dict[str, Any]:
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
    results = measure_interleaved(
        {
            "ar": (ar.sampler, think_first, False),
            "diffusion": (dm.sampler, think_first, False),
            "ar_action_first": (ar.sampler, act_first, True),
            "diffusion_p_react": (dm.sampler, act_first, True),
        },
        args.tau,
    )
    ar_mean = results["ar"]["latency_s"]["mean"]
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    payload = {
        "command": "PYTHONPATH=. python " + shlex.join([sys.argv[0], *(argv or sys.argv[1:])]),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu,
        "torch": torch.__version__,
        "eval_world_seed": seed,
        "questions": args.questions,
        "tau": args.tau,
        "valid_action_check": "actions.parse_turn (JSON schema)"
        if _has_jsonschema()
        else "action span is a JSON object with tool and args (jsonschema not installed)",
        "schedule": "backends interleaved context by context, after 3 warm-up turns each",
        "results": results,
        "diffusion_speedup_vs_ar": ar_mean / results["diffusion"]["latency_s"]["mean"],
        "diffusion_speedup_vs_ar_p50": results["ar"]["latency_s"]["p50"]
        / results["diffusion"]["latency_s"]["p50"],
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
