"""Read models shared by the JSON API and the dashboard: the turn timeline and the waterfall."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dllmflow.api.schemas import TimelineTurn, ToolResult
from dllmflow.config import Settings
from dllmflow.evaluation.metrics import GPU_PRICED_METRICS
from dllmflow.store.checkpoints import StoredCheckpoint
from dllmflow.store.models import Episode

SEGMENTS = ("queue", "decode", "tool", "checkpoint", "orchestration")
PREVIEW_CHARS = 240


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def temporal_url(settings: Settings, episode: Episode) -> str | None:
    if not episode.workflow_id:
        return None
    ns = settings.temporal_namespace
    return f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{ns}/workflows/{episode.workflow_id}"


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def timeline(checkpoints: Iterable[StoredCheckpoint]) -> list[TimelineTurn]:
    """Live checkpoints (step order, turn before its tool) folded into one row per step."""
    rows: list[TimelineTurn] = []
    by_step: dict[int, TimelineTurn] = {}
    for cp in checkpoints:
        p = cp.payload
        if cp.kind == "action":  # P-ReAct: the turn's action, committed before the turn ended
            row = by_step.get(cp.step)
            if row is not None:
                row.action_checkpoint_id = cp.id
            continue
        if cp.kind == "tool":
            row = by_step.get(cp.step)
            if row is not None:
                row.tool = ToolResult(
                    checkpoint_id=cp.id,
                    ok=bool(p.get("ok")),
                    error=p.get("error"),
                    result_preview=preview(p.get("result") if p.get("ok") else p.get("error")),
                    latency_s=_float(p.get("latency_s", cp.timings.get("tool_s"))),
                )
            continue
        row = TimelineTurn(
            step=cp.step,
            kind=cp.kind,
            role=cp.role,
            backend=cp.backend,
            model=cp.model,
            checkpoint_id=cp.id,
            queue_s=_float(cp.timings.get("queue_s")),
            decode_s=_float(cp.timings.get("decode_s")),
            valid=bool(p.get("valid")),
            error=p.get("error"),
            thinking=p.get("thinking"),
            action=p.get("action"),
            stats=p.get("stats") or {},
            repaired=bool(p.get("repaired")),
            copied_from=p.get("copied_from"),
        )
        by_step[cp.step] = row
        rows.append(row)
    return rows


@dataclass
class WaterfallStep:
    step: int
    role: str
    backend: str
    tool: str | None
    timings: dict[str, float]
    # P-ReAct: seconds into the step at which the tool started (None: after the turn), and
    # the seconds the tool ran while the turn was still decoding.
    tool_start: float | None = None
    overlap: float = 0.0

    @property
    def total(self) -> float:
        """The step's wall time: its parts, less the time two of them ran at once."""
        return max(0.0, sum(self.timings.values()) - self.overlap)


def waterfall_steps(
    episode: Episode, turns: Sequence[TimelineTurn]
) -> tuple[list[WaterfallStep], bool]:
    """The recorded waterfall; while none is (running or dead-lettered episodes) a provisional
    one from checkpoint timings, without checkpoint-write and orchestration time.
    Returns (steps, provisional)."""
    recorded = (episode.metrics or {}).get("waterfall")
    if recorded:
        steps = [
            WaterfallStep(
                step=int(r.get("step", i)),
                role=str(r.get("role") or ""),
                backend=str(r.get("backend") or ""),
                tool=r.get("tool"),
                timings={
                    k: max(0.0, float((r.get("timings") or {}).get(k) or 0.0)) for k in SEGMENTS
                },
                tool_start=_float(r.get("tool_start")),
                overlap=max(0.0, _float(r.get("overlap")) or 0.0),
            )
            for i, r in enumerate(recorded)
        ]
        return steps, False
    steps = []
    for t in turns:
        timings = dict.fromkeys(SEGMENTS, 0.0)
        timings["queue"] = t.queue_s or 0.0
        timings["decode"] = t.decode_s or 0.0
        timings["tool"] = (t.tool.latency_s or 0.0) if t.tool else 0.0
        tool = (t.action or {}).get("tool")
        steps.append(WaterfallStep(t.step, t.role or "", t.backend or "", tool, timings))
    return steps, True


@dataclass
class Bar:
    segment: str
    x: float  # percent of the chart width
    width: float
    seconds: float
    overlapped: bool = False  # P-ReAct: a tool bar drawn inside its turn's decode


@dataclass
class WaterfallRow:
    step: WaterfallStep
    bars: list[Bar]
    start_s: float


@dataclass
class Waterfall:
    rows: list[WaterfallRow]
    total_s: float
    by_segment: dict[str, float]
    provisional: bool


def layout_waterfall(steps: Sequence[WaterfallStep], provisional: bool = False) -> Waterfall:
    """Each step starts where the previous one ended; segments stack left to right, except a
    P-ReAct step's tool bar, which starts where the tool did: inside the decode bar.
    Positions are percentages of the episode's summed step time."""
    total = sum(s.total for s in steps)
    scale = 100.0 / total if total > 0 else 0.0
    rows, cursor = [], 0.0
    for s in steps:
        bars, x = [], cursor
        for seg in SEGMENTS:
            secs = s.timings.get(seg, 0.0)
            if secs > 0 and seg == "tool" and s.tool_start is not None:
                at = cursor + s.tool_start
                bars.append(Bar(seg, round(at * scale, 3), round(secs * scale, 3), secs, True))
            elif secs > 0:
                bars.append(Bar(seg, round(x * scale, 3), round(secs * scale, 3), secs))
                x += secs
        rows.append(WaterfallRow(s, bars, cursor))
        cursor += s.total
    by_segment = {seg: sum(s.timings.get(seg, 0.0) for s in steps) for seg in SEGMENTS}
    return Waterfall(rows, total, by_segment, provisional)


