"""Durable episodes end to end on the embedded Temporal + Postgres + Redis (oracle policy)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import pytest
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings, load_settings
from dllmflow.stack.health import check_worker
from dllmflow.stack.process import wait_until
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import ProgressStream, executions, progress_stream, redis_client
from dllmflow.workers.episode_worker import spawn_worker
from dllmflow.workflows.service import EpisodeService
from dllmflow.world.generator import answer_matches

# The activities the workflow schedules (workflows/activities.py).
ACTIVITY_NAMES = {"model_turn", "tool_call", "finish_episode", "dead_letter", "start_episode"}

pytestmark = pytest.mark.integration


async def run_episode(settings: Settings, record: dict[str, Any], policy: str = "oracle"):
    svc = await EpisodeService.connect(settings)
    episode = await svc.submit(record["question"], policy=policy, question_record=record)
    result = await svc.wait(episode.id, timeout=120)
    return EpisodeRepository(settings).get(episode.id), result


def test_oracle_episode_plumbs_the_gold_answer_and_sources(stack: Settings, world_questions):
    """The oracle answers with the record's gold hop values, so this checks the plumbing (the
    answer and sources reach the row), not answer quality (tests/models/test_evaluation.py)."""
    record = world_questions[0]  # the most hops
    episode, result = asyncio.run(run_episode(stack, record))
    assert result.status == "completed", episode.error
    assert answer_matches(episode.answer, record), (episode.answer, record["answer"])
    assert episode.sources
    assert result.tool_calls == 2 * len(record["hops"])  # the oracle: a search and a fetch a hop
    waterfall = episode.metrics["waterfall"]
    assert [row["step"] for row in waterfall] == sorted(row["step"] for row in waterfall)
    assert set(waterfall[0]["timings"]) == {
        "queue",
        "decode",
        "tool",
        "checkpoint",
        "orchestration",
    }

    shown = CliRunner().invoke(app, ["episodes", "show", episode.id])
    assert shown.exit_code == 0, shown.output
    assert "planner" in shown.output and "writer" in shown.output
    history = CliRunner().invoke(app, ["episodes", "history", episode.id])
    assert "workflow_execution_completed" in history.output
    assert "activity_task_failed" not in history.output  # the happy path needs no retries
    # Every activity event names its activity, completions too (they only carry an event id).
    lines = history.output.splitlines()
    for kind in ("activity_task_scheduled", "activity_task_completed"):
        rows = [ln for ln in lines if f" {kind} " in ln or ln.endswith(f" {kind}")]
        assert rows and all(ln.split()[-1] in ACTIVITY_NAMES for ln in rows), rows


def test_replay_reuses_checkpoints_before_step(stack: Settings, world_questions) -> None:
    record = world_questions[1]
    source, _ = asyncio.run(run_episode(stack, record))
    store = CheckpointStore(stack)

    async def replay() -> str:
        svc = await EpisodeService.connect(stack)
        new = await svc.replay(source.id, from_step=3, policy="oracle")
        await svc.wait(new.id, timeout=120)
        return new.id

    replay_id = asyncio.run(replay())
    replayed = EpisodeRepository(stack).get(replay_id)
    assert replayed.status == "completed" and replayed.answer == source.answer
    assert replayed.parent_episode_id == source.id
    shown = CliRunner().invoke(app, ["episodes", "show", replay_id])
    assert f"replay of {source.id} from step 3" in " ".join(shown.output.split())
    checkpoints = store.for_episode(replay_id)
    source_before = {(cp.step, cp.kind) for cp in store.for_episode(source.id) if cp.step < 3}
    assert {(cp.step, cp.kind) for cp in checkpoints if cp.step < 3} == source_before
    assert {cp.step for cp in checkpoints if cp.step < 3} == {0, 1, 2}
    assert any(cp.step >= 3 for cp in checkpoints)
    for cp in checkpoints:
        if cp.step < 3:
            assert cp.payload.get("copied_from"), f"step {cp.step} {cp.kind} was recomputed"
            assert executions(stack, cp.idempotency_key) == 0
        else:
            assert not cp.payload.get("copied_from")
            assert executions(stack, cp.idempotency_key) == 1


def test_replay_past_the_last_step_is_refused(stack: Settings, world_questions) -> None:
    """A replay that would recompute nothing is an error naming the episode's steps (it used
    to make a silent full copy); no episode row is written for it."""
    source, _ = asyncio.run(run_episode(stack, world_questions[2]))
    last = max(cp.step for cp in CheckpointStore(stack).for_episode(source.id))
    before = len(EpisodeRepository(stack).list(limit=10_000))
    result = CliRunner().invoke(
        app, ["episodes", "replay", source.id, "--from", str(last + 1), "--policy", "oracle"]
    )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"has steps 0..{last}" in text and f"--from {last + 1} would recompute nothing" in text
    assert len(EpisodeRepository(stack).list(limit=10_000)) == before


def test_progress_stream_expires_after_the_episode_and_not_before(
    stack: Settings, world_questions
) -> None:
    """The live stream is kept while the episode runs and expires DLLMFLOW_PROGRESS_TTL_S after
    it finishes; an event written later (a retry) lifts the expiry again."""
    episode, _ = asyncio.run(run_episode(stack, world_questions[3]))
    r = redis_client(stack)
    key = progress_stream(episode.id)
    assert r.xlen(key) > 0
    assert 0 < r.ttl(key) <= stack.progress_ttl_s
    ProgressStream(stack).publish(episode.id, "turn_started", step=99)
    assert r.ttl(key) == -1  # no expiry while the episode is live again


def test_bad_inputs_are_refused_clearly(stack: Settings) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "why?", "--policy", "telepathy"])
    assert result.exit_code == 1 and "unknown policy 'telepathy'" in result.output
    result = runner.invoke(app, ["run", "   ", "--policy", "oracle"])
    assert result.exit_code == 1 and "question must be a non-empty string" in result.output
    result = runner.invoke(app, ["run", "Who founded it?", "--policy", "oracle"])
    assert result.exit_code == 1 and "oracle policy needs the question's ground truth" in (
        " ".join(result.output.split())
    )
    result = runner.invoke(app, ["episodes", "show", "ep-missing"])
    assert result.exit_code == 1 and "no episode with id 'ep-missing'" in result.output


@pytest.mark.slow
@pytest.mark.fault
def test_worker_killed_mid_episode_resumes_without_rerunning(
    stack: Settings, world_questions, tmp_path
) -> None:
    """Kill -9 the worker after a few committed steps; a new worker finishes the episode."""
    record = world_questions[0]
    _, reference = asyncio.run(run_episode(stack, record))
    reference_answer = EpisodeRepository(stack).get(reference.episode_id).answer

    queue = "kill-test"
    settings = load_settings(task_queue=queue)
    latency = {"DLLMFLOW_TOOL_LATENCY": "search=fixed:0.4,fetch=fixed:0.4"}

    def start_worker() -> subprocess.Popen:
        return spawn_worker(settings, latency)

    worker = start_worker()
    store = CheckpointStore(stack)

    async def submit() -> str:
        svc = await EpisodeService.connect(settings)
        return (await svc.submit(record["question"], policy="oracle", question_record=record)).id

    episode_id = asyncio.run(submit())
    assert wait_until(
        lambda: sum(cp.kind == "tool" for cp in store.for_episode(episode_id)) >= 2, 60, 0.05
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # Reaped: nothing of that worker can commit now, so this is what it left behind.
    at_kill = store.for_episode(episode_id)
    committed = [(cp.idempotency_key, cp.payload["execution"]) for cp in at_kill]
    # It died mid-episode: the row is not finished and the writer has not run.
    assert EpisodeRepository(stack).get(episode_id).status == "running"
    assert "write" not in {cp.kind for cp in at_kill}
    assert not check_worker(settings).healthy  # no other worker on this queue to finish it
    worker = start_worker()
    try:

        async def finish():
            svc = await EpisodeService.connect(settings)
            return await svc.wait(episode_id, timeout=180)

        result = asyncio.run(finish())
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert result.status == "completed"
    assert EpisodeRepository(stack).get(episode_id).answer == reference_answer
    for key, at_commit in committed:
        assert executions(stack, key) == at_commit, (
            f"{key} ran again after its checkpoint committed"
        )
    # The new worker did the rest: later steps, the writer among them, each run once more.
    done_before = {key for key, _ in committed}
    later = [cp for cp in store.for_episode(episode_id) if cp.idempotency_key not in done_before]
    assert later and "write" in {cp.kind for cp in later}
    assert min(cp.step for cp in later) >= max(cp.step for cp in at_kill)
    assert all(executions(stack, cp.idempotency_key) >= 1 for cp in later)


@pytest.mark.slow
def test_replay_with_the_ar_backend_recomputes_only_later_steps(
    stack: Settings, world_questions
) -> None:
    """`episodes replay ID --from 3 --policy ar`: steps 0-2 come from checkpoints, the rest is
    decoded by the AR model."""
    record = world_questions[2]
    source, _ = asyncio.run(run_episode(stack, record))
    result = CliRunner().invoke(
        app, ["episodes", "replay", source.id, "--from", "3", "--policy", "ar"]
    )
    # The command waits and prints whatever the AR agent ended with; the tiny AR model may or
    # may not write a good answer, but the episode must finish and the command succeed.
    assert result.exit_code == 0, result.output
    replayed = EpisodeRepository(stack).list(limit=1)[0]
    assert replayed.id in result.output
    assert replayed.parent_episode_id == source.id and replayed.policy == "ar"
    assert replayed.status in ("completed", "failed", "dead_lettered"), replayed.status
    checkpoints = CheckpointStore(stack).for_episode(replayed.id)
    copied = {cp.step for cp in checkpoints if cp.step < 3}
    assert copied == {0, 1, 2}
    assert any(cp.step >= 3 and cp.backend == "ar" for cp in checkpoints)
    for cp in checkpoints:
        if cp.step < 3:
            assert cp.payload.get("copied_from") and cp.backend in ("oracle", "tool")
            assert executions(stack, cp.idempotency_key) == 0
        elif cp.kind != "tool":
            assert cp.backend == "ar" and not cp.payload.get("copied_from")
