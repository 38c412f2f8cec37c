"""Pure metric functions over plain episode records (dicts), so they are testable without a stack.

An episode record (see ``runner.episode_record``) has:
    id, question_id, policy, status, answer, question_record {answer, aliases},
    latency_s (created -> finished), first_useful_s (created -> first valid action checkpointed),
    turns, tool_calls, invalid_actions, waterfall [{step, role, backend, tool, timings}],
    turn_stats [{step, role, backend, valid, repaired, decode_s, tokens, forward_passes, routing}]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from dllmflow.world.generator import answer_matches

Record = dict[str, Any]
WATERFALL_PARTS = ("queue", "decode", "tool", "checkpoint", "orchestration")
MODEL_BACKENDS_EXCLUDED = ("oracle",)  # scripted turns use no accelerator
DEFAULT_GPU_PRICE_PER_HOUR = 2.5


def gpu_price_per_hour() -> float:
    raw = os.environ.get("DLLMFLOW_GPU_PRICE_PER_HOUR")
    if raw is None or not raw.strip():
        return DEFAULT_GPU_PRICE_PER_HOUR
    try:
        price = float(raw)
    except ValueError:
        raise ValueError(f"DLLMFLOW_GPU_PRICE_PER_HOUR must be a number (got {raw!r})") from None
    if price < 0 or not math.isfinite(price):
        raise ValueError(f"DLLMFLOW_GPU_PRICE_PER_HOUR must be >= 0 (got {raw!r})")
    return price


# The metrics that price GPU time: a run whose replicas decode on CPU shows none of them.
GPU_PRICED_METRICS = ("cost_per_success", "gpu_price_per_hour")


def serving_accelerator(serving: Any) -> str:
    """Where the model turns of a run decode: "gpu" or "cpu" for the project's own replicas
    (Ray gives a replica a GPU only when it asks for one), "external" when a slot is served by
    an outside engine, whose hardware the run cannot see."""
    if any(serving.kind(b) != "local" for b in ("ar", "diffusion")):
        return "external"
    return "gpu" if serving.replica_num_gpus > 0 else "cpu"


def is_correct(record: Record) -> bool:
    """Exact match after normalisation, against the gold answer or any alias."""
    gold = record.get("question_record") or {}
    answer = record.get("answer")
    return bool(answer) and "answer" in gold and answer_matches(str(answer), gold)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    clean = [float(v) for v in values if v is not None]
    return float(np.percentile(clean, q)) if clean else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _mean(values: Iterable[float | None]) -> float | None:
    clean = [float(v) for v in values if v is not None]
    return sum(clean) / len(clean) if clean else None


def model_turns(record: Record) -> list[Record]:
    return [
        t for t in record.get("turn_stats") or [] if t.get("backend") not in MODEL_BACKENDS_EXCLUDED
    ]


def accuracy(records: Sequence[Record]) -> float | None:
    return _ratio(sum(is_correct(r) for r in records), len(records))


def invalid_action_rate(records: Sequence[Record]) -> float | None:
    """Invalid turns / turns, with the workflow's own counters."""
    turns = sum(int(r.get("turns") or 0) for r in records)
    return _ratio(sum(int(r.get("invalid_actions") or 0) for r in records), turns)


def schema_adherence(records: Sequence[Record]) -> float | None:
    """Share of turns whose first decode was a valid, schema-conforming action (no repair)."""
    turns = [t for r in records for t in r.get("turn_stats") or []]
    ok = sum(1 for t in turns if t.get("valid") and not t.get("repaired"))
    return _ratio(ok, len(turns))


def tokens_per_forward(records: Sequence[Record]) -> float | None:
    """Sum of generated tokens / sum of forward passes over model turns (AR: 1.0 by design)."""
    turns = [t for r in records for t in model_turns(r)]
    tokens = sum(int(t.get("tokens") or 0) for t in turns)
    return _ratio(tokens, sum(int(t.get("forward_passes") or 0) for t in turns))


def gpu_seconds(record: Record) -> float:
    """Accelerator time of one episode: its model turns' decode seconds, shadow decodes included."""
    served = sum(float(t.get("decode_s") or 0.0) for t in model_turns(record))
    return served + sum(float(t.get("decode_s") or 0.0) for t in shadow_turns(record))


