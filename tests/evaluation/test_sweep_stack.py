"""A tiny `dllmflow eval sweep` on the embedded stack: each variant's own worker really serves its
checkpoint, the table is written, and a rerun resumes without new episodes or workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from dllmflow.commands.eval import sweep_command
from dllmflow.config import Settings
from dllmflow.evaluation import runner
from dllmflow.store.db import transaction
from dllmflow.store.models import Episode, EvalRun
from dllmflow.world.generator import generate_world, write_world

pytestmark = pytest.mark.integration

# The same world as tests/workflows, so loading it into the default corpus changes nothing there.
WORLD = {"n_people": 40, "n_orgs": 15, "n_cities": 12, "n_countries": 4, "n_works": 25}

app = typer.Typer()
app.command("sweep")(sweep_command)
app.command("noop")(lambda: None)


def test_sweep_runs_each_variant_on_its_own_worker(stack: Settings, tmp_path: Path) -> None:
    corpus, questions = write_world(generate_world(4242, n_questions=4, **WORLD), tmp_path)
    out = tmp_path / "sweep"
    args = ["sweep", "--questions", str(questions), "--corpus", str(corpus), "--out", str(out)]
    args += ["--limit", "2", "--variants", "base,ablate=context-clean+tau=0.95", "--max-turns", "6"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    table = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["variant"], r["episodes"]) for r in table] == [
        ("base", 2),
        ("ablate=context-clean+tau=0.95", 2),
    ]
    assert (table[1]["checkpoint"], table[1]["tau"]) == ("diffusion-no-context-clean", 0.95)
    row = "| ablate=context-clean+tau=0.95 | diffusion | diffusion-no-context-clean | 0.95 |"
    assert row in (out / "sweep.md").read_text()

    # The model that decoded each variant's turns is the variant's checkpoint.
    expected = {
        "base": "diffusion:diffusion",
        "ablate-context-clean_tau-0.95": "diffusion:diffusion-no-context-clean",
    }
    dead = 0
    for slug, model in expected.items():
        run_id = json.loads((out / slug / "run.json").read_text())["eval_run_id"]
        records = runner.run_records(stack, run_id)
        models = {t["model"] for r in records for t in r["turn_stats"]}
        assert models == {model}, (slug, models)
        for r in records:  # dead-lettered episodes (this ablation's usual end) record counters
            assert r["turns"] == len(r["turn_stats"]) > 0
            assert r["invalid_actions"] == sum(not t["valid"] for t in r["turn_stats"])
            assert r["counters_from"] == "workflow"
            dead += r["status"] == "dead_lettered"
        with transaction(stack) as session:
            config = session.get(EvalRun, run_id).config
        assert config["task_queue"] == f"{stack.task_queue}-eval-{slug}"
        assert (out / slug / "report.md").stat().st_size > 0

    assert sum(row["dead_lettered"] for row in table) == dead

    # Rerun: every variant is finished, so no worker starts and no episode is submitted.
    with transaction(stack) as session:
        before = session.scalar(select(func.count()).select_from(Episode))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "worker on task queue" not in again.output
    with transaction(stack) as session:
        assert session.scalar(select(func.count()).select_from(Episode)) == before
