"""`dllmflow eval` end to end on the embedded stack (oracle), and resuming without reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from dllmflow.commands.eval import eval_command
from dllmflow.config import Settings
from dllmflow.evaluation import runner
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.db import transaction
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import Episode, EvalRun
from dllmflow.world.generator import generate_world, write_world

pytestmark = pytest.mark.integration

# The same world as tests/workflows, so loading it into the default corpus changes nothing there.
WORLD = {"n_people": 40, "n_orgs": 15, "n_cities": 12, "n_countries": 4, "n_works": 25}

app = typer.Typer()
app.command("eval")(eval_command)
app.command("noop")(lambda: None)  # keeps "eval" a subcommand, as in the real CLI


def episodes_of(settings: Settings, run_id: str) -> int:
    with transaction(settings) as session:
        return session.scalar(
            select(func.count()).select_from(Episode).where(Episode.eval_run_id == run_id)
        )


def test_eval_writes_outputs_and_resumes_without_rerunning(stack: Settings, tmp_path: Path):
    corpus, questions = write_world(generate_world(4242, n_questions=12, **WORLD), tmp_path)
    out = tmp_path / "eval"
    base = ["eval", "--questions", str(questions), "--policies", "oracle", "--out", str(out)]
    base += ["--concurrency", "2"]

    # An interrupted eval: only two of the three questions got done.
    first = CliRunner().invoke(app, [*base, "--corpus", str(corpus), "--limit", "2"])
    assert first.exit_code == 0, first.output
    run_id = json.loads((out / "run.json").read_text())["eval_run_id"]
    assert episodes_of(stack, run_id) == 2

    second = CliRunner().invoke(app, [*base, "--limit", "3"])
    assert second.exit_code == 0, second.output
    assert episodes_of(stack, run_id) == 3
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 3

    # Lose the manifest's last line (killed before it was written): still no new episode.
    lines = (out / "episodes.jsonl").read_text().splitlines()
    (out / "episodes.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    third = CliRunner().invoke(app, [*base, "--limit", "3"])
    assert third.exit_code == 0, third.output
    assert episodes_of(stack, run_id) == 3

    metrics = json.loads((out / "metrics.json").read_text())["policies"]["oracle"]
    assert metrics["episodes"] == 3 and metrics["accuracy"] == 1.0
    assert metrics["first_useful_p50_s"] <= metrics["latency_p50_s"]
    for name in ("episodes.csv", "report.md", "latency_cdf.png", "waterfall.png"):
        assert (out / name).stat().st_size > 0, name
    with transaction(stack) as session:
        row = session.get(EvalRun, run_id)
        assert row.status == "completed"
        assert row.metrics["policies"]["oracle"]["episodes"] == 3


def test_eval_rejects_bad_input_clearly(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "q1", "question": "Who?", "answer": "X"}\n')
    base = ["eval", "--questions", str(questions), "--out", str(tmp_path / "o")]
    bad = CliRunner().invoke(app, [*base, "--policies", "oracle,gpt"])
    assert bad.exit_code == 1 and "unknown policy 'gpt'" in bad.output
    bad = CliRunner().invoke(app, [*base, "--policies", "diffusion", "--ablate", "span"])
    assert bad.exit_code == 1 and "unknown --ablate 'span'" in bad.output


def test_counters_of_an_episode_without_recorded_metrics_come_from_its_checkpoints(
    stack: Settings,
):
    """Rows dead-lettered before the workflow recorded counters: counted from checkpoints."""
    episode = EpisodeRepository(stack).create(
        question="Which field did the founder of the oldest lab study?", policy="diffusion",
        budgets={},
    )  # fmt: skip
    EpisodeRepository(stack).update(episode.id, status="dead_lettered", error="stuck")
    store = CheckpointStore(stack)
    turns = [("plan", "planner", True), ("seek", "seeker", True), ("seek", "seeker", False)]
    for step, (kind, role, valid) in enumerate(turns):
        payload = {"text": "t", "valid": valid, "action": {"tool": "search"} if valid else None}
        store.save(
            episode_id=episode.id, step=step, kind=kind, key=f"{episode.id}/{step}/{kind}",
            payload=payload, role=role, backend="diffusion", model="diffusion", timings={},
        )  # fmt: skip
    store.save(
        episode_id=episode.id, step=1, kind="tool", key=f"{episode.id}/1/tool",
        payload={"ok": True, "result": {}}, role="seeker", backend="tool", model="search",
        timings={},
    )  # fmt: skip

    record = runner.episode_record(stack, episode.id)
    assert record["counters_from"] == "checkpoints"
    assert (record["turns"], record["tool_calls"], record["invalid_actions"]) == (3, 1, 1)
