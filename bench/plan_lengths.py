"""Plan lengths: does the planner plan as many steps as the question has hops?

The diffusion half's reworded misses start from plans of the wrong length far more often than
the AR half's (model card, runs 6-9), under every commit rule tried. This separates what the
diffusion half's weights know from what block decoding does with them: the same planner
requests decoded by

  ar          the AR half (``smollm2-135m/ar``)
  diffusion   the diffusion half in block decoding (``smollm2-135m/diffusion``, --tau)
  causal      the diffusion half's weights decoded left to right as a causal LM: the mode its
              0.5 x AR objective trains (token shift makes position i - 1's logits predict token
              i in both modes; the trained mask vector is unused)

and for each question the plan's step count against its hops: exact, too long, too short, no
plan. Only the planner's first turn is decoded (no tools), so a whole set takes minutes on CPU.

  PYTHONPATH=. python bench/plan_lengths.py --set reworded --policies ar,diffusion,causal \
      --out bench/results/real_pair/run10
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

# The repository root first, this folder last: its kernels.py would otherwise shadow the
# `kernels` package that transformers imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

from dllmflow.agent.policy import ModelPolicy
from dllmflow.models.loader import CHECKPOINT_DIR, load_backend
from dllmflow.models.real_pair import ADAPTER_FILE

PAIR = "smollm2-135m"
STEP = re.compile(r"(?:^|[;:])\s*(\d+)\)")


def plan_steps(turn: str) -> int | None:
    """Steps of a planner turn's ``Plan: 1) ...; 2) ...`` (None: no numbered plan)."""
    think = turn.split("</think>")[0]
    if "Plan:" not in think:
        return None
    plan = think.split("Plan:", 1)[1].split("First,")[0]
    numbers = [int(n) for n in STEP.findall(plan)]
    return len(numbers) or None


def causal_checkpoint(root: Path) -> Path:
    """The diffusion half's adapter under the AR half's config: its weights as a causal LM."""
    out = root / "causal"
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    state = load_file(str(CHECKPOINT_DIR / PAIR / "diffusion" / ADAPTER_FILE))
    save_file({k: v for k, v in state.items() if k.endswith((".lora_a", ".lora_b"))},
              str(out / ADAPTER_FILE))  # fmt: skip
    config = json.loads((CHECKPOINT_DIR / PAIR / "ar" / "config.json").read_text())
    diffusion = json.loads((CHECKPOINT_DIR / PAIR / "diffusion" / "config.json").read_text())
    config.update({k: diffusion[k] for k in ("lora_rank", "lora_alpha")})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def run_policy(
    name: str, path: str | Path, questions: list[dict], tau: float, batch: int, device: str
) -> dict[str, Any]:
    backend = load_backend(str(path), device=device)
    policy = ModelPolicy(backend.sampler, tau=tau)
    requests = [policy.request("planner", q, []) for q in questions]
    t0 = time.perf_counter()
    results = backend.sampler.generate_batch(requests, max_batch=batch)
    seconds = time.perf_counter() - t0
    counts: Counter[str] = Counter()
    by_hops: dict[int, Counter[str]] = {}
    rows = []
    for q, r in zip(questions, results, strict=True):
        hops, steps = len(q["hops"]), plan_steps(r.text)
        verdict = (
            "no plan" if steps is None
            else "exact" if steps == hops
            else "too long" if steps > hops
            else "too short"
        )  # fmt: skip
        counts[verdict] += 1
        by_hops.setdefault(hops, Counter())[verdict] += 1
        rows.append({"id": q["id"], "hops": hops, "steps": steps, "turn": r.text})
        print(f"{name} {q['id']} hops={hops} steps={steps}", file=sys.stderr, flush=True)
    return {
        "policy": name,
        "checkpoint": str(path),
        "questions": len(questions),
        "counts": dict(counts),
        "wrong_length": len(questions) - counts["exact"],
        "by_hops": {h: dict(c) for h, c in sorted(by_hops.items())},
        "mean_forward_passes": round(sum(r.forward_passes for r in results) / len(results), 1),
        "seconds": round(seconds, 1),
        "turns": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="reworded", help="bench/evalsets/<set>/questions.jsonl")
    p.add_argument("--policies", default="ar,diffusion,causal")
    p.add_argument("--questions", type=int, default=60)
    p.add_argument("--tau", type=float, default=0.97, help="the diffusion half's threshold")
    p.add_argument("--batch", type=int, default=16, help="planner turns decoded together")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (CPU)")
    p.add_argument("--out", help="write plan_lengths_<set>.json here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    qa = Path(__file__).resolve().parent / "evalsets" / args.set / "questions.jsonl"
    questions = [json.loads(line) for line in qa.open() if line.strip()][: args.questions]
    if not all(isinstance(q.get("hops"), list) for q in questions):
        raise SystemExit(f"{qa}: every question needs its hops (a generated world's set)")
    with tempfile.TemporaryDirectory(prefix="dllmflow-plans-") as tmp:
        paths = {
            "ar": f"{PAIR}/ar",
            "diffusion": f"{PAIR}/diffusion",
            "causal": causal_checkpoint(Path(tmp)),
        }
        unknown = sorted(set(args.policies.split(",")) - set(paths))
        if unknown:
            raise SystemExit(f"unknown policies {unknown}; choose from {sorted(paths)}")
        report = {
            "command": " ".join(["python", *sys.argv]),
            "set": args.set,
            "tau": args.tau,
            "device": args.device,
            "policies": [
                run_policy(name, paths[name], questions, args.tau, args.batch, args.device)
                for name in args.policies.split(",")
            ],
        }
    for r in report["policies"]:
        r["checkpoint"] = r["checkpoint"] if r["policy"] != "causal" else "diffusion adapter as AR"
        print(r["policy"], r["counts"], "by hops", r["by_hops"], f"{r['seconds']} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        path = Path(args.out) / f"plan_lengths_{args.set}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
