"""A diffusion turn that cannot converge within its denoising budget is dead-lettered; `dlq retry`
with a larger budget continues the episode from its last checkpoint."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetterQueue
from dllmflow.workflows.service import EpisodeService
from dllmflow.workflows.types import Budgets

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stuck_diffusion_turn_is_dead_lettered_then_retried(stack: Settings, world_questions):
    record = world_questions[-1]

    async def submit_stuck() -> str:
        svc = await EpisodeService.connect(stack)
        episode = await svc.submit(
            record["question"],
            policy="diffusion",
            budgets=Budgets(max_denoise_steps=1),
            question_record=record,
        )
        result = await svc.wait(episode.id, timeout=300)
        assert result.status == "dead_lettered"
        return episode.id

    episode_id = asyncio.run(submit_stuck())
    episode = EpisodeRepository(stack).get(episode_id)
    assert "DenoisingBudgetExceeded" in episode.error
    # Recorded like a finished episode's counters: the stuck planner turn never completed.
    assert episode.metrics == {"turns": 0, "tool_calls": 0, "invalid_actions": 0, "waterfall": []}
    letters = DeadLetterQueue(stack).for_episode(episode_id)
    assert len(letters) == 1 and letters[0].step == 0
    assert CheckpointStore(stack).for_episode(episode_id) == []  # nothing half-written

    listed = CliRunner().invoke(app, ["dlq", "list", "--json"])
    assert letters[0].id in listed.output and "DenoisingBudgetExceeded" in listed.output
    retried = CliRunner().invoke(app, ["dlq", "retry", letters[0].id, "--max-denoise-steps", "512"])
    assert retried.exit_code == 0, retried.output

    episode = EpisodeRepository(stack).get(episode_id)
    assert episode.budgets["max_denoise_steps"] == 512
    assert DeadLetterQueue(stack).for_episode(episode_id) == []
    first = CheckpointStore(stack).at(episode_id, 0, "plan")
    assert first is not None and first.backend == "diffusion"
    assert first.payload["stats"]["stop_reason"] != "not_converged"
    assert episode.status == "completed", episode.error
