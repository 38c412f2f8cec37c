"""The oracle: every turn it writes is a valid action, and it follows the real tool results."""

from __future__ import annotations

import pytest

from dllmflow.agent.actions import parse_turn
from dllmflow.agent.episode import run_episode
from dllmflow.agent.policy import OraclePolicy
from dllmflow.agent.prompting import Step
from dllmflow.world.generator import answer_matches, generate_world, train_seeds
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode, oracle_turn

SMALL = dict(n_people=30, n_orgs=12, n_cities=10, n_countries=4, n_works=20, n_questions=20)


@pytest.mark.parametrize("action_first", [False, True])
def test_every_oracle_turn_validates(action_first):
    for seed in train_seeds(3):
        world = generate_world(seed, **SMALL)
        tools = InMemorySearch(world.documents)
        for q in world.questions:
            steps = oracle_episode(q, tools, action_first=action_first)
            roles = [s.role for s in steps]
            assert roles[0] == "planner" and roles[-1] == "writer"
            assert set(roles[1:-1]) == {"seeker"}
            for step in steps:
                parsed = parse_turn(step.turn)
                assert parsed.valid, (step.turn, parsed.error)
                assert parsed.thinking
                assert step.turn.startswith("<action>" if action_first else "<think>")
            final = parse_turn(steps[-1].turn).action
            assert final.tool == "answer" and answer_matches(final.args["answer"], q)
            assert final.args["sources"] == [h["doc_id"] for h in q["hops"]]
            # One search and one fetch per hop, then the seeker's answer and the writer.
            assert len(steps) == 2 * len(q["hops"]) + 2


def test_episode_loop_with_oracle_policy_is_always_right():
    world = generate_world(77, **SMALL)
    tools = InMemorySearch(world.documents)
    for q in world.questions:
        ep = run_episode(OraclePolicy(), q, tools)
        assert ep.correct and ep.invalid_turns == 0
        assert ep.tool_calls == 2 * len(q["hops"])


class MissingFirstSearch(InMemorySearch):
    """A search tool that returns nothing for the first few queries."""

    def __init__(self, docs, misses: int) -> None:
        super().__init__(docs)
        self.misses = misses

    def search(self, query, k=5):
        if self.misses > 0:
            self.misses -= 1
            return []
        return super().search(query, k)


@pytest.mark.parametrize("misses", [1, 5])
def test_oracle_recovers_from_search_misses(misses):
    world = generate_world(3, **SMALL)
    q = world.questions[0]
    steps = oracle_episode(q, MissingFirstSearch(world.documents, misses))
    actions = [parse_turn(s.turn).action for s in steps]
    assert all(a is not None for a in actions)
    assert answer_matches(actions[-1].args["answer"], q)
    # It searched again after the miss (and fetched by id once retries ran out).
    assert actions[1].tool == "search"
    if misses > 2:
        assert any(a.tool == "fetch" and a.args["id"] == q["hops"][0]["doc_id"] for a in actions)


def test_oracle_pages_on_when_the_fact_is_on_a_later_page():
    world = generate_world(4, **SMALL)
    q = next(q for q in world.questions if len(q["hops"]) == 1)
    tools = InMemorySearch(world.documents, page_chars=40)
    steps = oracle_episode(q, tools)
    fetches = [parse_turn(s.turn).action for s in steps if "fetch" in s.turn]
    assert any(a.args.get("page", 0) > 0 for a in fetches)
    assert answer_matches(parse_turn(steps[-1].turn).action.args["answer"], q)


def test_oracle_without_hops_uses_the_answer():
    docs = [
        {"id": "a", "title": "Alpha", "url": "u:a", "text": "Alpha is a town. Its bell is blue."},
        {"id": "b", "title": "Beta", "url": "u:b", "text": "Beta has a red bell."},
    ]
    q = {"id": "q", "question": "What colour is the bell of Beta?", "answer": "red"}
    steps = oracle_episode(q, InMemorySearch(docs))
    final = parse_turn(steps[-1].turn).action
    assert final.args == {"answer": "red", "sources": ["b"]}


def test_oracle_reads_the_observations_it_is_shown():
    world = generate_world(8, **SMALL)
    q = next(q for q in world.questions if len(q["hops"]) >= 2)
    hop = q["hops"][0]
    planner = oracle_turn("planner", q, [])
    results = [{"id": hop["doc_id"], "title": hop["entity"], "url": "u", "snippet": "s"}]
    # The right document is in the results -> fetch it; absent -> search again.
    hit = oracle_turn("seeker", q, [Step("planner", planner, results)])
    assert parse_turn(hit).action.args == {"id": hop["doc_id"]}
    miss = oracle_turn("seeker", q, [Step("planner", planner, [])])
    assert parse_turn(miss).action.tool == "search"


def test_answer_only_turn_quotes_the_sentence_that_holds_the_answer():
    """Without hops the oracle still shows where the answer stands on the fetched page."""
    from dllmflow.world.local_search import InMemorySearch
    from dllmflow.world.oracle import oracle_episode

    corpus = [
        {"id": "d1", "title": "grep", "url": "u", "text": "Search files. Use -i to ignore case."},
        {"id": "d2", "title": "sort", "url": "u", "text": "Sort lines of text files."},
    ]
    record = {"id": "q", "question": "grep option to ignore case?", "answer": "-i"}
    steps = oracle_episode(record, InMemorySearch(corpus))
    answering = next(s for s in steps if s.role == "seeker" and '"answer"' in s.turn)
    assert 'says "Use -i to ignore case."' in answering.turn


def test_quote_of_an_option_heading_carries_its_description():
    """In manual-style text "-i" is quoted as its heading plus the line saying what it does,
    and a flag inside a longer flag ("--ignore-case" holds "-i") is not taken for it."""
    from dllmflow.world.oracle import _sentence_with

    text = "--no-ignore-case\nDo not ignore case.\n-i, --ignore-case\nIgnore case distinctions."
    assert _sentence_with(text, "-i") == "-i, --ignore-case Ignore case distinctions."
    prose = "The level is 6. Other text follows here."
    assert _sentence_with(prose, "6") == "The level is 6."


def test_answer_only_quotes_the_records_own_document():
    """A short answer ("-v") can stand on other pages too: with the record's doc_id the oracle
    fetches that document from the results and quotes it, never a look-alike."""
    from dllmflow.world.local_search import InMemorySearch
    from dllmflow.world.oracle import oracle_episode

    corpus = [
        {
            "id": "a",
            "title": "tool verbose",
            "url": "u",
            "text": "-v, --version\nPrint the version.",
        },
        {"id": "b", "title": "tool verbose output", "url": "u", "text": "-v\nVerbose output."},
    ]
    record = {"id": "q", "question": "tool verbose output flag", "answer": "-v", "doc_id": "b"}
    steps = oracle_episode(record, InMemorySearch(corpus))
    fetched = [parse_turn(s.turn).action.args.get("id") for s in steps if '"fetch"' in s.turn]
    answering = next(s for s in steps if s.role == "seeker" and '"answer"' in s.turn)
    assert fetched == ["b"]
    assert '[b] says "-v Verbose output."' in answering.turn
    assert parse_turn(answering.turn).action.args["sources"] == ["b"]


def test_a_quote_never_breaks_the_turn_format():
    from dllmflow.world.oracle import _quote

    assert "<action>" not in _quote('--exists-action <action> "x"')
