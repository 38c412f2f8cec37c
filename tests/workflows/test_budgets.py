"""Budgets force the writer: max_turns, max_tool_calls and deadline_s each end the research
early with a writer turn (oracle policy, so the turn sequence is known)."""

from __future__ import annotations

import asyncio

import pytest

from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.workflows.service import EpisodeService
from dllmflow.workflows.types import Budgets

pytestmark = pytest.mark.integration


def run(settings: Settings, record: dict, budgets: Budgets):
    async def go():
        svc = await EpisodeService.connect(settings)
        episode = await svc.submit(
            record["question"], policy="oracle", budgets=budgets, question_record=record
        )
        return await svc.wait(episode.id, timeout=120)

    result = asyncio.run(go())
    kinds = [(cp.step, cp.kind) for cp in CheckpointStore(settings).for_episode(result.episode_id)]
    return result, EpisodeRepository(settings).get(result.episode_id), kinds


@pytest.fixture(scope="module")
def record(world_questions):
    record = world_questions[0]  # the most hops: unbudgeted, it makes 2 tool calls a hop
    assert len(record["hops"]) >= 3
    return record


def test_max_tool_calls_forces_the_writer(stack: Settings, record) -> None:
    result, episode, kinds = run(stack, record, Budgets(max_tool_calls=2))
    assert result.status == "completed" and episode.answer, episode.error
    assert result.tool_calls == 2
    # plan + tool, seek + tool, then the writer at once (the research was not done).
    assert kinds == [(0, "plan"), (0, "tool"), (1, "seek"), (1, "tool"), (2, "write")]
    assert result.turns == 3


def test_max_turns_forces_the_writer_on_the_last_turn(stack: Settings, record) -> None:
    result, episode, kinds = run(stack, record, Budgets(max_turns=4))
    assert result.status == "completed" and episode.answer, episode.error
    assert result.turns == 4 and result.tool_calls == 3
    assert kinds[-1] == (3, "write") and [k for _, k in kinds].count("write") == 1
    assert {k for s, k in kinds if s < 3} == {"plan", "seek", "tool"}


def test_deadline_forces_the_writer(stack: Settings, record) -> None:
    # Workflow time passes with each activity, so a 1 ms deadline is gone after the plan.
    result, episode, kinds = run(stack, record, Budgets(deadline_s=0.001))
    assert result.status == "completed" and episode.answer, episode.error
    assert kinds == [(0, "plan"), (0, "tool"), (1, "write")]
    assert result.turns == 2 and result.tool_calls == 1
