"""A generated world loaded into the stack's Postgres, for episodes to research."""

from __future__ import annotations

from typing import Any

import pytest

from dllmflow.config import Settings
from dllmflow.store.corpus import DEFAULT_CORPUS, load_documents
from dllmflow.world.generator import generate_world

WORLD_SEED = 4242


@pytest.fixture(scope="session")
def world_questions(stack: Settings) -> list[dict[str, Any]]:
    world = generate_world(
        WORLD_SEED, n_people=40, n_orgs=15, n_cities=12, n_countries=4, n_works=25, n_questions=12
    )
    report = load_documents(stack, world.documents, corpus=DEFAULT_CORPUS)
    assert report.loaded == len(world.documents)
    return sorted(world.questions, key=lambda q: -len(q.get("hops") or []))
