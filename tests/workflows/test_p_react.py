"""P-ReAct inside the durable workflow: a diffusion turn decoded action-first checkpoints its
action as soon as the span is committed and signals the workflow, which starts the tool call
while the model is still refining the thinking.

The episodes run on a worker of their own, started with DLLMFLOW_ACTION_FIRST=true and its own
replicas (the tiny pair), against the real embedded stack."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.worker import Replayer

from dllmflow.config import Settings, load_settings
from dllmflow.stack.process import wait_until
from dllmflow.store.checkpoints import CheckpointStore, StoredCheckpoint
from dllmflow.store.db import get_engine
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.executions import executions_for
from dllmflow.workers.episode_worker import spawn_worker, workflow_runner
from dllmflow.workflows.episode import EpisodeWorkflow
from dllmflow.workflows.service import EpisodeService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOOL_LATENCY = "search=fixed:0.3,fetch=fixed:0.3"


def _worker(queue: str) -> tuple[Settings, subprocess.Popen]:
    settings = load_settings(task_queue=queue)
    env = {
        "DLLMFLOW_ACTION_FIRST": "true",
        "DLLMFLOW_TOOL_LATENCY": TOOL_LATENCY,
        "DLLMFLOW_REPLICA_GROUP": f"{queue}-{uuid.uuid4().hex[:8]}",
    }
    return settings, spawn_worker(settings, env, timeout=120)


@pytest.fixture
def p_react_worker(stack: Settings) -> Iterator[Any]:
    queue = f"p-react-{uuid.uuid4().hex[:6]}"
    settings, proc = _worker(queue)
    procs = [proc]

    def restart() -> None:
        procs.append(_worker(queue)[1])

    try:
        yield settings, {"queue": queue}, procs, restart
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


def by_kind(cps: list[StoredCheckpoint], step: int) -> dict[str, StoredCheckpoint]:
    return {cp.kind: cp for cp in cps if cp.step == step}


def submit(settings: Settings, record: dict[str, Any]) -> str:
    async def go() -> str:
        svc = await EpisodeService.connect(settings)
        episode = await svc.submit(record["question"], policy="diffusion", question_record=record)
        return episode.id

    return asyncio.run(go())


def wait_result(settings: Settings, episode_id: str, timeout: float = 600):
    async def go():
        return await (await EpisodeService.connect(settings)).wait(episode_id, timeout=timeout)

    return asyncio.run(go())


def test_the_tool_starts_while_the_thinking_is_refined(p_react_worker, world_questions):
    settings, _, _, _ = p_react_worker
    store = CheckpointStore(settings)
    started_inside, read_early = [], []
    for record in world_questions[:3]:
        eid = submit(settings, record)
        result = wait_result(settings, eid)
        assert result.status == "completed", EpisodeRepository(settings).get(eid).error
        cps = store.for_episode(eid)
        early_steps = sorted({cp.step for cp in cps if cp.kind == "action"})
        assert early_steps, "no turn committed its action before it ended"
        metrics = EpisodeRepository(settings).get(eid).metrics
        waterfall = {row["step"]: row for row in metrics["waterfall"]}
        for step in early_steps:
            kinds = by_kind(cps, step)
            action, tool = kinds["action"], kinds["tool"]
            turn = next(cp for kind, cp in kinds.items() if kind not in ("action", "tool"))
            # The tool ran the committed action, after it was checkpointed, as the turn's action.
            assert tool.payload["action"] == action.payload["action"] == turn.payload["action"]
            assert turn.payload["valid"] and turn.payload["action_checkpoint_id"] == action.id
            assert action.payload["committed_at"] <= tool.payload["started_at"]
            started_inside.append(tool.payload["started_at"] < turn.payload["decode_ended_at"])
            read_early.append(tool.payload["early"])  # read the action before the turn committed
            row = waterfall[step]
            if row["tool_start"] is not None:  # started by the signal, inside the step
                turn_s = sum(row["timings"][k] for k in ("queue", "decode"))
                assert row["tool_start"] <= turn_s + row["timings"]["orchestration"]
        # The workflow's history (signals included) replays deterministically.
        asyncio.run(_replay(settings, eid))
    # A tool call started while its turn was still decoding (stamps taken by the activities:
    # the tool call's start, the end of the turn's decode), and read the action checkpoint.
    assert any(started_inside), started_inside
    assert any(read_early), read_early


async def _replay(settings: Settings, episode_id: str) -> None:
    svc = await EpisodeService.connect(settings)
    history = await svc.handle(EpisodeRepository(settings).get(episode_id)).fetch_history()
    await Replayer(workflows=[EpisodeWorkflow], workflow_runner=workflow_runner()).replay_workflow(
        history
    )


def test_worker_killed_between_the_action_and_the_thinking(p_react_worker, world_questions):
    """Hold the step-0 turn's checkpoint write (a row on its live (episode, step, kind) slot,
    uncommitted) so the worker is killed after its action and tool call committed and before
    the turn did: the tool ran once, the retried turn keeps the action and decodes a thinking,
    the episode completes; a replay from the step after reuses the action checkpoint."""
    settings, _, procs, restart = p_react_worker
    store = CheckpointStore(settings)
    record = world_questions[0]
    eid = submit(settings, record)
    with get_engine(settings).connect() as hold:
        hold.execute(
            text(
                "INSERT INTO checkpoints (episode_id, step, kind, role, idempotency_key, payload,"
                " timings) VALUES (:e, 0, 'plan', 'planner', :k, '{}', '{}')"
            ),
            {"e": eid, "k": f"test-hold-{eid}"},
        )  # not committed: the activity's INSERT of this slot waits on it

        def tool_committed() -> bool:
            kinds = by_kind(store.for_episode(eid), 0)
            return "action" in kinds and "tool" in kinds

        assert wait_until(tool_committed, 300, 0.05), (
            "the planner turn's tool call did not commit while its turn was held",
            [(cp.step, cp.kind) for cp in store.for_episode(eid)],
        )
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        # Killed mid-thinking, or with the turn's checkpoint write waiting on the held slot:
        # then the dead worker's Postgres session still waits, and a crash takes it down with
        # the worker, so end it before letting go (else its INSERT would commit).
        hold.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
        )
        hold.rollback()
    assert "plan" not in by_kind(store.for_episode(eid), 0), "the held turn committed anyway"
    restart()
    result = wait_result(settings, eid)
    episode = EpisodeRepository(settings).get(eid)
    assert result.status == "completed", episode.error

    kinds = by_kind(store.for_episode(eid), 0)
    action, tool, turn = kinds["action"], kinds["tool"], kinds["plan"]
    counts = executions_for(settings, [eid])
    assert counts[tool.idempotency_key] == 1, "the tool ran again after the crash"
    assert counts[turn.idempotency_key] == 2, "the turn was not retried after the kill"
    assert turn.payload["resumed"] is True and turn.payload["action_checkpoint_id"] == action.id
    assert turn.payload["action"] == action.payload["action"]
    assert turn.payload["text"].startswith(action.payload["span"])
    assert turn.payload["thinking"], "the retried turn lost its thinking"

    async def replay() -> str:
        svc = await EpisodeService.connect(settings)
        copy = await svc.replay(eid, from_step=1)
        await svc.wait(copy.id, timeout=600)
        return copy.id

    copy_id = asyncio.run(replay())
    copied = by_kind(store.for_episode(copy_id), 0)
    assert copied["action"].payload["copied_from"] == action.id
    assert copied["plan"].payload["copied_from"] == turn.id
    assert copied["tool"].payload["copied_from"] == tool.id
    replay_counts = executions_for(settings, [copy_id])
    # Step 0 was reused whole: neither its turn nor its tool call ran in the replay.
    assert not any(
        key in replay_counts
        for key in (copied["action"].idempotency_key, copied["tool"].idempotency_key)
    )
    assert copied["plan"].idempotency_key not in replay_counts
    assert EpisodeRepository(settings).get(copy_id).status == "completed"