def cost_per_success(records: Sequence[Record], price_per_hour: float) -> float | None:
    """Total GPU-seconds x price / successes; None when nothing succeeded."""
    successes = sum(is_correct(r) for r in records)
    total = sum(gpu_seconds(r) for r in records) / 3600.0 * price_per_hour
    return _ratio(total, successes)


def mean_waterfall(records: Sequence[Record]) -> dict[str, float]:
    """Mean seconds per episode spent in each waterfall part."""
    totals = dict.fromkeys(WATERFALL_PARTS, 0.0)
    for r in records:
        for row in r.get("waterfall") or []:
            for part in WATERFALL_PARTS:
                totals[part] += float((row.get("timings") or {}).get(part) or 0.0)
    n = len(records) or 1
    return {part: value / n for part, value in totals.items()}


def overlap_stats(records: Sequence[Record]) -> dict[str, Any]:
    """P-ReAct: per episode, the mean seconds a tool call ran inside its turn's decode, and the
    share of tool-calling steps whose tool started before the turn ended."""
    rows = [row for r in records for row in (r.get("waterfall") or []) if row.get("tool")]
    tool_rows = [row for row in rows if row.get("tool") not in ("answer",)]
    early = [row for row in tool_rows if row.get("tool_start") is not None]
    overlap = sum(float(row.get("overlap") or 0.0) for row in early)
    return {
        "overlap_mean_s": overlap / (len(records) or 1),
        "overlapped_steps": len(early),
        "overlapped_step_share": _ratio(len(early), len(tool_rows)),
    }


def summarize(records: Sequence[Record], price_per_hour: float | None = None) -> dict[str, Any]:
    """Every reported metric for one group of episodes (one policy or one arm)."""
    price = gpu_price_per_hour() if price_per_hour is None else price_per_hour
    latencies = [r.get("latency_s") for r in records]
    first = [r.get("first_useful_s") for r in records]
    return {
        "episodes": len(records),
        "completed": sum(r.get("status") == "completed" for r in records),
        "dead_lettered": sum(r.get("status") == "dead_lettered" for r in records),
        "failed": sum(r.get("status") == "failed" for r in records),
        "correct": sum(is_correct(r) for r in records),
        "accuracy": accuracy(records),
        "turns_per_episode": _mean(r.get("turns") for r in records),
        "tool_calls_per_episode": _mean(r.get("tool_calls") for r in records),
        "invalid_action_rate": invalid_action_rate(records),
        "schema_adherence": schema_adherence(records),
        "latency_mean_s": _mean(latencies),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_p99_s": percentile(latencies, 99),
        "first_useful_p50_s": percentile(first, 50),
        "first_useful_mean_s": _mean(first),
        "tokens_per_forward": tokens_per_forward(records),
        "gpu_seconds": sum(gpu_seconds(r) for r in records),
        "gpu_price_per_hour": price,
        "cost_per_success": cost_per_success(records, price),
        "waterfall_mean_s": mean_waterfall(records),
        **{f"waterfall_{k}_s": v for k, v in mean_waterfall(records).items()},
        **overlap_stats(records),
    }


def by_policy(records: Sequence[Record], price_per_hour: float | None = None) -> dict[str, Any]:
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(str(r.get("policy")), []).append(r)
    return {p: summarize(rs, price_per_hour) for p, rs in sorted(groups.items())}


# ---------------------------------------------------------------------------------------------
# A/B and shadow arms


def episode_arm(record: Record) -> str | None:
    """The arm an `ab` episode ran on: routing metadata's ``arm`` if recorded, else the backend
    that decoded most of its (primary) model turns."""
    counts: dict[str, int] = {}
    for t in model_turns(record):
        arm = (t.get("routing") or {}).get("arm") or t.get("backend")
        if arm:
            counts[arm] = counts.get(arm, 0) + 1
    return max(sorted(counts), key=counts.__getitem__) if counts else None


