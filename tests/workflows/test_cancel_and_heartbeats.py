"""A cancelled episode ends `cancelled` (Temporal: Canceled, no DLQ entry), and a tool call
longer than the heartbeat timeout runs once: activities heartbeat while they wait."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings, load_settings
from dllmflow.stack.process import wait_until
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import EpisodeStatus
from dllmflow.store.streams import DeadLetterQueue, executions
from dllmflow.workers.episode_worker import spawn_worker
from dllmflow.workflows.activities import keep_alive
from dllmflow.workflows.episode import HEARTBEAT_TIMEOUT
from dllmflow.workflows.service import EpisodeService
from dllmflow.workflows.types import Budgets

SLOW_TOOL_S = 20.0  # longer than the heartbeat timeout: only heartbeats keep the attempt


def test_keep_alive_heartbeats_while_the_work_blocks() -> None:
    beats: list[tuple] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    def slow() -> None:
        with keep_alive("tool search", interval=0.05):
            time.sleep(0.5)  # blocks like a tool call: no progress callbacks

    env.run(slow)
    assert len(beats) >= 5 and beats[0] == ("tool search",)


@pytest.fixture(scope="module")
def slow_tools(stack: Settings) -> Iterator[Settings]:
    settings = load_settings(task_queue="slow-tools-test")
    latency = {"DLLMFLOW_TOOL_LATENCY": f"search=fixed:{SLOW_TOOL_S},fetch=fixed:{SLOW_TOOL_S}"}
    worker = spawn_worker(settings, latency)
    try:
        yield settings
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.slow
def test_a_tool_call_longer_than_the_heartbeat_timeout_runs_once(
    slow_tools: Settings, world_questions
) -> None:
    assert HEARTBEAT_TIMEOUT.total_seconds() < SLOW_TOOL_S
    record = world_questions[0]

    async def run() -> tuple[str, list[str]]:
        svc = await EpisodeService.connect(slow_tools)
        episode = await svc.submit(
            record["question"],
            policy="oracle",
            budgets=Budgets(max_tool_calls=1),
            question_record=record,
        )
        result = await svc.wait(episode.id, timeout=180)
        assert result.status == EpisodeStatus.COMPLETED, result
        return episode.id, [event["type"] for event in await svc.history(episode.id)]

    episode_id, history = asyncio.run(run())
    tools = [cp for cp in CheckpointStore(slow_tools).for_episode(episode_id) if cp.kind == "tool"]
    assert len(tools) == 1
    assert tools[0].payload["latency_s"] >= SLOW_TOOL_S
    assert tools[0].payload["execution"] == 1
    assert executions(slow_tools, tools[0].idempotency_key) == 1  # counted before it ran
    assert "activity_task_timed_out" not in history and "activity_task_failed" not in history


@pytest.mark.integration
@pytest.mark.slow
def test_cancel_mid_tool_call_ends_cancelled_without_a_dead_letter(
    slow_tools: Settings, world_questions
) -> None:
    record = world_questions[1]
    store = CheckpointStore(slow_tools)

    async def submit() -> str:
        svc = await EpisodeService.connect(slow_tools)
        episode = await svc.submit(record["question"], policy="oracle", question_record=record)
        return episode.id

    episode_id = asyncio.run(submit())
    # The planner turn committed: the first (slow) search is in flight.
    assert wait_until(lambda: store.for_episode(episode_id), 60, 0.1)
    time.sleep(1.0)
    cancelled = CliRunner().invoke(app, ["episodes", "cancel", episode_id])
    assert cancelled.exit_code == 0, cancelled.output

    async def outcome() -> WorkflowExecutionStatus:
        svc = await EpisodeService.connect(slow_tools)
        episode = svc.episodes.get(episode_id)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(svc.handle(episode).result(), 60)
        return (await svc.handle(episode).describe()).status

    assert asyncio.run(outcome()) == WorkflowExecutionStatus.CANCELED
    episode = EpisodeRepository(slow_tools).get(episode_id)
    assert episode.status == EpisodeStatus.CANCELLED, (episode.status, episode.error)
    assert DeadLetterQueue(slow_tools).for_episode(episode_id) == []
    assert not [cp for cp in store.for_episode(episode_id) if cp.kind == "tool"]

    again = CliRunner().invoke(app, ["episodes", "cancel", episode_id])
    assert again.exit_code == 1 and "already finished (cancelled)" in again.output
