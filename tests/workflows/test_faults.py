"""Faults survived: while episodes run, kill and restart Redis, Postgres, the Temporal dev server
and the worker in turn. Every episode must finish (or sit in the DLQ with a reason), no committed
checkpoint may be lost, no committed tool call may run again, and answers must be right."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

from dllmflow.config import load_settings
from dllmflow.models.world import answer_matches
from dllmflow.stack import manager
from dllmflow.stack.process import wait_until
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetterQueue, executions
from dllmflow.workers.episode_worker import spawn_worker
from dllmflow.workflows.service import EpisodeService

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

EPISODES = 4
FAULTS = ("redis", "postgres", "temporal", "worker")


def test_episodes_survive_component_restarts(stack, world_questions) -> None:
    queue = "fault-test"
    settings = load_settings(task_queue=queue)
    latency = {"DLLMFLOW_TOOL_LATENCY": "search=fixed:0.5,fetch=fixed:0.5"}

    def start_worker() -> subprocess.Popen:
        return spawn_worker(settings, latency)

    records = world_questions[:EPISODES]
    worker = start_worker()

    async def submit() -> list[str]:
        svc = await EpisodeService.connect(settings)
        return [
            (await svc.submit(r["question"], policy="oracle", question_record=r)).id
            for r in records
        ]

    episode_ids = asyncio.run(submit())
    store = CheckpointStore(stack)
    committed: dict[int, tuple[str, int]] = {}  # checkpoint id -> (key, executions at commit)
    report = {"episodes": EPISODES, "faults_injected": 0}
    try:
        for fault in FAULTS:
            wait_until(
                lambda: sum(len(store.for_episode(e)) for e in episode_ids) > len(committed) + 2,
                30,
                0.1,
            )
            for episode_id in episode_ids:
                committed.update(
                    {
                        cp.id: (cp.idempotency_key, cp.payload["execution"])
                        for cp in store.for_episode(episode_id)
                    }
                )
            if fault == "worker":
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                time.sleep(1)
                worker = start_worker()
            else:
                record = manager.StackState(stack.state_dir).load()[fault]
                os.kill(record.pid, signal.SIGKILL)
                time.sleep(1)
                manager.up(stack)
            report["faults_injected"] += 1

        async def finish():
            svc = await EpisodeService.connect(settings)
            return [await svc.wait(e, timeout=600) for e in episode_ids]

        results = asyncio.run(finish())
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        manager.up(stack)  # leave the shared stack whole for the tests after this one

    final_ids = {cp.id for e in episode_ids for cp in store.for_episode(e)}
    lost = set(committed) - final_ids
    # Work may rerun before its checkpoint commits (that is what retries are for), never after.
    duplicates = [
        key for key, at_commit in committed.values() if executions(stack, key) != at_commit
    ]
    retried_before_commit = sum(at_commit > 1 for _key, at_commit in committed.values())
    dead = {letter.episode_id: letter.error for letter in DeadLetterQueue(stack).list(10_000)}
    report.update(
        completed=sum(r.status == "completed" for r in results),
        dead_lettered=sum(r.status == "dead_lettered" for r in results),
        lost_checkpoints=len(lost),
        duplicates=len(duplicates),
        retried_before_commit=retried_before_commit,
    )
    print(report)
    assert report["faults_injected"] == len(FAULTS)
    assert not lost and not duplicates, report
    for record, result in zip(records, results, strict=True):
        if result.status == "dead_lettered":
            assert dead.get(result.episode_id), "a dead-lettered episode needs a DLQ reason"
            continue
        assert result.status == "completed", result
        answer = EpisodeRepository(stack).get(result.episode_id).answer
        assert answer_matches(answer, record), (answer, record["answer"])
    assert report["completed"] >= 1, report


def test_episodes_survive_a_model_replica_restart(stack, world_questions) -> None:
    """Kill the AR replica while AR episodes decode: the turn in flight fails retryably, Ray
    restarts the replica, and every episode ends with the answer of a fault-free run."""
    import ray

    from dllmflow.workers.serving.connect import connect
    from dllmflow.workers.serving.replicas import replica_name
    from dllmflow.workers.serving.settings import NAMESPACE

    records = world_questions[:2]

    async def run_all() -> list:
        svc = await EpisodeService.connect(stack)
        ids = [
            (await svc.submit(r["question"], policy="ar", question_record=r)).id for r in records
        ]
        return [await svc.wait(e, timeout=600) for e in ids]

    reference = asyncio.run(run_all())
    repo = EpisodeRepository(stack)
    expected = [repo.get(r.episode_id).answer for r in reference]

    async def run_with_kill() -> list:
        svc = await EpisodeService.connect(stack)
        ids = [
            (await svc.submit(r["question"], policy="ar", question_record=r)).id for r in records
        ]
        store = CheckpointStore(stack)
        await asyncio.to_thread(
            wait_until, lambda: any(store.for_episode(e) for e in ids), 120, 0.05
        )
        connect(stack)
        ray.kill(ray.get_actor(replica_name("ar", 0), namespace=NAMESPACE), no_restart=False)
        return [await svc.wait(e, timeout=600) for e in ids]

    results = asyncio.run(run_with_kill())
    assert [r.status for r in results] == [r.status for r in reference]
    assert [repo.get(r.episode_id).answer for r in results] == expected
