"""Sweep variants (parsing, errors, what reaches the worker) and the sweep table (known values)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dllmflow.commands.eval import eval_command, sweep_command
from dllmflow.config import load_settings
from dllmflow.evaluation.sweep import render_table, sweep_rows, write_sweep
from dllmflow.evaluation.variants import (
    ABLATIONS,
    CHECKPOINT_ROOT,
    DEFAULT_VARIANTS,
    Variant,
    parse_variant,
    parse_variants,
    variant_from_flags,
    variant_queue,
)
from dllmflow.workers.serving.settings import ServingSettings, replica_namespace
from dllmflow.workflows.types import Budgets

app = typer.Typer()
app.command("eval")(eval_command)
app.command("sweep")(sweep_command)


def test_default_variants_parse_with_distinct_slugs() -> None:
    variants = parse_variants(",".join(DEFAULT_VARIANTS))
    assert [v.name for v in variants] == list(DEFAULT_VARIANTS)
    assert len({v.slug for v in variants}) == len(variants)
    base, ctx, span, tau_lo, tau_hi, steps, preact = variants
    assert base == Variant() and not base.serving_overrides()
    assert ctx.diffusion_checkpoint == str(CHECKPOINT_ROOT / ABLATIONS["context-clean"])
    assert span.diffusion_checkpoint.endswith("diffusion-no-span-mask")
    assert (tau_lo.tau, tau_hi.tau) == (0.7, 0.95)
    assert steps.max_denoise_steps == 8 and not steps.needs_worker
    assert preact.action_first is True and preact.slug == "p-react-on"


def test_variant_combinations_and_normalised_names() -> None:
    v = parse_variant(" tau=0.70 + P-React ")
    assert v.name == "tau=0.7+p-react=on" and v.slug == "tau-0.7_p-react-on"
    assert (v.tau, v.action_first) == (0.7, True)
    assert parse_variant("p-react=off").action_first is False
    assert parse_variant("max-steps=12+ablate=span-mask").name == "max-steps=12+ablate=span-mask"
    assert variant_from_flags(None, None, None) == Variant()
    assert (
        variant_from_flags("span-mask", 0.8, False).name == "ablate=span-mask+tau=0.8+p-react=off"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("temp=0.7", "variant 'temp=0.7': unknown setting 'temp'"),
        ("tau=1.5", "variant 'tau=1.5': tau must be a number in (0, 1] (got '1.5')"),
        ("tau=abc", "tau must be a number in (0, 1] (got 'abc')"),
        ("tau=0", "tau must be a number in (0, 1]"),
        ("tau", "variant 'tau': tau needs a value, e.g. tau=0.7"),
        ("max-steps=0", "max-steps must be a positive integer (got '0')"),
        ("max-steps=2.5", "max-steps must be a positive integer (got '2.5')"),
        ("ablate=dropout", "unknown ablation 'dropout'; choose one of context-clean, span-mask"),
        ("p-react=maybe", "p-react must be on or off (got 'maybe')"),
        ("tau=0.7+tau=0.8", "variant 'tau=0.7+tau=0.8': tau is given more than once"),
        ("base+tau=0.7", "'base' cannot be combined"),
        ("tau=0.7+", "empty setting"),
    ],
)
def test_bad_variant_specs_name_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_variant(spec)
    assert message in str(err.value)


def test_bad_variant_lists() -> None:
    with pytest.raises(ValueError, match="--variants is empty"):
        parse_variants(" , ")
    with pytest.raises(ValueError, match=r"'tau=0\.70' is listed more than once"):
        parse_variants("base,tau=0.7,tau=0.70")


def test_overrides_reach_the_worker_environment_and_serving_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v = parse_variant("ablate=context-clean+tau=0.95+p-react=on+max-steps=9")
    env = v.worker_env("eval-x-1234")
    assert env == {
        "DLLMFLOW_DIFFUSION_CHECKPOINT": str(CHECKPOINT_ROOT / "diffusion-no-context-clean"),
        "DLLMFLOW_TAU": "0.95",
        "DLLMFLOW_ACTION_FIRST": "true",
        "DLLMFLOW_REPLICA_GROUP": "eval-x-1234",
    }
    # What the worker process's model client reads when it starts (env -> ServingSettings).
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    serving = ServingSettings()
    assert serving.diffusion_checkpoint.endswith("diffusion-no-context-clean")
    assert (serving.tau, serving.action_first) == (0.95, True)
    assert replica_namespace() == "dllmflow-eval-x-1234"  # replicas apart from the default ones
    assert v.describe() == {
        "variant": "ablate=context-clean+tau=0.95+p-react=on+max-steps=9",
        "ablate": "context-clean",
        "diffusion_checkpoint": serving.diffusion_checkpoint,
        "tau": 0.95,
        "p_react": True,
        "max_denoise_steps": 9,
        "tool_latency": None,
    }
    assert v.budgets(Budgets()).max_denoise_steps == 9
    # The sweep's --tool-latency reaches every variant's worker, base included.
    from dataclasses import replace

    base = replace(parse_variant("base"), tool_latency="realistic")
    assert base.needs_worker and base.worker_env("g")["DLLMFLOW_TOOL_LATENCY"] == "realistic"
    assert "DLLMFLOW_TOOL_LATENCY" not in parse_variant("tau=0.7").worker_env("g")
    assert parse_variant("p-react=off").worker_env("g")["DLLMFLOW_ACTION_FIRST"] == "false"
    monkeypatch.delenv("DLLMFLOW_REPLICA_GROUP")
    assert replica_namespace() == "dllmflow"


def test_variant_task_queue_is_deterministic_and_distinct() -> None:
    s = load_settings()
    a, b = parse_variant("tau=0.7"), parse_variant("ablate=span-mask")
    assert variant_queue(s, a) == f"{s.task_queue}-eval-tau-0.7"
    assert variant_queue(s, a) == variant_queue(s, parse_variant("tau=0.70"))
    assert variant_queue(s, a) != variant_queue(s, b) != s.task_queue


def metrics(acc: float, dead: int = 0, **kw: float) -> dict:
    m = {
        "episodes": 10,
        "correct": int(acc * 10),
        "accuracy": acc,
        "invalid_action_rate": 0.02,
        "turns_per_episode": 6.5,
        "tool_calls_per_episode": 4.5,
        "latency_p50_s": 3.0,
        "latency_p95_s": 7.25,
        "tokens_per_forward": 12.0,
        "dead_lettered": dead,
    }
    return {"policies": {"diffusion": {**m, **kw}}}


def test_sweep_table_on_known_metrics(tmp_path: Path) -> None:
    results = [
        (Variant().describe(), metrics(0.8)),
        (parse_variant("ablate=span-mask").describe(), metrics(0.5, dead=2, latency_p50_s=4.5)),
        (parse_variant("max-steps=6").describe(), metrics(0.3, dead=7, tokens_per_forward=None)),
    ]
    rows = sweep_rows(results)
    assert [r["variant"] for r in rows] == ["base", "ablate=span-mask", "max-steps=6"]
    assert [r["checkpoint"] for r in rows] == ["diffusion", "diffusion-no-span-mask", "diffusion"]
    assert [r["accuracy_delta"] for r in rows] == pytest.approx([0.0, -0.3, -0.5])
    assert [r["dead_lettered"] for r in rows] == [0, 2, 7]
    table = render_table(rows)
    assert table[0].startswith("| variant | policy | diffusion checkpoint | tau | P-ReAct |")
    assert table[2] == (
        "| base | diffusion | diffusion | 0.90 | off | - | 10 | 80.0% | +0.0 pp | 2.0% | 6.50 "
        "| 4.50 | 3.00 | 7.25 | 12.00 | - | - | - | - | - | 0 |"
    )
    assert (
        "| max-steps=6 | diffusion | diffusion | 0.90 | off | 6 | 10 | 30.0% | -50.0 pp |"
        in (table[4])
    )
    assert table[4].endswith("| - | 7 |")  # no tokens/forward: shown as "-"

    config = {"name": "t", "questions": "q.jsonl", "policies": ["diffusion"], "budgets": {}}
    paths = write_sweep(tmp_path, rows, config, "dllmflow eval sweep --questions q.jsonl")
    assert "dllmflow eval sweep --questions q.jsonl" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["rows"][1]["latency_p50_s"] == 4.5
    with paths["csv"].open() as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [r["variant"] for r in csv_rows] == ["base", "ablate=span-mask", "max-steps=6"]
    assert csv_rows[2]["dead_lettered"] == "7"


def test_no_base_variant_means_no_delta() -> None:
    rows = sweep_rows([(parse_variant("tau=0.7").describe(), metrics(0.6))])
    assert rows[0]["accuracy_delta"] is None


def test_cli_rejects_bad_variants_and_flags_before_running(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "q1", "question": "Who?", "answer": "X"}\n')
    base = ["--questions", str(questions), "--out", str(tmp_path / "o")]
    bad = CliRunner().invoke(app, ["sweep", *base, "--variants", "base,tau=2"])
    assert bad.exit_code == 1 and "variant 'tau=2': tau must be a number in (0, 1]" in bad.output
    bad = CliRunner().invoke(app, ["sweep", *base, "--policies", "diffusion,gpt"])
    assert bad.exit_code == 1 and "unknown policy 'gpt'" in bad.output
    bad = CliRunner().invoke(app, ["eval", *base, "--ablate", "dropout"])
    assert bad.exit_code == 1 and "unknown --ablate 'dropout'" in bad.output
    bad = CliRunner().invoke(app, ["eval", *base, "--tau", "0"])
    assert bad.exit_code == 1 and "--tau must be in (0, 1]" in bad.output
    missing = CliRunner().invoke(app, ["eval", "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "missing option --questions" in missing.output
    assert not (tmp_path / "o").exists()


def test_a_real_pair_checkpoint_keeps_its_pair_name() -> None:
    from dllmflow.evaluation.variants import checkpoint_label

    assert checkpoint_label("smollm2-135m/diffusion") == "smollm2-135m/diffusion"
    assert checkpoint_label("diffusion") == "diffusion"
    assert checkpoint_label("/data/runs/d9") == "d9"
