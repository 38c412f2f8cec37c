"""A local, in-process episode loop (planner -> seeker... -> writer) for data generation and eval.

The durable version of this loop is the Temporal EpisodeWorkflow; this one runs a policy against
any tools with the runtime's result shapes (``InMemorySearch`` offline) and records what the
metrics need: turns, tool calls, invalid actions, the final answer and per-turn decode stats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dllmflow.agent.actions import Action, parse_turn
from dllmflow.agent.prompting import Step
from dllmflow.agent.repair import check_turn, complete_repair, repair_prefix, turn_error
from dllmflow.world.generator import answer_matches


class Tools(Protocol):
    def search(self, query: str, k: int = 5) -> list[dict[str, Any]]: ...

    def fetch(self, doc_id: str, page: int = 0) -> dict[str, Any]: ...


@dataclass
class PolicyTurn:
    """A policy's turn: the text plus optional decode statistics (a sampler's result)."""

    text: str
    stats: dict[str, Any] | None = None


Policy = Callable[[str, Mapping[str, Any], Sequence[Step]], "str | PolicyTurn"]


@dataclass
class TurnRecord:
    role: str
    text: str
    valid: bool
    error: str | None
    tool: str | None
    seconds: float
    stats: dict[str, Any] | None = None
    repaired: bool = False  # the first decode was unusable and the one repair fixed it
    first_error: str | None = None  # why the first decode was unusable (repaired or not)


@dataclass
class Episode:
    question_id: str
    steps: list[Step] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    final_answer: str | None = None
    sources: list[str] = field(default_factory=list)
    correct: bool = False
    tool_calls: int = 0
    seconds: float = 0.0
    hops: int | None = None  # from the question's ground truth, when it has one

    @property
    def invalid_turns(self) -> int:
        return sum(not t.valid for t in self.turns)


def _repaired_turn(
    policy: Policy, role: str, question: Mapping[str, Any], steps: list[Step], turn: PolicyTurn
) -> PolicyTurn | None:
    """The one bounded repair (agent.repair) of an unusable turn; None when it does not help
    or the policy cannot continue a turn (the oracle)."""
    prefix = repair_prefix(role, turn.text) if getattr(policy, "continues_turns", False) else None
    if prefix is None:
        return None
    out = policy(role, question, steps, prefix=prefix)  # type: ignore[call-arg]
    retry = out if isinstance(out, PolicyTurn) else PolicyTurn(str(out))
    text = complete_repair(prefix, retry.text.removeprefix(prefix))
    if turn_error(role, text) is not None:
        return None
    return PolicyTurn(text, _both(turn.stats, retry.stats))


def _both(first: dict[str, Any] | None, retry: dict[str, Any] | None) -> dict[str, Any] | None:
    """One turn's decode statistics over its two decodes (the stop reason is the retry's)."""
    if not first or not retry:
        return retry or first
    summed = ("tokens_generated", "forward_passes", "refinement_passes", "decode_seconds")
    return {**retry, **{k: first[k] + retry[k] for k in summed if k in first and k in retry}}


def execute_action(action: Action, tools: Tools) -> Any:
    """Run a search/fetch action; tool failures become {"error": ...} observations."""
    try:
        if action.tool == "search":
            return tools.search(action.args["query"], k=int(action.args.get("k", 5)))
        if action.tool == "fetch":
            return tools.fetch(action.args["id"], page=int(action.args.get("page", 0)))
    except KeyError as exc:
        return {"error": str(exc.args[0]) if exc.args else str(exc)}
    return None


def run_episode(
    policy: Policy,
    question: Mapping[str, Any],
    tools: Tools,
    *,
    max_turns: int = 16,
    max_consecutive_invalid: int = 3,
    repair: bool = True,
) -> Episode:
    """Planner turn, seeker turns until one answers, then the writer's turn (its answer is final).

    An unusable turn (invalid action, or a writer that does not answer) gets the one bounded
    repair the durable workflow gives it (``repair``; agent.repair); if it stays invalid it gets
    an error observation and the same role tries again. The last allowed turn always goes to
    the writer so every episode can end with an answer.
    """
    ep = Episode(
        question_id=str(question.get("id", "")), hops=len(question.get("hops") or []) or None
    )
    role, invalid_run = "planner", 0
    t0 = time.perf_counter()
    while len(ep.turns) < max_turns:
        if len(ep.turns) == max_turns - 1:
            role = "writer"
        ts = time.perf_counter()
        out = policy(role, question, list(ep.steps))
        turn = out if isinstance(out, PolicyTurn) else PolicyTurn(str(out))
        parsed, first_error = check_turn(role, turn.text)
        repaired = None
        if first_error is not None and repair:
            repaired = _repaired_turn(policy, role, question, list(ep.steps), turn)
            if repaired is not None:
                turn, parsed = repaired, parse_turn(repaired.text)
        action = parsed.action
        record = TurnRecord(
            role=role,
            text=turn.text,
            valid=parsed.valid,
            error=parsed.error,
            tool=action.tool if action else None,
            seconds=time.perf_counter() - ts,
            stats=turn.stats,
            repaired=repaired is not None,
            first_error=first_error,
        )
        ep.turns.append(record)
        if action is None:
            ep.steps.append(Step(role, turn.text, {"error": parsed.error}))
            invalid_run += 1
            if invalid_run > max_consecutive_invalid:
                break
            continue
        invalid_run = 0
        if role == "writer":
            if action.tool == "answer":
                ep.steps.append(Step(role, turn.text, None))
                ep.final_answer = str(action.args["answer"])
                ep.sources = [str(s) for s in action.args.get("sources", [])]
                break
            ep.steps.append(Step(role, turn.text, {"error": "the writer must use the answer tool"}))
            continue
        if action.tool == "answer":
            ep.steps.append(Step(role, turn.text, None))
            role = "writer"
            continue
        ep.steps.append(Step(role, turn.text, execute_action(action, tools)))
        ep.tool_calls += 1
        role = "seeker"
    ep.seconds = time.perf_counter() - t0
    if ep.final_answer is not None and "answer" in question:
        ep.correct = answer_matches(ep.final_answer, question)
    return ep
