"""render_context: one layout for training and inference, compaction and token budgets."""

from __future__ import annotations

import pytest

from dllmflow.agent.prompting import (
    ACTION_FIRST_LINE,
    Step,
    render_context,
    render_observation,
)
from dllmflow.world.generator import generate_world
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode

SMALL = dict(n_people=30, n_orgs=12, n_cities=10, n_countries=4, n_works=20, n_questions=30)


@pytest.fixture(scope="module")
def long_episode():
    world = generate_world(21, **SMALL)
    q = max(world.questions, key=lambda q: len(q["hops"]))
    assert len(q["hops"]) >= 3
    return q, oracle_episode(q, InMemorySearch(world.documents))


def test_layout(long_episode):
    q, steps = long_episode
    text = render_context("writer", q, steps[:-1])
    assert text.startswith("Role: writer\nTask: ")
    assert f"Question: {q['question']}\n" in text
    assert text.endswith(f"Turn {len(steps)} writer:\n")
    # The plan and the last two turns stay whole; the middle keeps only its actions.
    assert steps[0].turn in text and steps[-2].turn in text and steps[-3].turn in text
    assert steps[2].turn not in text and steps[2].turn.split("\n")[1] in text
    # Only the latest observation is shown in full.
    assert text.count("Search results:\n") <= 1
    assert "Fetched [" in text


def test_token_budget_drops_old_turns_but_keeps_header_and_tail(long_episode):
    q, steps = long_episode

    def count(s: str) -> int:
        return len(s.split())

    full = render_context("seeker", q, steps[:-2])
    budget = count(full) // 2
    short = render_context("seeker", q, steps[:-2], max_tokens=budget, count_tokens=count)
    assert count(short) <= budget
    assert short.startswith("Role: seeker") and short.endswith(f"Turn {len(steps) - 1} seeker:\n")
    assert "earlier turns omitted" in short
    assert steps[-3].turn.split("\n")[1] in short  # the latest action survives
    tiny = render_context("seeker", q, steps[:-2], max_tokens=30, count_tokens=count)
    assert count(tiny) <= 30 and tiny.endswith("seeker:\n")


def test_action_first_and_dict_history(long_episode):
    q, steps = long_episode
    as_dicts = [s.to_dict() for s in steps[:3]]
    assert render_context("seeker", q, as_dicts) == render_context("seeker", q, steps[:3])
    assert ACTION_FIRST_LINE in render_context("seeker", q, steps[:3], action_first=True)
    with pytest.raises(ValueError, match="unknown role"):
        render_context("critic", q, steps)


def test_observations():
    results = [{"id": "a1", "title": "Alpha", "url": "u", "snippet": "Alpha is first."}]
    assert render_observation(results) == "Search results:\n[a1] Alpha: Alpha is first."
    assert render_observation(results, full=False) == "Search results: a1 Alpha."
    assert render_observation([]) == "Search results: none."
    page = {"id": "a1", "title": "Alpha", "url": "u", "text": "x " * 600, "page": 0, "pages": 2}
    assert render_observation(page).startswith("[a1] Alpha (page 1 of 2):\n")
    assert len(render_observation(page)) < 800
    assert render_observation({"error": "no such id"}) == "Error: no such id"
    assert render_observation(None) == ""


def test_a_turn_without_observation_renders_no_result_line():
    silent = render_context("writer", "Q?", [Step("seeker", "t", None)])
    assert "Turn 1 seeker:\nt\n" in silent and "Result 1" not in silent
    empty = render_context("writer", "Q?", [Step("seeker", "t", [])])
    assert "Turn 1 seeker:\nt\nResult 1: Search results: none.\n" in empty
