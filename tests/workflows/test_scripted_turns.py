"""Invalid actions on the real stack: the one-shot repair and writer_check, an invalid-action
streak reaching the dead-letter queue, `episodes retry` superseding that streak, and a writer
that never answers. The turns' text comes from tests/workflows/scripted_worker.py (a model that
errs on cue); the workflow, activities, parser, Postgres and Redis are the product's."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings, load_settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.db import transaction
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import Checkpoint
from dllmflow.store.streams import DeadLetterQueue, executions
from dllmflow.workflows.service import EpisodeService
from dllmflow.workflows.types import Budgets
from tests.workflows.scripted_worker import (
    ANSWER,
    DENOISE_STEPS_NEEDED,
    UNSETTLED,
    search,
    spawn_scripted_worker,
    stop_worker,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scripted(stack: Settings) -> Iterator[Settings]:
    settings = load_settings(task_queue=f"scripted-turns-{uuid.uuid4().hex[:6]}")
    worker = spawn_scripted_worker(settings)
    try:
        yield settings
    finally:
        stop_worker(worker)


def submit(settings: Settings, script: str, policy: str, budgets: Budgets | None = None):
    question = f"Which scripted answer is {uuid.uuid4().hex[:8]}?"

    async def go():
        svc = await EpisodeService.connect(settings)
        episode = await svc.submit(
            question, policy=policy, budgets=budgets, question_record={"script": script}
        )
        return await svc.wait(episode.id, timeout=120)

    result = asyncio.run(go())
    return question, result, EpisodeRepository(settings).get(result.episode_id)


def steps(settings: Settings, episode_id: str) -> list[tuple[int, str]]:
    return [(cp.step, cp.kind) for cp in CheckpointStore(settings).for_episode(episode_id)]


def superseded(settings: Settings, episode_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with transaction(settings) as session:
        rows = session.scalars(
            select(Checkpoint)
            .where(Checkpoint.episode_id == episode_id, Checkpoint.superseded_at.is_not(None))
            .order_by(Checkpoint.step, Checkpoint.id)
        ).all()
        return [(row.step, row.kind, row.payload) for row in rows]


def test_one_repair_fixes_a_broken_action_and_a_writer_that_did_not_answer(scripted) -> None:
    question, result, episode = submit(scripted, "repair", "ar")
    assert result.status == "completed", episode.error
    assert episode.answer == ANSWER["args"]["answer"] and result.invalid_actions == 0
    assert steps(scripted, episode.id) == [(0, "plan"), (0, "tool"), (1, "seek"), (2, "write")]
    store = CheckpointStore(scripted)

    plan = store.at(episode.id, 0, "plan").payload
    # The first decode had a schema error; the repair kept its thinking, re-decoded only the
    # search's value after its skeleton, and the checkpoint holds the repaired turn.
    assert plan["valid"] and plan["repaired"] and plan["error"] is None
    assert plan["text"] == (
        "<think>Search for the question first.</think><action>"
        + json.dumps(search(question))
        + "</action>"
    )
    assert plan["action"] == search(question)
    assert store.at(episode.id, 0, "tool").payload["ok"]

    seek = store.at(episode.id, 1, "seek").payload
    assert seek["valid"] and not seek["repaired"]  # a good turn is not re-decoded

    # The writer first called search: valid JSON that writer_check refuses; the repair answers.
    write = store.at(episode.id, 2, "write").payload
    assert write["valid"] and write["repaired"] and write["action"] == ANSWER
    assert write["text"].startswith("<think>Write the answer.</think><action>")


def test_a_writer_that_never_answers_is_dead_lettered(scripted) -> None:
    """writer_check refuses every writer turn that is not an answer and no repair writes one; after
    max_consecutive_invalid + 1 of them the episode is dead-lettered with no answer."""
    _, result, episode = submit(scripted, "no-answer", "ar")
    reason = "the writer must use the answer tool"
    assert result.status == "dead_lettered", (result, episode.error)
    assert episode.status == "dead_lettered" and episode.answer is None
    assert episode.error == f"invalid action repeated 3 times: {reason}"
    assert steps(scripted, episode.id) == [
        (0, "plan"),
        (0, "tool"),
        (1, "seek"),
        (2, "write"),
        (3, "write"),
        (4, "write"),
    ]
    store = CheckpointStore(scripted)
    for step in (2, 3, 4):
        write = store.at(episode.id, step, "write").payload
        assert not write["valid"] and not write["repaired"] and write["error"] == reason
        assert write["action"] is None
    (letter,) = DeadLetterQueue(scripted).for_episode(episode.id)
    assert (letter.step, letter.kind, letter.attempts) == (4, "write", 3)
    assert letter.error == episode.error
    assert episode.metrics["invalid_actions"] == 3 and episode.metrics["turns"] == 5


def test_an_invalid_streak_is_dead_lettered_and_retry_recomputes_only_the_streak(
    scripted, monkeypatch
) -> None:
    """The seeker's action never settles within 64 denoising steps: three invalid turns in a
    row dead-letter the episode. `episodes retry --max-denoise-steps 512` supersedes the three
    cached invalid turns (replaying them would dead-letter it again), keeps the planner turn
    and its search, and the recomputed seeker turn answers."""
    _, result, episode = submit(
        scripted, "denoise-hungry", "diffusion", Budgets(max_denoise_steps=64)
    )
    assert result.status == "dead_lettered", (result, episode.error)
    assert episode.error.startswith("invalid action repeated 3 times: action is not valid JSON")
    assert steps(scripted, episode.id) == [
        (0, "plan"),
        (0, "tool"),
        (1, "seek"),
        (2, "seek"),
        (3, "seek"),
    ]
    store = CheckpointStore(scripted)
    for step in (1, 2, 3):
        seek = store.at(episode.id, step, "seek").payload
        assert not seek["valid"] and seek["text"].endswith(UNSETTLED + "</action>")
    (letter,) = DeadLetterQueue(scripted).for_episode(episode.id)
    assert (letter.step, letter.kind, letter.attempts) == (3, "seek", 3)
    assert episode.metrics["invalid_actions"] == 3 and episode.metrics["tool_calls"] == 1
    plan = store.at(episode.id, 0, "plan")

    monkeypatch.setenv("DLLMFLOW_TASK_QUEUE", scripted.task_queue)  # the CLI starts it there
    retried = CliRunner().invoke(
        app, ["episodes", "retry", episode.id, "--max-denoise-steps", str(DENOISE_STEPS_NEEDED)]
    )
    assert retried.exit_code == 0, retried.output
    episode = EpisodeRepository(scripted).get(episode.id)
    assert episode.status == "completed", episode.error
    assert episode.answer == ANSWER["args"]["answer"] and episode.error is None
    assert episode.budgets["max_denoise_steps"] == DENOISE_STEPS_NEEDED
    assert DeadLetterQueue(scripted).for_episode(episode.id) == []
    assert steps(scripted, episode.id) == [(0, "plan"), (0, "tool"), (1, "seek"), (2, "write")]
    # The planner turn and its search were reused, not recomputed.
    assert store.at(episode.id, 0, "plan").id == plan.id
    assert executions(scripted, plan.idempotency_key) == 1
    assert store.at(episode.id, 1, "seek").payload["action"] == ANSWER
    # The streak's three turns stay for the record, superseded.
    old = superseded(scripted, episode.id)
    assert [(step, kind) for step, kind, _ in old] == [(1, "seek"), (2, "seek"), (3, "seek")]
    assert not any(payload["valid"] for _, _, payload in old)
    assert episode.metrics["invalid_actions"] == 0 and episode.metrics["turns"] == 3