# The A/B table's rows, in reading order: (summary key, label, unit, episodes needed). A
# percentile from fewer episodes than it needs is not shown (p99 of 4 episodes is their max).
METRICS: tuple[tuple[str, str, str, int], ...] = (
    ("episodes", "episodes", "count", 0),
    ("accuracy", "accuracy", "percent", 0),
    ("correct", "correct", "count", 0),
    ("invalid_action_rate", "invalid actions", "percent", 0),
    ("schema_adherence", "schema adherence", "percent", 0),
    ("completed", "completed", "count", 0),
    ("dead_lettered", "dead-lettered", "count", 0),
    ("failed", "failed", "count", 0),
    ("latency_p50_s", "latency p50", "seconds", 0),
    ("latency_mean_s", "latency mean", "seconds", 0),
    ("latency_p95_s", "latency p95", "seconds", 20),
    ("latency_p99_s", "latency p99", "seconds", 100),
    ("first_useful_p50_s", "first useful output p50", "seconds", 0),
    ("first_useful_mean_s", "first useful output mean", "seconds", 0),
    ("turns_per_episode", "turns per episode", "number", 0),
    ("tool_calls_per_episode", "tool calls per episode", "number", 0),
    ("tokens_per_forward", "tokens per forward pass", "number", 0),
    ("gpu_seconds", "model decode GPU-seconds", "seconds", 0),
    ("cost_per_success", "GPU cost per correct answer", "usd", 0),
    ("gpu_price_per_hour", "GPU price per hour (assumed)", "usd", 0),
)


@dataclass
class MetricRow:
    name: str
    label: str
    unit: str  # count | percent | seconds | number | usd
    values: list[float | None]  # one per policy, None where not measured (or too few episodes)
    top: float  # the row's largest magnitude (bar scale)


@dataclass
class Comparison:
    """Metrics keyed by policy (or arm) as a table: a row per metric, a column per policy."""

    policies: list[str]
    rows: list[MetricRow]
    baseline: str | None


# A run whose replicas decoded on CPU: its decode seconds are CPU time and nothing is priced.
# A run stored before runs recorded their accelerator ("unknown"): nothing is priced either,
# since its decode seconds may be CPU time.
UNPRICED_LABELS = {
    "cpu": {"gpu_seconds": "model decode seconds (CPU)"},
    "unknown": {"gpu_seconds": "model decode seconds (accelerator not recorded)"},
}


def compare(by_policy: dict[str, Any], accelerator: str = "gpu") -> Comparison:
    groups = {p: m for p, m in by_policy.items() if isinstance(m, dict)}
    policies = sorted(groups, key=lambda p: (p not in ("ar", "diffusion", "routed"), p))
    numeric = {k for m in groups.values() for k, v in m.items() if _float(v) is not None}
    known = {key for key, *_ in METRICS}
    catalogue = [m for m in METRICS if m[0] in numeric]
    catalogue += [(k, k, "number", 0) for k in sorted(numeric - known)]
    if accelerator in UNPRICED_LABELS:
        labels = UNPRICED_LABELS[accelerator]
        catalogue = [
            (k, labels.get(k, lb), u, n) for k, lb, u, n in catalogue if k not in GPU_PRICED_METRICS
        ]
    rows = []
    for name, label, unit, needs in catalogue:
        values = [
            _float(groups[p].get(name))
            if (_float(groups[p].get("episodes")) or 0) >= needs
            else None
            for p in policies
        ]
        if all(v is None for v in values):
            continue
        top = max((abs(v) for v in values if v is not None), default=0.0)
        rows.append(MetricRow(name, label, unit, values, top))
    return Comparison(policies, rows, "ar" if "ar" in groups else None)


@dataclass
class MeanWaterfall:
    policy: str
    total_s: float
    bars: list[Bar]  # x and width in percent of the slowest policy's total


@dataclass
class EvalView:
    policies: Comparison
    waterfalls: list[MeanWaterfall]
    arms: Comparison | None
    recommendation: str | None


def eval_view(metrics: dict[str, Any]) -> EvalView:
    """An EvalRun's metrics ({"policies": {policy: summary}, "ab_shadow": {"arms": ...,
    "recommendation": ...}}); a flat {policy: summary} mapping is accepted too."""
    nested = metrics.get("policies")
    by_policy = nested if isinstance(nested, dict) else metrics
    accelerator = str(metrics.get("accelerator") or "unknown")
    table = compare(by_policy, accelerator)
    means = {
        p: {seg: max(0.0, _float(w.get(seg)) or 0.0) for seg in SEGMENTS}
        for p in table.policies
        if isinstance(w := by_policy[p].get("waterfall_mean_s"), dict)
    }
    slowest = max((sum(m.values()) for m in means.values()), default=0.0)
    waterfalls = []
    for policy, mean in means.items():
        bars, x = [], 0.0
        for seg, secs in mean.items():
            if secs > 0 and slowest > 0:
                width = 100.0 * secs / slowest
                bars.append(Bar(seg, round(x, 3), round(width, 3), secs))
                x += width
        waterfalls.append(MeanWaterfall(policy, sum(mean.values()), bars))
    ab = metrics.get("ab_shadow") if isinstance(metrics.get("ab_shadow"), dict) else {}
    arms = (
        compare(ab["arms"], accelerator)
        if isinstance(ab.get("arms"), dict) and ab["arms"]
        else None
    )
    return EvalView(table, waterfalls, arms, ab.get("recommendation"))
