"""The one bounded repair: the skeleton an unusable turn is re-decoded from, how the value the
model writes is read back, and the offline episode loop applying it as the workflow does."""

from __future__ import annotations

import pytest

from dllmflow.agent.actions import parse_turn
from dllmflow.agent.episode import PolicyTurn, run_episode
from dllmflow.agent.repair import (
    WRITER_MUST_ANSWER,
    check_turn,
    complete_repair,
    repair_prefix,
    repair_tool,
    runaway_thinking,
    turn_error,
)
from dllmflow.world.local_search import InMemorySearch

THINK = '<think>Step 1: find the publisher of "Shizor".</think>\n'
SKELETON = '<action>{"tool": "search", "args": {"query": "'


def action(text: str) -> dict:
    parsed = parse_turn(text)
    assert parsed.valid, parsed.error
    return {"tool": parsed.action.tool, "args": parsed.action.args}


@pytest.mark.parametrize(
    ("role", "broken", "tool"),
    [
        ("seeker", '{"tool": "search", "args": {"id": "Shizor"}}', "search"),  # wrong key
        ("seeker", '{"tool": "fetch", "args": {"": " "p015"}}', "fetch"),  # lost key
        ("seeker", '{"tool": "fe', "search"),  # cut before the name: the default
        ("seeker", '{"too": "fetch", "args"', "fetch"),  # named, not as "tool"
        ("planner", "", "search"),
        ("writer", '{"tool": "search", "args": {"query": "x"}}', "answer"),  # writer answers
    ],
)
def test_the_repair_calls_the_tool_the_broken_action_meant(role, broken, tool) -> None:
    text = f"{THINK}<action>{broken}</action>" if broken else THINK
    assert repair_tool(role, text) == tool
    key = {"search": "query", "fetch": "id", "answer": "answer"}[tool]
    assert repair_prefix(role, text) == (
        THINK + f'<action>{{"tool": "{tool}", "args": {{"{key}": "'
    )


def test_the_prefix_keeps_the_thinking_verbatim_or_moves_it_before_the_action() -> None:
    tight = '<think>look it up</think><action>{"tool": "search"}</action>'
    assert repair_prefix("planner", tight) == "<think>look it up</think>" + SKELETON
    # P-ReAct order: the thinking follows the action; the repair decodes think-first.
    action_first = '<action>{"tool": "fetch", "args": {"i</action>\n<think>get p015</think>'
    assert repair_prefix("seeker", action_first) == (
        '<think>get p015</think>\n<action>{"tool": "fetch", "args": {"id": "'
    )
    # Nothing to keep: no repair (the turn is re-tried as a whole by the episode loop).
    assert repair_prefix("seeker", '<action>{"tool": "search"}</action>') is None
    assert repair_prefix("seeker", "<think></think><action>{}</action>") is None


LOOPING_QUOTE = (
    '<think>[x019] says "EXIT STATUS xargs exits with: 0 if it succeeds 127 if the command is not'
    " found 127 if the command is not found 127 if the command is not"
)


def test_a_runaway_thinking_is_kept_up_to_its_loop_and_answers_from_its_quote() -> None:
    # The budget ran out inside the quote: cut before the repeated run, the quote closed.
    assert runaway_thinking(LOOPING_QUOTE) == (
        '[x019] says "EXIT STATUS xargs exits with: 0 if it succeeds 127 if the command is not'
        ' found"'
    )
    assert repair_tool("seeker", LOOPING_QUOTE) == "answer"
    assert repair_prefix("seeker", LOOPING_QUOTE) == (
        f"<think>{runaway_thinking(LOOPING_QUOTE)}</think>\n"
        '<action>{"tool": "answer", "args": {"answer": "'
    )
    # A runaway plan quotes no page: its repair searches; a writer always answers.
    plan = "<think>Step 1: find the river. Step 2: find the river. Step 2: find the river."
    assert runaway_thinking(plan) == "Step 1: find the river. Step 2: find the river."
    assert repair_tool("planner", plan) == "search" and repair_tool("writer", plan) == "answer"
    # No loop before the budget ran out: the whole thinking is kept.
    assert runaway_thinking("<think>one two three four five six") == "one two three four five six"
    # Only a turn that never closed its thinking and wrote no action runs away.
    assert runaway_thinking(THINK) is None
    assert runaway_thinking(LOOPING_QUOTE + '<action>{"tool": "se') is None
    assert runaway_thinking('{"tool": "search"} and more') is None


