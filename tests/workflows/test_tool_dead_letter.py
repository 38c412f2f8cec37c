"""A tool call that keeps failing is retried until the episode's retry budget is spent, then the
episode is dead-lettered at that tool call; `dlq retry` runs it to completion once the corpus
answers again. The failure is real: another session holds a lock on the documents table, so
every search ends at the (lowered) corpus statement timeout."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings, load_settings
from dllmflow.store.checkpoints import CheckpointStore, content_hash, idempotency_key
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetterQueue, executions
from dllmflow.workers.episode_worker import spawn_worker
from dllmflow.workflows.service import EpisodeService
from dllmflow.world.generator import answer_matches
from tests.tools.conftest import documents_locked

pytestmark = pytest.mark.integration

RETRY_BUDGET_S = 4.0


@pytest.fixture(scope="module")
def impatient(stack: Settings) -> Iterator[Settings]:
    """A worker whose corpus queries give up after 300 ms; episodes retried for 4 s."""
    settings = load_settings(
        task_queue=f"tool-retries-{uuid.uuid4().hex[:6]}", activity_retry_budget_s=RETRY_BUDGET_S
    )
    worker = spawn_worker(settings, {"DLLMFLOW_CORPUS_STATEMENT_TIMEOUT_MS": "300"})
    try:
        yield settings
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def test_a_tool_call_out_of_retries_is_dead_lettered_then_retried(
    impatient: Settings, world_questions, monkeypatch
) -> None:
    record = world_questions[-1]

    async def submit() -> tuple[str, object]:
        svc = await EpisodeService.connect(impatient)
        episode = await svc.submit(record["question"], policy="oracle", question_record=record)
        return episode.id, await svc.wait(episode.id, timeout=90)

    with documents_locked(impatient, idle_s=60):
        episode_id, result = asyncio.run(submit())
    assert result.status == "dead_lettered", result
    episode = EpisodeRepository(impatient).get(episode_id)
    assert episode.status == "dead_lettered"
    assert "statement timeout" in episode.error, episode.error

    store = CheckpointStore(impatient)
    assert [(cp.step, cp.kind) for cp in store.for_episode(episode_id)] == [(0, "plan")]
    plan = store.at(episode_id, 0, "plan")
    tool_key = idempotency_key(episode_id, 0, "tool", content_hash(plan.payload["action"]))
    assert executions(impatient, tool_key) >= 2  # each attempt is counted before it runs
    (letter,) = DeadLetterQueue(impatient).for_episode(episode_id)
    assert (letter.step, letter.kind) == (0, "tool")
    assert letter.last_checkpoint_id == plan.id and letter.error == episode.error
    assert episode.metrics["tool_calls"] == 0 and episode.metrics["turns"] == 1

    # The lock is gone: the dead letter's retry continues from the planner turn.
    monkeypatch.setenv("DLLMFLOW_TASK_QUEUE", impatient.task_queue)
    retried = CliRunner().invoke(app, ["dlq", "retry", letter.id])
    assert retried.exit_code == 0, retried.output
    assert f"episode {episode_id}: completed" in retried.output
    episode = EpisodeRepository(impatient).get(episode_id)
    assert episode.status == "completed", episode.error
    assert answer_matches(episode.answer, record)
    assert DeadLetterQueue(impatient).for_episode(episode_id) == []
    assert store.at(episode_id, 0, "plan").id == plan.id  # reused
    tool = store.at(episode_id, 0, "tool")
    assert tool.payload["ok"] and tool.idempotency_key == tool_key
