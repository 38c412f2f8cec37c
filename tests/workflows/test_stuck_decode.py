"""A worker that freezes mid-decode (SIGSTOP: the decode and its heartbeats stop together) loses
the turn at the heartbeat timeout, long before the turn's 10-minute start_to_close, and another
worker decodes it again; the episode completes with that one turn run twice."""

from __future__ import annotations

import asyncio
import uuid

import psutil
import pytest
from temporalio.api.enums.v1 import TimeoutType

from dllmflow.config import Settings, load_settings
from dllmflow.stack.process import wait_until
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetterQueue, executions
from dllmflow.workflows.episode import HEARTBEAT_TIMEOUT, TURN_TIMEOUT
from dllmflow.workflows.service import EpisodeService
from tests.workflows.scripted_worker import STALL_ENV, spawn_scripted_worker, stop_worker

pytestmark = pytest.mark.integration

# Well past the heartbeat timeout and its retry, far short of the turn's start_to_close.
WAIT_S = 120


def test_a_worker_frozen_mid_decode_loses_the_turn_at_the_heartbeat_timeout(
    stack: Settings,
) -> None:
    assert HEARTBEAT_TIMEOUT.total_seconds() * 4 < WAIT_S < TURN_TIMEOUT.total_seconds()
    settings = load_settings(task_queue=f"stuck-decode-{uuid.uuid4().hex[:6]}")
    frozen = spawn_scripted_worker(settings, {STALL_ENV: "1"})
    rescuer = None
    try:

        async def submit() -> str:
            svc = await EpisodeService.connect(settings)
            episode = await svc.submit(
                "Which worker decodes this turn?", policy="ar", question_record={}
            )
            return episode.id

        episode_id = asyncio.run(submit())
        # The only worker took the planner turn and froze inside its decode.
        assert wait_until(
            lambda: psutil.Process(frozen.pid).status() == psutil.STATUS_STOPPED, 60, 0.1
        ), "the scripted worker never reached its decode"
        rescuer = spawn_scripted_worker(settings)

        async def outcome():
            svc = await EpisodeService.connect(settings)
            result = await svc.wait(episode_id, timeout=WAIT_S)
            handle = svc.handle(svc.episodes.get(episode_id))
            starts = [
                e.activity_task_started_event_attributes
                async for e in handle.fetch_history_events()
                if e.HasField("activity_task_started_event_attributes")
            ]
            return result, starts

        result, starts = asyncio.run(outcome())
    finally:
        for worker in (frozen, rescuer):
            if worker is not None:
                stop_worker(worker)

    assert result.status == "completed", result
    episode = EpisodeRepository(settings).get(episode_id)
    assert episode.answer and DeadLetterQueue(settings).for_episode(episode_id) == []
    plan = CheckpointStore(settings).at(episode_id, 0, "plan")
    # Started twice (the frozen worker counted its execution before decoding), committed once.
    assert plan.payload["execution"] == 2 and executions(settings, plan.idempotency_key) == 2
    # model_turn is the second activity (after start_episode); its started event records the
    # attempt that completed and why the one before it failed.
    turn = starts[1]
    assert turn.attempt >= 2
    assert turn.last_failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