def test_the_value_ends_at_its_closing_quote_and_the_action_closes_from_the_schema() -> None:
    prefix = THINK + SKELETON
    for continuation in ('Shizor"}}</action>', 'Shizor", "k": 3}} trailing', 'Shizor" ]]'):
        assert action(complete_repair(prefix, continuation)) == {
            "tool": "search",
            "args": {"query": "Shizor"},
        }
    # No closing quote: the value ends where the action closes, stray closers dropped.
    assert action(complete_repair(prefix, "Shizor}}</action>"))["args"] == {"query": "Shizor"}
    # JSON escapes are decoded once; the thinking is kept as it was.
    repaired = complete_repair(prefix, 'the \\"Shizor\\" press"}}</action>')
    assert action(repaired)["args"] == {"query": 'the "Shizor" press'}
    assert repaired.startswith(THINK) and repaired.endswith("</action>")


def test_an_answer_reads_its_sources_and_a_fetch_its_page() -> None:
    answer = THINK + '<action>{"tool": "answer", "args": {"answer": "'
    got = action(complete_repair(answer, 'Lonaiport", "sources": ["p015", "p2"]}}</action>'))
    assert got == {"tool": "answer", "args": {"answer": "Lonaiport", "sources": ["p015", "p2"]}}
    # No sources written: an empty list (the schema's required key, no invented ids).
    assert action(complete_repair(answer, 'Lonaiport"}}'))["args"]["sources"] == []
    fetch = THINK + '<action>{"tool": "fetch", "args": {"id": "'
    assert action(complete_repair(fetch, 'p015", "page": 2}}</action>'))["args"] == {
        "id": "p015",
        "page": 2,
    }


def test_an_empty_or_over_long_value_is_still_invalid() -> None:
    prefix = THINK + SKELETON
    empty = complete_repair(prefix, '"}}</action>')
    assert not parse_turn(empty).valid
    too_long = complete_repair(prefix, "x" * 600 + '"}}</action>')
    assert "too long" in parse_turn(too_long).error
    with pytest.raises(ValueError, match="skeleton"):
        complete_repair(THINK + "<action>", 'x"}}')


def test_a_value_that_restarts_the_turn_is_invalid() -> None:
    # What the diffusion half wrote after an answer's skeleton in 9 of 60 reworded episodes.
    restarted = complete_repair(
        THINK + '<action>{"tool": "answer", "args": {"answer": "',
        '<think>The seeker found found Pinle Works.</think>\\n<action>{", "sources": []}}</action>',
    )
    assert parse_turn(restarted).error == (
        "invalid answer call: answer: holds the turn tag <think>; write only the value"
    )
    sources = THINK + (
        '<action>{"tool": "answer", "args": {"answer": "x", "sources": ["w001<think>"]}}</action>'
    )
    assert "sources: holds the turn tag <think>" in parse_turn(sources).error
    plain = THINK + '<action>{"tool": "search", "args": {"query": "a < b > c"}}</action>'
    assert parse_turn(plain).valid


def test_turn_error_names_the_writers_rule() -> None:
    search = THINK + '<action>{"tool": "search", "args": {"query": "x"}}</action>'
    assert turn_error("seeker", search) is None
    assert turn_error("writer", search) == WRITER_MUST_ANSWER
    assert "not valid JSON" in turn_error("seeker", THINK + '<action>{"tool": </action>')
    parsed, error = check_turn("writer", search)  # parsed once, for the caller to use
    assert (parsed.action.tool, parsed.action.args, error) == (
        "search",
        {"query": "x"},
        WRITER_MUST_ANSWER,
    )


