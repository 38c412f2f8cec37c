"""Per-activity dispatch: activities start eagerly, histories replay deterministically, an
activity invoked again for a committed step returns its checkpoint without redoing the work, and
the activities' single-statement Postgres path rides out a dropped connection."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, text
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.db import _autocommit_engine, get_engine, run_autocommit
from dllmflow.store.streams import executions
from dllmflow.workers.episode_worker import workflow_runner
from dllmflow.workflows.activities import EpisodeActivities
from dllmflow.workflows.episode import EpisodeWorkflow
from dllmflow.workflows.service import EpisodeService
from dllmflow.workflows.types import ToolRequest, TurnRequest

pytestmark = pytest.mark.integration


async def _run(settings: Settings, record: dict):
    svc = await EpisodeService.connect(settings)
    episode = await svc.submit(record["question"], policy="oracle", question_record=record)
    result = await svc.wait(episode.id, timeout=120)
    handle = svc.client.get_workflow_handle(episode.workflow_id)
    return episode.id, result, await handle.fetch_history()


def test_each_activity_starts_once_after_its_schedule_and_history_replays(
    stack: Settings, world_questions
) -> None:
    # How fast activities are dispatched (eagerly: microseconds) is measured by
    # bench/dispatch.py; here: one scheduled and one started event per model turn and tool call,
    # each start after its own schedule, first attempt, none failed.
    _, result, history = asyncio.run(_run(stack, world_questions[3]))
    assert result.status == "completed"

    scheduled, started = {}, []
    for event in history.events:
        kind = event.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes
        elif kind == "activity_task_started_event_attributes":
            attrs = event.activity_task_started_event_attributes
            assert attrs.scheduled_event_id in scheduled and attrs.attempt == 1
            assert event.event_id > attrs.scheduled_event_id
            started.append(attrs.scheduled_event_id)
        assert kind != "activity_task_failed_event_attributes"
    assert sorted(started) == sorted(scheduled)  # every scheduled activity started, once
    types = [a.activity_type.name for a in scheduled.values()]
    assert types.count("model_turn") == result.turns and result.turns >= 4
    assert types.count("tool_call") == result.tool_calls
    assert types.count("start_episode") == types.count("finish_episode") == 1

    # The worker's runner replays the recorded history without nondeterminism errors.
    replayer = Replayer(workflows=[EpisodeWorkflow], workflow_runner=workflow_runner())
    asyncio.run(replayer.replay_workflow(history))


def test_activity_rerun_for_a_committed_step_returns_the_checkpoint(
    stack: Settings, world_questions
) -> None:
    episode_id, result, _ = asyncio.run(_run(stack, world_questions[4]))
    assert result.status == "completed" and result.tool_calls >= 1
    store = CheckpointStore(stack)
    turn = next(cp for cp in store.for_episode(episode_id) if cp.kind == "seek")
    tool = next(cp for cp in store.at_step(episode_id, turn.step) if cp.kind == "tool")
    before = {cp.idempotency_key: executions(stack, cp.idempotency_key) for cp in (turn, tool)}
    assert set(before.values()) == {1}

    activities = EpisodeActivities(stack)
    env = ActivityEnvironment()
    again = env.run(
        activities.model_turn,
        TurnRequest(episode_id, turn.step, turn.role or "seeker", "oracle", 256),
    )
    assert again.cached and again.checkpoint_id == turn.id
    tool_again = env.run(activities.tool_call, ToolRequest(episode_id, turn.step))
    assert tool_again.cached and tool_again.checkpoint_id == tool.id
    after = {key: executions(stack, key) for key in before}
    assert after == before, "a committed step ran again"


def test_hot_path_statements_survive_a_stale_pooled_connection(stack: Settings) -> None:
    """The autocommit pool skips pre-ping; a connection Postgres dropped is retried once."""

    def backend_pid(conn: Connection) -> int:
        return conn.execute(text("select pg_backend_pid()")).scalar_one()

    _autocommit_engine(stack.effective_database_url).dispose()  # one pooled connection from here
    pid = run_autocommit(stack, backend_pid)
    with get_engine(stack).begin() as conn:  # as if Postgres restarted under the pool
        assert conn.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    assert CheckpointStore(stack).get("no/such/key") is None
    assert run_autocommit(stack, backend_pid) != pid
