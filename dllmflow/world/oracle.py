"""The scripted oracle policy: a perfect agent that reads the question's ground truth.

Given a role, the question record and the episode so far (turns plus the REAL tool observations
it was shown), ``oracle_turn`` returns the next turn text (``actions.render_turn``). Episodes are
DeepDiver-shaped: the planner decomposes the question and issues the first search; the seeker
fetches the right result, reads the fact, searches the next entity, ... and answers with the
last fact and its sources; the writer gives the final answer citing those sources.

With "hops" ground truth (generated worlds) the oracle follows the chain and checks every step
against what the tools actually returned: a missing search hit is retried with another query
and finally fetched by id, a page without the fact is paged on. Without "hops" (any corpus) it
still knows the answer: it searches the question, then the answer, and cites the documents
that contain it. Its thinking only states things visible in the context, so models can learn it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dllmflow.agent.actions import ACTION_CLOSE, ACTION_OPEN, TOOL_NAMES, Action, render_turn
from dllmflow.agent.prompting import Step, as_step

MAX_SEARCH_RETRIES = 2
_ACTION_SPAN = re.compile(re.escape(ACTION_OPEN) + r"(.*?)" + re.escape(ACTION_CLOSE), re.S)


def _sentence_with(text: str, needle: str) -> str | None:
    """The sentence of ``text`` that states ``needle``: one holding it as a whole token first
    ("-i" is not inside "--ignore-case"), else one holding it at all. In line-structured text
    (manual pages, help screens) a short heading line is quoted with the line after it, the
    description that says what the heading's option does."""
    lines = [ln.strip() for ln in text.split("\n")]
    token = re.compile(r"(?<![\w-])" + re.escape(needle.lower()) + r"(?![\w])")
    for match in (token.search, lambda s: needle.lower() in s):
        for i, line in enumerate(lines):
            for sentence in re.split(r"(?<=[.!?])\s+", line):
                if match(sentence.lower()):
                    heading = sentence == line and line.startswith("-") and len(line) < 60
                    if heading and i + 1 < len(lines) and lines[i + 1]:
                        follow = re.split(r"(?<=[.!?])\s+", lines[i + 1])[0]
                        return f"{line} {follow}".strip()
                    return sentence.strip()
    return None


def _quote(sentence: str) -> str:
    """A quote that cannot end the thinking or open an action ("--exists-action <action>")."""
    sentence = re.sub(r"</?(?:think|action)>", lambda m: m.group(0)[1:-1], sentence)
    return sentence.replace('"', "'")


def _taken_action(turn: str) -> Action | None:
    """The action a past turn took, read leniently: the tool's observation (or its error) is
    what counts, and this keeps the oracle usable where jsonschema is not installed."""
    spans = _ACTION_SPAN.findall(turn)
    if len(spans) != 1:
        return None
    try:
        payload = json.loads(spans[0])
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("tool") not in TOOL_NAMES:
        return None
    args = payload.get("args")
    return Action(payload["tool"], dict(args)) if isinstance(args, dict) else None


class _Trace:
    """What the episode so far says: actions taken and what came back."""

    def __init__(self, history: Sequence[Step | Mapping[str, Any]]) -> None:
        self.steps = [as_step(s) for s in history]
        self.actions: list[Action | None] = [_taken_action(s.turn) for s in self.steps]
        self.fetched: dict[str, list[dict[str, Any]]] = {}  # doc id -> pages seen
        for a, s in zip(self.actions, self.steps, strict=True):
            obs = s.observation
            if a and a.tool == "fetch" and isinstance(obs, Mapping) and "text" in obs:
                self.fetched.setdefault(str(obs["id"]), []).append(dict(obs))

    def last(self) -> tuple[Action | None, Any]:
        if not self.steps:
            return None, None
        return self.actions[-1], self.steps[-1].observation

    def seeker_answer(self) -> Action | None:
        for a in reversed(self.actions):
            if a and a.tool == "answer":
                return a
        return None

    def searches_since_fetch(self) -> int:
        count = 0
        for a in reversed(self.actions):
            if a is None:
                continue
            if a.tool == "fetch":
                break
            if a.tool == "search":
                count += 1
        return count

    def page_text(self, doc_id: str) -> str:
        return " ".join(p["text"] for p in self.fetched.get(doc_id, []))

    def next_page(self, doc_id: str) -> int | None:
        pages = self.fetched.get(doc_id, [])
        if not pages:
            return 0
        seen = {int(p.get("page", 0)) for p in pages}
        total = int(pages[-1].get("pages", 1))
        rest = [p for p in range(total) if p not in seen]
        return rest[0] if rest else None