class ScriptedPolicy:
    """A policy whose first decode of every turn breaks its action; with a prefix it writes the
    value the question asks for (or, ``fixes=False``, nothing usable)."""

    continues_turns = True

    def __init__(self, fixes: bool = True) -> None:
        self.fixes = fixes
        self.prefixes: list[str] = []

    def __call__(self, role, question, history, prefix: str = ""):
        stats = {"tokens_generated": 10, "forward_passes": 4, "decode_seconds": 0.5}
        if prefix:
            self.prefixes.append(prefix)
            value = {"planner": "Shizor", "seeker": "Lonaiport", "writer": "Lonaiport"}[role]
            tail = f'{value}", "sources": ["d1"]}}}}</action>' if self.fixes else '"}}</action>'
            return PolicyTurn(prefix + tail, {**stats, "stop_reason": "action_closed"})
        broken = {
            "planner": '{"tool": "search", "args": {"": " "Shizor"}}',  # lost key
            "seeker": '{"tool": "answer", "args": {"answer": }',  # cut short
            "writer": '{"tool": "search", "args": {"query": "more"}}',  # valid, not an answer
        }[role]
        return PolicyTurn(f"<think>{role} thinks</think>\n<action>{broken}</action>", stats)


DOCS = [
    {
        "id": "d1",
        "title": "Shizor",
        "url": "file:///d1",
        "text": "Shizor is published in Lonaiport.",
    }
]
QUESTION = {"id": "q1", "question": "Where is Shizor published?", "answer": "Lonaiport"}


def test_the_episode_loop_repairs_each_unusable_turn_once() -> None:
    policy = ScriptedPolicy()
    ep = run_episode(policy, QUESTION, InMemorySearch(DOCS), max_turns=6)
    assert ep.correct and ep.final_answer == "Lonaiport" and ep.invalid_turns == 0
    assert [(t.role, t.tool, t.repaired) for t in ep.turns] == [
        ("planner", "search", True),
        ("seeker", "answer", True),
        ("writer", "answer", True),
    ]
    assert ep.steps[0].observation[0]["id"] == "d1"  # the repaired query ran: "Shizor"
    assert ep.turns[-1].first_error == WRITER_MUST_ANSWER
    assert "not valid JSON" in ep.turns[1].first_error
    assert len(policy.prefixes) == len(ep.turns)  # one repair per turn, no more
    # Both decodes count in the turn's statistics.
    assert ep.turns[0].stats["tokens_generated"] == 20 and ep.turns[0].stats["forward_passes"] == 8


def test_a_repair_that_does_not_help_leaves_the_turn_invalid() -> None:
    policy = ScriptedPolicy(fixes=False)
    ep = run_episode(policy, QUESTION, InMemorySearch(DOCS), max_turns=6)
    assert ep.final_answer is None and not ep.turns[0].valid and not ep.turns[0].repaired
    assert ep.turns[0].text.endswith('{"": " "Shizor"}}</action>')  # the first decode is kept
    assert len(policy.prefixes) == len(ep.turns)


def test_no_repair_without_a_policy_that_continues_turns_or_when_turned_off() -> None:
    policy = ScriptedPolicy()
    ep = run_episode(policy, QUESTION, InMemorySearch(DOCS), max_turns=4, repair=False)
    assert not policy.prefixes and not any(t.repaired for t in ep.turns)
    assert ep.turns[0].first_error and not ep.turns[0].valid
    ScriptedPolicy.continues_turns = False
    try:
        policy = ScriptedPolicy()
        run_episode(policy, QUESTION, InMemorySearch(DOCS), max_turns=4)
        assert not policy.prefixes
    finally:
        ScriptedPolicy.continues_turns = True