def shadow_turns(record: Record) -> list[Record]:
    """Shadow decodes recorded by the router (``routing.shadow``: backend, decode_s, tokens,
    forward_passes, text or error); validity is parsed from the shadow text when not given."""
    from dllmflow.agent.actions import parse_turn

    out = []
    for t in record.get("turn_stats") or []:
        shadow = (t.get("routing") or {}).get("shadow")
        if isinstance(shadow, dict) and shadow.get("backend"):
            valid = shadow.get("valid")
            if valid is None:
                text = shadow.get("text")
                valid = bool(text) and not shadow.get("error") and not parse_turn(text).error
            out.append({"step": t.get("step"), "role": t.get("role"), **shadow, "valid": valid})
    return out


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of `stat` over `values`, deterministic for a given seed."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(n_boot, data.size))
    stats = np.apply_along_axis(stat, 1, data[idx])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _turn_summary(turns: Sequence[Record]) -> dict[str, Any]:
    tokens = sum(int(t.get("tokens") or 0) for t in turns)
    forwards = sum(int(t.get("forward_passes") or 0) for t in turns)
    return {
        "turns": len(turns),
        "valid_share": _ratio(sum(bool(t.get("valid")) for t in turns), len(turns)),
        "decode_mean_s": _mean(t.get("decode_s") for t in turns),
        "tokens_per_forward": _ratio(tokens, forwards),
    }


def arm_report(records: Sequence[Record], seed: int = 0) -> dict[str, Any]:
    """Per-arm metrics with bootstrap CIs for `ab` / `shadow` episodes, plus a recommendation."""
    arms: dict[str, list[Record]] = {}
    for r in records:
        if r.get("policy") in ("ab", "shadow") and (arm := episode_arm(r)):
            arms.setdefault(arm, []).append(r)
    out: dict[str, Any] = {"arms": {}, "shadow_turns": {}}
    for arm, rs in sorted(arms.items()):
        m = summarize(rs)
        m["accuracy_ci"] = bootstrap_ci([float(is_correct(r)) for r in rs], seed=seed)
        m["latency_mean_ci"] = bootstrap_ci([r.get("latency_s") for r in rs], seed=seed)
        out["arms"][arm] = m
    shadows: dict[str, list[Record]] = {}
    for r in records:
        for t in shadow_turns(r):
            shadows.setdefault(t["backend"], []).append(t)
    primary: dict[str, list[Record]] = {}
    for r in records:
        if r.get("policy") == "shadow":
            for t in model_turns(r):
                primary.setdefault(t["backend"], []).append(t)
    for backend in sorted(set(shadows) | set(primary)):
        out["shadow_turns"][backend] = _turn_summary(
            primary.get(backend, []) + shadows.get(backend, [])
        )
    out["recommendation"] = recommend(out["arms"])
    return out


def recommend(arms: dict[str, dict[str, Any]], accuracy_margin: float = 0.03) -> str:
    """One line: prefer diffusion when it is faster and its accuracy CI overlaps AR's within
    `accuracy_margin`; otherwise say what blocks it."""
    if "ar" not in arms or "diffusion" not in arms:
        present = ", ".join(sorted(arms)) or "none"
        return f"not enough data: need both ar and diffusion arms (have {present})"
    ar, dl = arms["ar"], arms["diffusion"]
    if min(ar["episodes"], dl["episodes"]) < 5:
        return "not enough data: fewer than 5 episodes in an arm"
    acc_gap = (ar["accuracy"] or 0.0) - (dl["accuracy"] or 0.0)
    ar_lat, dl_lat = ar["latency_mean_ci"], dl["latency_mean_ci"]
    faster = dl_lat is not None and ar_lat is not None and dl_lat[1] < ar_lat[0]
    if faster and acc_gap <= accuracy_margin:
        return (
            f"route to diffusion: latency CI {dl_lat[0]:.1f}-{dl_lat[1]:.1f}s vs AR "
            f"{ar_lat[0]:.1f}-{ar_lat[1]:.1f}s at accuracy gap {acc_gap:+.1%}"
        )
    if acc_gap > accuracy_margin:
        return f"keep AR: diffusion accuracy is {acc_gap:.1%} lower (margin {accuracy_margin:.0%})"
    return "no clear winner: latency CIs overlap; keep collecting"
