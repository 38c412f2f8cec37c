"""PNG plots: latency CDF per policy and the mean latency waterfall per policy (stacked bars)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dllmflow.evaluation.metrics import WATERFALL_PARTS, mean_waterfall


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


def waterfall_bars(records: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    policies = sorted({r["policy"] for r in records})
    means = {p: mean_waterfall([r for r in records if r["policy"] == p]) for p in policies}
    fig, ax = plt.subplots(figsize=(6, 4))
    bottoms = [0.0] * len(policies)
    for part in WATERFALL_PARTS:
        heights = [means[p][part] for p in policies]
        ax.bar(policies, heights, bottom=bottoms, label=part)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
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
