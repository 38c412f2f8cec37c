"""The sweep table: one row per (variant, policy) from each variant's eval-run metrics.

Each variant of a sweep is an ordinary eval run in ``DIR/<variant slug>/`` (resumable, with its
own report); this module only reads their metrics and writes ``sweep.md`` / ``sweep.json`` /
``sweep.csv`` beside them, so it is testable on hand-made metrics.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dllmflow.evaluation.report import _fmt
from dllmflow.evaluation.variants import checkpoint_label

# (label in sweep.md, key in a row, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("variant", "variant", "str"),
    ("policy", "policy", "str"),
    ("diffusion checkpoint", "checkpoint", "str"),
    ("tau", "tau", "num"),
    ("P-ReAct", "p_react", "onoff"),
    ("max steps / turn", "max_denoise_steps", "num"),
    ("episodes", "episodes", "num"),
    ("accuracy", "accuracy", "pct"),
    ("Δ accuracy vs base", "accuracy_delta", "pp"),
    ("invalid-action rate", "invalid_action_rate", "pct"),
    ("turns / episode", "turns_per_episode", "num"),
    ("tool calls / episode", "tool_calls_per_episode", "num"),
    ("latency p50 (s)", "latency_p50_s", "s"),
    ("latency p95 (s)", "latency_p95_s", "s"),
    ("tokens / forward pass", "tokens_per_forward", "num"),
    ("decode s / ep", "waterfall_decode_s", "s"),
    ("tool s / ep", "waterfall_tool_s", "s"),
    ("orchestration s / ep", "waterfall_orchestration_s", "s"),
    ("checkpoint s / ep", "waterfall_checkpoint_s", "s"),
    ("tool inside decode s / ep", "overlap_mean_s", "s"),
    ("dead-lettered", "dead_lettered", "num"),
)
METRIC_KEYS = (
    "episodes",
    "correct",
    "accuracy",
    "invalid_action_rate",
    "schema_adherence",
    "turns_per_episode",
    "tool_calls_per_episode",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p95_s",
    "first_useful_p50_s",
    "tokens_per_forward",
    "dead_lettered",
    "failed",
    "waterfall_queue_s",
    "waterfall_decode_s",
    "waterfall_tool_s",
    "waterfall_orchestration_s",
    "waterfall_checkpoint_s",
    "overlap_mean_s",
    "overlapped_step_share",
)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "str":
        return str(value)
    if kind == "onoff":
        return "on" if value else "off"
    if kind == "pp":
        return f"{value * 100:+.1f} pp"
    return _fmt(value, kind)


def sweep_rows(results: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows from (variant description, that variant's metrics.json) pairs, in the given order.

    A description is ``Variant.describe()`` (variant, diffusion_checkpoint, tau, p_react,
    max_denoise_steps); accuracy deltas are against the ``base`` variant of the same policy.
    """
    rows = []
    for described, metrics in results:
        checkpoint = described.get("diffusion_checkpoint")
        for policy, m in (metrics.get("policies") or {}).items():
            rows.append(
                {
                    "variant": described["variant"],
                    "policy": policy,
                    "checkpoint": checkpoint_label(checkpoint) if checkpoint else None,
                    "tau": described.get("tau"),
                    "p_react": described.get("p_react"),
                    "max_denoise_steps": described.get("max_denoise_steps"),
                    **{k: m.get(k) for k in METRIC_KEYS},
                }
            )
    base = {r["policy"]: r["accuracy"] for r in rows if r["variant"] == "base"}
    for r in rows:
        ref = base.get(r["policy"])
        r["accuracy_delta"] = None if ref is None or r["accuracy"] is None else r["accuracy"] - ref
    return rows


def render_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(label for label, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), kind) for _, k, kind in COLUMNS) + " |")
    return lines


def render_sweep(
    rows: Sequence[dict[str, Any]], config: dict[str, Any], command: str | None
) -> str:
    from dllmflow.evaluation.paths import portable_command, portable_config

    config = portable_config(config)
    command = portable_command(command) if command else command
    out = [f"# Sweep {config.get('name') or ''}".rstrip(), ""]
    out.append(f"Questions `{config.get('questions')}`; policies {', '.join(config['policies'])}.")
    if command:
        out += ["", "Command:", "", f"    {command}"]
    out += ["", *render_table(rows), ""]
    out += [
        "Each variant is an eval run in its own folder (`<variant>/report.md`, metrics.json, "
        "episodes.csv); variants with serving overrides (checkpoint, tau, P-ReAct) ran on a "
        "dedicated worker with replicas of their own. Invalid-action rate is invalid turns / "
        "turns (after the one bounded repair); latency is end to end per episode; tokens / "
        "forward pass is over model turns; dead-lettered episodes count as wrong. The "
        "waterfall columns are seconds per episode summed over its steps; with P-ReAct a tool "
        "call runs inside its turn's decode for 'tool inside decode' seconds, so the parts add "
        "up to more than the episode took. max steps / "
        "turn is the per-turn denoising budget where a variant sets it (else the budget "
        f"{config.get('budgets', {}).get('max_denoise_steps')}).",
        "",
    ]
    return "\n".join(out)


def write_sweep(
    out: Path, rows: Sequence[dict[str, Any]], config: dict[str, Any], command: str | None
) -> dict[str, Path]:
    paths = {"md": out / "sweep.md", "json": out / "sweep.json", "csv": out / "sweep.csv"}
    paths["md"].write_text(render_sweep(rows, config, command), encoding="utf-8")
    paths["json"].write_text(
        json.dumps({"command": command, "config": config, "rows": list(rows)}, indent=2) + "\n",
        encoding="utf-8",
    )
    fields = [k for _, k, _ in COLUMNS] + [k for k in METRIC_KEYS if k not in {"episodes"}]
    fields = list(dict.fromkeys(fields))
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return paths
