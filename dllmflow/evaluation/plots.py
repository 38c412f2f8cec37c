"""PNG plots: latency CDF per policy and the mean latency waterfall per policy (stacked bars).

In the waterfall a P-ReAct tool call that ran while its turn was still decoding is drawn inside
the decode bar (hatched), not on top of it: a bar's height is the time the parts took end to
end, so the overlap shows as a shorter bar rather than as the sum of decode and tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dllmflow.evaluation.metrics import WATERFALL_PARTS, mean_waterfall, overlap_stats

Segment = tuple[str, float, float]  # (label, bottom, height) of one piece of a stacked bar
INSIDE = "tool inside decode"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdf(records: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in sorted({r["policy"] for r in records}):
        values = sorted(
            r["latency_s"] for r in records if r["policy"] == policy and r["latency_s"] is not None
        )
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=f"{policy} (n={len(values)})")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of episodes")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Episode latency CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def waterfall_segments(records: Sequence[dict[str, Any]]) -> dict[str, list[Segment]]:
    """Per policy, the stacked pieces of its mean waterfall bar. The tool seconds that ran
    inside the decode (``overlap_mean_s``) become a "tool inside decode" piece lying over the
    top of the decode piece; only the rest of the tool time is stacked above it."""
    bars: dict[str, list[Segment]] = {}
    for policy in sorted({r["policy"] for r in records}):
        group = [r for r in records if r["policy"] == policy]
        means = mean_waterfall(group)
        inside = min(overlap_stats(group)["overlap_mean_s"], means["decode"], means["tool"])
        top, pieces = 0.0, []
        for part in WATERFALL_PARTS:
            height = means[part]
            if part == "tool" and inside > 0:
                pieces.append((INSIDE, top - inside, inside))
                height -= inside
            pieces.append((part, top, height))
            top += height
        bars[policy] = pieces
    return bars


def waterfall_bars(records: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    bars = waterfall_segments(records)
    policies = list(bars)
    fig, ax = plt.subplots(figsize=(6, 4))
    order = list(WATERFALL_PARTS)
    order.insert(order.index("tool"), INSIDE)
    for label in order:
        pieces = [
            next(((b, h) for name, b, h in bars[p] if name == label), (0.0, 0.0)) for p in policies
        ]
        if label == INSIDE and not any(h for _b, h in pieces):
            continue  # no P-ReAct overlap in this run: no legend entry for it
        style = {"hatch": "//", "fill": False, "edgecolor": "black"} if label == INSIDE else {}
        ax.bar(
            policies,
            [h for _b, h in pieces],
            bottom=[b for b, _h in pieces],
            label=label,
            **style,
        )
    ax.set_ylabel("mean seconds per episode")
    ax.set_title("Latency waterfall (summed over steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    if not records:
        return []
    return [
        latency_cdf(records, out / "latency_cdf.png"),
        waterfall_bars(records, out / "waterfall.png"),
    ]
