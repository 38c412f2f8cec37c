"""`dllmflow up` leaves a supervisor: a worker killed with SIGKILL is reported dead at once (by
its own liveness, not Temporal's poller list) and restarted with no manual `up`, and the episode
submitted meanwhile completes."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from dllmflow.config import Settings
from dllmflow.stack import manager, supervisor
from dllmflow.stack.health import check_worker
from dllmflow.stack.process import wait_until
from dllmflow.store.models import EpisodeStatus
from dllmflow.workflows.service import EpisodeService

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]


def test_a_killed_worker_is_seen_dead_and_restarted_without_up(
    stack: Settings, world_questions
) -> None:
    rows = {h.name: h for h in manager.up(stack, supervise=True)}
    try:
        assert rows["supervisor"].healthy, rows["supervisor"]
        assert rows["worker"].healthy, rows["worker"]
        before = manager.StackState(stack.state_dir).load()["worker"]
        with manager.supervision_paused(stack):
            os.kill(before.pid, signal.SIGKILL)
            assert wait_until(lambda: not before.alive(), 10, 0.05)
            # Temporal still lists the dead worker's pollers; its own liveness is gone.
            dead = check_worker(stack)
            assert not dead.healthy, dead
            assert "no live worker" in dead.detail

            async def submit() -> str:
                svc = await EpisodeService.connect(stack)
                record = world_questions[2]
                episode = await svc.submit(
                    record["question"], policy="oracle", question_record=record
                )
                return episode.id

            episode_id = asyncio.run(submit())
            time.sleep(1.0)  # nothing restarts while supervision is paused
            assert not check_worker(stack).healthy

        def restarted() -> bool:
            record = manager.StackState(stack.state_dir).load()["worker"]
            return record.pid != before.pid and record.alive() and check_worker(stack).healthy

        assert wait_until(restarted, 120, 0.5), check_worker(stack)
        assert supervisor.read_state(stack)["worker"]["restarts"] >= 1

        async def wait() -> str:
            svc = await EpisodeService.connect(stack)
            return (await svc.wait(episode_id, timeout=120)).status

        assert asyncio.run(wait()) == EpisodeStatus.COMPLETED
    finally:
        manager.stop(stack, "supervisor")
        manager.up(stack)
