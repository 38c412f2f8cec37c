"""Faults survived: while episodes run, kill Redis, Postgres, the Temporal dev server and the
worker in turn, each one while episodes are mid-way, and keep Redis and Postgres down for longer
than a retry schedule of a few tries would last. Every episode must complete with the right
answer, no committed checkpoint may be lost, and no work may run again once its checkpoint
committed (counted in Postgres, before the work runs, so reruns cannot hide)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from dllmflow.config import Settings, load_settings
from dllmflow.stack import manager
from dllmflow.stack.process import wait_until
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.executions import executions_for
from dllmflow.store.models import EpisodeStatus
from dllmflow.store.streams import DeadLetterQueue
from dllmflow.workers.episode_worker import spawn_worker
from dllmflow.workflows.service import EpisodeService
from dllmflow.world.generator import answer_matches

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

EPISODES = 3  # per fault
# (component, seconds it stays down). 40 s outlasts the old retry schedules (model turns ~25 s,
# tool calls ~35 s): only backoff that keeps trying rides it out.
FAULTS = (("redis", 40.0), ("postgres", 40.0), ("temporal", 5.0), ("worker", 2.0))
TOOL_LATENCY = "search=fixed:2,fetch=fixed:2"  # episodes last long enough for four faults


def snapshot(store: CheckpointStore, episode_ids: list[str]) -> dict[int, tuple[str, int]]:
    """checkpoint id -> (idempotency key, the execution count its run saw)."""
    return {
        cp.id: (cp.idempotency_key, cp.payload.get("execution", 0))
        for e in episode_ids
        for cp in store.for_episode(e)
    }


def test_episodes_survive_component_restarts(stack: Settings, world_questions) -> None:
    settings = load_settings(task_queue="fault-test")
    latency = {"DLLMFLOW_TOOL_LATENCY": TOOL_LATENCY}
    records = world_questions[:EPISODES]
    repo, store = EpisodeRepository(stack), CheckpointStore(stack)
    worker: subprocess.Popen = spawn_worker(settings, latency)

    async def submit(batch: list[dict[str, Any]]) -> list[str]:
        svc = await EpisodeService.connect(settings)
        return [
            (await svc.submit(r["question"], policy="oracle", question_record=r)).id for r in batch
        ]

    def running(ids: list[str]) -> list[str]:
        return [
            e for e in ids if repo.get(e).status == EpisodeStatus.RUNNING and store.for_episode(e)
        ]

    episode_ids: list[str] = []
    submitted: list[dict[str, Any]] = []
    committed: dict[int, tuple[str, int]] = {}
    landed: dict[str, list[str]] = {}  # fault -> episodes running, with checkpoints, when hit
    try:
        for fault, down_s in FAULTS:
            # A fresh batch per fault, so each fault hits episodes part-way through.
            batch = asyncio.run(submit(records))
            episode_ids += batch
            submitted += records
            assert wait_until(lambda b=batch: len(running(b)) == len(b), 90, 0.2), (
                f"the batch for the {fault} fault did not get going"
            )
            committed.update(snapshot(store, episode_ids))
            landed[fault] = running(batch)
            assert landed[fault], f"the {fault} fault would land after the batch finished"
            if fault == "worker":
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                time.sleep(down_s)
                worker = spawn_worker(settings, latency)
            else:
                # A real outage: no supervisor brings it back before down_s has passed.
                with manager.supervision_paused(stack):
                    record = manager.StackState(stack.state_dir).load()[fault]
                    os.kill(record.pid, signal.SIGKILL)
                    assert wait_until(lambda r=record: not r.alive(), 15, 0.1), fault
                    time.sleep(down_s)
                    manager.up(stack)

        async def finish() -> list[Any]:
            svc = await EpisodeService.connect(settings)
            results = [await svc.wait(e, timeout=900) for e in episode_ids]
            statuses = [(await svc.handle(repo.get(e)).describe()).status for e in episode_ids]
            return list(zip(results, statuses, strict=True))

        outcomes = asyncio.run(finish())
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        manager.up(stack)  # leave the shared stack whole for the tests after this one

    final = snapshot(store, episode_ids)
    counts = executions_for(stack, episode_ids)
    lost = set(committed) - set(final)
    # Work that ran again after its checkpoint committed: the count moved past the checkpoint's.
    duplicated = [key for key, seen in final.values() if counts.get(key, 0) != seen]
    reruns = {key: n for key, n in counts.items() if n > 1}  # before commit: retries at work
    report = {
        "episodes": len(episode_ids),
        "faults": {fault: len(mid) for fault, mid in landed.items()},
        "completed": sum(r.status == EpisodeStatus.COMPLETED for r, _ in outcomes),
        "checkpoints": len(final),
        "lost_checkpoints": len(lost),
        "duplicated": len(duplicated),
        "reruns_before_commit": len(reruns),
    }
    print(report)
    assert not lost, report
    assert not duplicated, (report, duplicated)
    assert {key for key, _ in final.values()} <= set(counts), "work ran without being counted"
    for record, (result, temporal_status) in zip(submitted, outcomes, strict=True):
        episode = repo.get(result.episode_id)
        assert result.status == EpisodeStatus.COMPLETED, (result, episode.error)
        assert episode.status == EpisodeStatus.COMPLETED
        assert temporal_status == WorkflowExecutionStatus.COMPLETED
        assert DeadLetterQueue(stack).for_episode(result.episode_id) == []
        assert answer_matches(episode.answer, record), (episode.answer, record["answer"])


def test_episodes_survive_a_model_replica_restart(stack, world_questions) -> None:
    """Kill the AR replica while AR episodes decode: the turn in flight fails retryably, Ray
    restarts the replica, and every episode ends as a fault-free run of it does, with the same
    answer; the kill must land while a turn is being decoded."""
    import ray

    from dllmflow.workers.serving.connect import connect
    from dllmflow.workers.serving.replicas import replica_name
    from dllmflow.workers.serving.settings import NAMESPACE

    records = world_questions[:2]
    repo, store = EpisodeRepository(stack), CheckpointStore(stack)

    async def run_all() -> list:
        svc = await EpisodeService.connect(stack)
        ids = [
            (await svc.submit(r["question"], policy="ar", question_record=r)).id for r in records
        ]
        return [await svc.wait(e, timeout=600) for e in ids]

    reference = asyncio.run(run_all())
    # A fault-free run that does not finish cannot show that the fault changed nothing.
    assert [r.status for r in reference] == [EpisodeStatus.COMPLETED] * len(records), reference
    expected = [repo.get(r.episode_id).answer for r in reference]

    async def run_with_kill() -> tuple[list, list[str]]:
        svc = await EpisodeService.connect(stack)
        ids = [
            (await svc.submit(r["question"], policy="ar", question_record=r)).id for r in records
        ]
        assert await asyncio.to_thread(
            wait_until, lambda: any(store.for_episode(e) for e in ids), 120, 0.05
        ), "no AR turn committed before the kill"
        running = [e for e in ids if repo.get(e).status == EpisodeStatus.RUNNING]
        connect(stack)
        ray.kill(ray.get_actor(replica_name("ar", 0), namespace=NAMESPACE), no_restart=False)
        return [await svc.wait(e, timeout=600) for e in ids], running

    results, running = asyncio.run(run_with_kill())
    assert running, "the replica was killed after every episode finished"
    assert [r.status for r in results] == [EpisodeStatus.COMPLETED] * len(records), results
    assert [repo.get(r.episode_id).answer for r in results] == expected