def oracle_turn(
    role: str,
    question: Mapping[str, Any],
    history: Sequence[Step | Mapping[str, Any]] = (),
    *,
    action_first: bool = False,
) -> str:
    """The oracle's next turn for ``role`` (planner | seeker | writer) as turn text."""
    trace = _Trace(history)
    hops = question.get("hops")
    if role == "writer":
        thinking, action = _writer(question, trace)
    elif hops:
        thinking, action = _with_hops(role, question, list(hops), trace)
    else:
        thinking, action = _answer_only(role, question, trace)
    return render_turn(thinking, action, action_first=action_first)


def _plan(hops: list[Mapping[str, Any]]) -> str:
    steps = "; ".join(f"{i + 1}) {h['step']}" for i, h in enumerate(hops))
    return f"Plan: {steps}. First, search for {hops[0]['entity']}."


def _with_hops(
    role: str, question: Mapping[str, Any], hops: list[Mapping[str, Any]], trace: _Trace
) -> tuple[str, Action]:
    if role == "planner":
        return _plan(hops), Action("search", {"query": hops[0]["entity"]})
    # Hops done: consecutive hops whose document was fetched and shows the fact.
    k = 0
    while k < len(hops) and hops[k]["value"].lower() in trace.page_text(hops[k]["doc_id"]).lower():
        k += 1
    if k == len(hops):
        last = hops[-1]
        sentence = _sentence_with(trace.page_text(last["doc_id"]), last["value"]) or ""
        sources = [h["doc_id"] for h in hops]
        thinking = f'Step {k}: the page says "{_quote(sentence)}" The answer is {last["value"]}.'
        return thinking, Action("answer", {"answer": last["value"], "sources": sources})
    hop = hops[k]
    action, obs = trace.last()
    # The current hop's document was fetched but the fact was not on that page: page on.
    if hop["doc_id"] in trace.fetched:
        page = trace.next_page(hop["doc_id"])
        if page is not None:
            thinking = f"Step {k + 1}: the fact is not on this page of {hop['entity']}; read on."
            return thinking, Action("fetch", {"id": hop["doc_id"], "page": page})
    if action and action.tool == "search" and isinstance(obs, list):
        hit = next((r for r in obs if r.get("id") == hop["doc_id"]), None)
        if hit is not None:
            thinking = (
                f"Step {k + 1}: {hop['step']}. The results list [{hit['id']}] "
                f"{hit['title']}; fetch it."
            )
            return thinking, Action("fetch", {"id": hit["id"]})
        if trace.searches_since_fetch() > MAX_SEARCH_RETRIES:
            # The search tool keeps missing it; the oracle knows the id.
            thinking = f"Step {k + 1}: search keeps missing {hop['entity']}; fetch it by id."
            return thinking, Action("fetch", {"id": hop["doc_id"]})
        thinking = f"Step {k + 1}: no result is {hop['entity']}; search again more precisely."
        return thinking, Action("search", {"query": f'"{hop["entity"]}"'})
    if k > 0 and action and action.tool == "fetch":
        prev = hops[k - 1]
        sentence = _sentence_with(trace.page_text(prev["doc_id"]), prev["value"]) or ""
        thinking = (
            f'Step {k}: the page says "{_quote(sentence)}" Step {k + 1}: {hop["step"]}; '
            f"search for {hop['entity']}."
        )
        return thinking, Action("search", {"query": hop["entity"]})
    thinking = f"Step {k + 1}: {hop['step']}; search for {hop['entity']}."
    return thinking, Action("search", {"query": hop["entity"]})


