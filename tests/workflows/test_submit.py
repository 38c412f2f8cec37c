"""Submit is atomic and resumable: a bad file is refused by line before anything runs, a down
Temporal leaves no `queued` row without a workflow (each question gets one line, the summary
names what was and was not submitted, the exit status is non-zero), and what was not started
starts later, by `episodes retry` or by reconciliation."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.commands import episodes as episode_commands
from dllmflow.config import Settings
from dllmflow.stack import manager
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import EpisodeStatus
from dllmflow.workflows.service import NOT_STARTED, EpisodeService
from dllmflow.workflows.types import Budgets


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.timeout(60)
def test_a_wrongly_typed_record_is_refused_by_line_without_hanging(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "good", "question": "Which city?"},
            {"id": "bad", "question": 123},
            {"id": ["x"], "question": "Who?"},
            ["not", "an", "object"],
        ],
    )
    result = CliRunner().invoke(app, ["submit", str(path), "--policy", "ar"])
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert 'line 2: "question" must be a string (got int)' in output
    assert 'line 3: "id" must be a string or an integer (got list)' in output
    assert "line 4: needs a non-empty" in output
    assert "Traceback" not in result.output


def test_oracle_records_without_answers_are_refused_by_line(tmp_path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "Which city?"}])
    result = CliRunner().invoke(app, ["submit", str(path), "--policy", "oracle"])
    assert result.exit_code == 1
    assert 'line 1: the oracle policy needs the question\'s "answer"' in " ".join(
        result.output.split()
    )


def kill_temporal(stack: Settings) -> None:
    record = manager.StackState(stack.state_dir).load()["temporal"]
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while record.alive() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.fault
@pytest.mark.slow
def test_submit_against_a_down_temporal_leaves_no_orphan_and_retry_starts_it(
    stack: Settings, world_questions, tmp_path, monkeypatch
) -> None:
    records = world_questions[:3]
    path = write_jsonl(tmp_path / "q.jsonl", records)
    # Connected while Temporal is up; Temporal then dies before the first start_workflow.
    svc = asyncio.run(EpisodeService.connect(stack))

    async def connected(_settings):
        return svc

    monkeypatch.setattr(episode_commands, "service", connected)
    kill_temporal(stack)
    try:
        started = time.monotonic()
        # Temporal stays down past the wait for an outage: the starts are given up.
        result = CliRunner().invoke(
            app, ["submit", str(path), "--policy", "oracle", "--outage-wait", "3"]
        )
        took = time.monotonic() - started
    finally:
        manager.up(stack)
    print(result.output, f"took {took:.1f}s")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if "not submitted" in line]
    assert len([line for line in lines if line.startswith("[")]) == len(records), result.output
    assert "submitted 0, not submitted 3" in result.output
    assert "Temporal unreachable" in result.output  # it said it was waiting
    assert took < 120, took

    repo = EpisodeRepository(stack)
    ids = [re.search(r"\bep-[0-9a-f]{16}\b", line).group() for line in lines if line[0] == "["]
    rows = [repo.get(episode_id) for episode_id in ids]
    # Each row says why it has no workflow; none is left `queued` with nothing behind it.
    assert [e.status for e in rows] == [EpisodeStatus.FAILED] * len(records)
    assert all(e.error.startswith(NOT_STARTED) for e in rows), [e.error for e in rows]

    retried = CliRunner().invoke(app, ["episodes", "retry", rows[0].id])
    assert retried.exit_code == 0, retried.output
    assert repo.get(rows[0].id).status == EpisodeStatus.COMPLETED


def _queued_row(repo: EpisodeRepository, record: dict, **fields):
    """An oracle episode's row written as submit writes it, with no workflow started."""
    return repo.create(
        question=record["question"],
        policy="oracle",
        budgets=asdict(Budgets()),
        question_record=record,
        **fields,
    )


@pytest.mark.integration
def test_a_queued_row_without_a_workflow_is_started_by_reconcile(
    stack: Settings, world_questions
) -> None:
    """A submit that died between writing the row and starting the workflow."""
    repo = EpisodeRepository(stack)
    orphan = _queued_row(repo, world_questions[3])

    async def reconcile_and_wait():
        svc = await EpisodeService.connect(stack)
        assert await svc.workflow_status(orphan) is None
        started = await svc.reconcile()
        return started, await svc.wait(orphan.id, timeout=120)

    started, result = asyncio.run(reconcile_and_wait())
    assert orphan.id in started
    assert result.status == EpisodeStatus.COMPLETED
    assert repo.get(orphan.id).status == EpisodeStatus.COMPLETED


@pytest.mark.integration
def test_reconcile_starts_a_queued_row_on_the_queue_it_was_submitted_to(
    stack: Settings, world_questions
) -> None:
    """`dllmflow up` reconciles with the stack's own settings; an episode submitted to another
    queue (a fault campaign's or an eval variant's workers, with their own corpus) must not be
    moved to the stack's worker, which would search a corpus that lacks its documents."""
    queue = f"{stack.task_queue}-elsewhere"
    repo = EpisodeRepository(stack)
    orphan = _queued_row(repo, world_questions[4], task_queue=queue)
    assert repo.get(orphan.id).task_queue == queue

    async def reconcile_and_describe() -> tuple[list[str], str]:
        svc = await EpisodeService.connect(stack)  # the stack's queue, not the row's
        assert svc.settings.task_queue != queue
        started = await svc.reconcile()
        handle = svc.handle(orphan)
        described = await handle.describe()
        await handle.terminate("test: no worker polls this queue")
        return started, described.task_queue

    started, task_queue = asyncio.run(reconcile_and_describe())
    repo.update(orphan.id, status=EpisodeStatus.CANCELLED)  # nothing is left queued
    assert orphan.id in started
    assert task_queue == queue
