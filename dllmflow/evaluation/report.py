"""metrics.json, episodes.csv and report.md from episode records."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dllmflow.evaluation.metrics import (
    GPU_PRICED_METRICS,
    arm_report,
    by_policy,
    gpu_seconds,
    is_correct,
)

# "DLLM Agent: See Farther, Run Faster" (arXiv 2602.07451), 110 BrowseComp-ZH questions.
PAPER = {
    "accuracy": (0.155, 0.155),
    "tool_calls_per_episode": (7.5, 6.7),
    "turns_per_episode": (14.8, 13.0),
    "invalid_action_rate": (0.019, 0.064),
}
PAPER_LATENCY_REDUCTION = 0.30

TTFUO_DEFINITION = (
    "Time to first useful output: seconds from the episode's submission (row created) until its "
    "first valid action (a tool call or the final answer) was durably checkpointed, i.e. the "
    "moment a tool could start or the answer was known."
)
CSV_FIELDS = (
    "id",
    "question_id",
    "policy",
    "status",
    "correct",
    "answer",
    "gold",
    "turns",
    "tool_calls",
    "invalid_actions",
    "latency_s",
    "first_useful_s",
    "gpu_seconds",
    "tokens",
    "forward_passes",
    "error",
)


def write_csv(records: Sequence[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in records:
            turns = r.get("turn_stats") or []
            writer.writerow(
                {
                    **{k: r.get(k) for k in CSV_FIELDS if k in r},
                    "correct": is_correct(r),
                    "gold": (r.get("question_record") or {}).get("answer"),
                    "gpu_seconds": round(gpu_seconds(r), 4),
                    "tokens": sum(t.get("tokens") or 0 for t in turns),
                    "forward_passes": sum(t.get("forward_passes") or 0 for t in turns),
                }
            )
    return path


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "s":
        return f"{value:.2f}"
    if kind == "usd":
        return f"${value:.6f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


ROWS = (
    ("episodes", "episodes", "num"),
    ("accuracy", "accuracy", "pct"),
    ("turns / episode", "turns_per_episode", "num"),
    ("tool calls / episode", "tool_calls_per_episode", "num"),
    ("invalid-action rate", "invalid_action_rate", "pct"),
    ("tool-call schema adherence", "schema_adherence", "pct"),
    ("latency mean (s)", "latency_mean_s", "s"),
    ("latency p50 (s)", "latency_p50_s", "s"),
    ("latency p95 (s)", "latency_p95_s", "s"),
    ("latency p99 (s)", "latency_p99_s", "s"),
    ("time to first useful output p50 (s)", "first_useful_p50_s", "s"),
    ("tokens / forward pass", "tokens_per_forward", "num"),
    ("decode s / episode (waterfall)", "waterfall_decode_s", "s"),
    ("tool s / episode (waterfall)", "waterfall_tool_s", "s"),
    ("orchestration s / episode (waterfall)", "waterfall_orchestration_s", "s"),
    ("checkpoint s / episode (waterfall)", "waterfall_checkpoint_s", "s"),
    ("queue s / episode (waterfall)", "waterfall_queue_s", "s"),
    ("tool inside decode s / episode (P-ReAct overlap)", "overlap_mean_s", "s"),
    ("tool calls started inside the decode", "overlapped_step_share", "pct"),
    ("GPU-seconds (total)", "gpu_seconds", "s"),
    ("cost / successful task", "cost_per_success", "usd"),
)


# gpu_seconds of a run that is not priced: one on CPU, or one from before runs recorded their
# accelerator (its decode seconds may be CPU time).
UNPRICED_DECODE_LABELS = {
    "cpu": "model decode seconds (total, CPU)",
    "unknown": "model decode seconds (total, accelerator not recorded)",
}


def policy_table(metrics: dict[str, dict[str, Any]], accelerator: str = "gpu") -> list[str]:
    policies = list(metrics)
    lines = ["| metric | " + " | ".join(policies) + " |", "|---" * (len(policies) + 1) + "|"]
    for label, key, kind in ROWS:
        if accelerator in UNPRICED_DECODE_LABELS:
            if key in GPU_PRICED_METRICS:
                continue
            label = UNPRICED_DECODE_LABELS[accelerator] if key == "gpu_seconds" else label
        cells = [_fmt(metrics[p].get(key), kind) for p in policies]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def paper_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    ar, dl = metrics.get("ar"), metrics.get("diffusion")
    lines = [
        "| metric | paper AR | paper DLLM | ours AR | ours DLLM |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "accuracy": ("accuracy", "pct"),
        "tool_calls_per_episode": ("tool calls / episode", "num"),
        "turns_per_episode": ("turns / episode", "num"),
        "invalid_action_rate": ("invalid-action rate", "pct"),
    }
    for key, (paper_ar, paper_dl) in PAPER.items():
        label, kind = labels[key]
        ours = [_fmt((m or {}).get(key), kind) for m in (ar, dl)]
        lines.append(
            f"| {label} | {_fmt(paper_ar, kind)} | {_fmt(paper_dl, kind)} | {ours[0]} | {ours[1]} |"
        )
    ours_red = None
    if ar and dl and ar.get("latency_mean_s") and dl.get("latency_mean_s") is not None:
        ours_red = 1 - dl["latency_mean_s"] / ar["latency_mean_s"]
    lines.append(
        f"| mean latency reduction, DLLM vs AR | ~{PAPER_LATENCY_REDUCTION:.0%} | | "
        f"{_fmt(ours_red, 'pct')} | |"
    )
    return lines


def render_report(
    metrics: dict[str, Any], config: dict[str, Any], command: str | None, run_id: str
) -> str:
    from dllmflow.evaluation.paths import portable_command, portable_config

    config = portable_config(config)
    command = portable_command(command) if command else command
    per_policy = metrics["policies"]
    out = [f"# Evaluation {config.get('name') or run_id}", ""]
    out += [f"Eval run `{run_id}`; questions `{config.get('questions')}`."]
    if command:
        out += ["", "Command:", "", f"    {command}"]
    accelerator = metrics.get("accelerator") or "unknown"
    out += ["", "## Results per policy", ""] + (
        policy_table(per_policy, accelerator) if per_policy else ["(no episodes)"]
    )
    out += ["", TTFUO_DEFINITION, ""]
    cost = (
        "The replicas decoded on CPU, so no GPU cost is reported."
        if accelerator == "cpu"
        else "This run predates the record of where its replicas decoded, so no GPU cost is "
        "reported."
        if accelerator == "unknown"
        else "Cost = decode GPU-seconds of model turns x "
        f"${metrics.get('gpu_price_per_hour')}/GPU-hour (DLLMFLOW_GPU_PRICE_PER_HOUR) / correct "
        "answers; oracle turns use no accelerator."
        + (
            " An external engine served a slot: its hardware is assumed to be a GPU."
            if accelerator == "external"
            else ""
        )
    )
    out += [
        "Latency is end to end (episode created -> finished). Accuracy is exact match after "
        "normalisation (lowercase, punctuation and a leading article removed) against the gold "
        "answer or any alias. Schema adherence is the share of turns whose first decode was a "
        "valid action (no repair). " + cost,
    ]
    out += ["", "## Side by side with the paper", "", *paper_table(per_policy)]
    out += [
        "",
        "> Paper: DLLM Agent (arXiv 2602.07451), 110 BrowseComp-ZH questions, matched AR and "
        "block-diffusion models at full scale. Ours: a synthetic generated world with held-out "
        "seeds and the project's small CPU-trained models; absolute numbers are not comparable, "
        "only the direction of the AR vs DLLM differences is.",
        "",
        "## Plots",
        "",
        "![latency CDF](latency_cdf.png)",
        "",
        "![waterfall](waterfall.png)",
    ]
    arms = metrics.get("ab_shadow") or {}
    if arms.get("arms") or arms.get("shadow_turns"):
        out += ["", "## A/B and shadow arms", "", *policy_table(arms["arms"], accelerator)]
        for arm, m in arms["arms"].items():
            out.append(
                f"- {arm}: accuracy 95% CI {_ci(m.get('accuracy_ci'), 'pct')}, "
                f"mean latency 95% CI {_ci(m.get('latency_mean_ci'), 's')} s"
            )
        for backend, m in arms.get("shadow_turns", {}).items():
            out.append(
                f"- shadow turns on {backend}: {m['turns']} turns, valid "
                f"{_fmt(m['valid_share'], 'pct')}, decode mean {_fmt(m['decode_mean_s'], 's')} s, "
                f"tokens/forward {_fmt(m['tokens_per_forward'])}"
            )
        out += ["", f"**Recommendation:** {arms['recommendation']}"]
    out += ["", "## Configuration", ""]
    notes = config_notes(config)
    out += [f"- {n}" for n in notes]
    out += ["", "```json", json.dumps(config, indent=2, default=str), "```", ""]
    return "\n".join(out)


def _ci(ci: Any, kind: str) -> str:
    return f"[{_fmt(ci[0], kind)}, {_fmt(ci[1], kind)}]" if ci else "-"


def config_notes(config: dict[str, Any]) -> list[str]:
    notes = [f"budgets: {config.get('budgets')}"]
    if config.get("task_queue"):
        notes.append(
            f"variant {config.get('variant') or 'base'}: episodes ran on a dedicated worker "
            f"(task queue {config['task_queue']}) with replicas of its own, serving diffusion "
            f"checkpoint {config.get('diffusion_checkpoint') or 'diffusion (default)'}, "
            f"tau={config.get('tau') if config.get('tau') is not None else 'default'}, "
            f"P-ReAct {_onoff(config.get('action_first'))}."
        )
    else:
        notes.append(
            "serving settings (checkpoints, tau, P-ReAct) as the stack's worker was started "
            "(DLLMFLOW_* variables)."
        )
    return notes


def _onoff(value: Any) -> str:
    return "default" if value is None else ("on" if value else "off")


def build_metrics(
    records: Sequence[dict[str, Any]], price: float, accelerator: str = "gpu"
) -> dict[str, Any]:
    return {
        "accelerator": accelerator,
        "gpu_price_per_hour": price,
        "policies": by_policy(records, price),
        "ab_shadow": arm_report(records),
    }


def write_outputs(
    records: Sequence[dict[str, Any]],
    out: Path,
    *,
    config: dict[str, Any],
    run_id: str,
    price: float,
    command: str | None = None,
    accelerator: str = "gpu",
) -> dict[str, Any]:
    from dllmflow.evaluation.plots import write_plots

    metrics = build_metrics(records, price, accelerator)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    write_csv(records, out / "episodes.csv")
    write_plots(records, out)
    (out / "report.md").write_text(render_report(metrics, config, command, run_id))
    return metrics