def _answer_only(role: str, question: Mapping[str, Any], trace: _Trace) -> tuple[str, Action]:
    """No hop ground truth: search the question, then the answer, cite pages holding it."""
    answer = str(question["answer"])
    query = " ".join(str(question["question"]).split())[:200]
    if role == "planner":
        return "Plan: search the question, read the best pages.", Action("search", {"query": query})
    target = question.get("doc_id")
    holding = [d for d in trace.fetched if answer.lower() in trace.page_text(d).lower()]
    if target in trace.fetched:
        # The answer's own document was read: only it is quoted (another page may hold the
        # same short string, "-v", by chance).
        holding = [target] if target in holding else []
    if holding:
        # Quote where the answer stands before giving it, as the hop path does: the quote is
        # what teaches a model to find the answer on the page rather than to guess it.
        sentence = _sentence_with(trace.page_text(holding[0]), answer) or ""
        return (
            f'[{holding[0]}] says "{_quote(sentence)}" The answer is {answer}.',
            Action("answer", {"answer": answer, "sources": holding}),
        )
    action, obs = trace.last()
    if action and action.tool == "search" and isinstance(obs, list):
        fresh = [r for r in obs if r.get("id") not in trace.fetched]
        hit = next((r for r in fresh if r.get("id") == target), None)
        if hit is None:
            hit = next((r for r in fresh if answer.lower() in r.get("snippet", "").lower()), None)
        if hit is None and fresh and trace.searches_since_fetch() <= MAX_SEARCH_RETRIES:
            hit = fresh[0]
        if hit is not None:
            return f"Read [{hit['id']}] {hit['title']}.", Action("fetch", {"id": hit["id"]})
    if trace.searches_since_fetch() > MAX_SEARCH_RETRIES:
        # Nothing holds the answer: answer anyway, citing nothing found.
        return "No page states it; answer from knowledge.", Action(
            "answer", {"answer": answer, "sources": []}
        )
    return f"Search for {answer} directly.", Action("search", {"query": answer[:200]})


def _writer(question: Mapping[str, Any], trace: _Trace) -> tuple[str, Action]:
    found = trace.seeker_answer()
    if found is not None:
        answer = str(found.args["answer"])
        sources = list(found.args.get("sources", []))
    else:
        answer = str(question["answer"])
        sources = list(trace.fetched)
    cited = ", ".join(sources) if sources else "no sources"
    thinking = f"The seeker found {answer}, citing {cited}. Final answer: {answer}."
    return thinking, Action("answer", {"answer": answer, "sources": sources})


def oracle_episode(
    question: Mapping[str, Any],
    tools: Any,
    *,
    action_first: bool = False,
    max_turns: int = 16,
) -> list[Step]:
    """Run the oracle through a whole episode against ``tools`` (search/fetch) -> its steps.

    Used to generate training trajectories; the oracle's turns are valid by construction (the
    tests check each with ``actions.parse_turn``), so this needs no schema validator.
    """
    from dllmflow.agent.episode import execute_action

    steps: list[Step] = []
    role = "planner"
    while len(steps) < max_turns:
        if len(steps) == max_turns - 1:
            role = "writer"
        text = oracle_turn(role, question, steps, action_first=action_first)
        action = _taken_action(text)
        assert action is not None, text
        if role == "writer" or action.tool == "answer":
            steps.append(Step(role, text, None))
            if role == "writer":
                break
            role = "writer"
            continue
        steps.append(Step(role, text, execute_action(action, tools)))
        role = "seeker"
    return steps
