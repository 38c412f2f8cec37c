"""The one bounded repair of an invalid turn: keep its thinking, re-decode the action's value
from the skeleton its tool's schema gives.

A model (the diffusion half above all) that breaks an action breaks its structure: a lost key
(``{"": " "Shizor"}``), the other tool's key (``search`` with ``id``), a missing ``sources``,
JSON cut short. The repair decodes once more from a prompt that ends with the turn's thinking and
the opening of the action up to its first value::

    <think>...</think>
    <action>{"tool": "search", "args": {"query": "

so the structure comes from the schema and only the value from the model, as constrained
decoding would give it. A turn whose thinking never closed (the model looped until the token
budget ran out: ``127 if the command is not found 127 if the command is not found ...``) keeps
its thinking up to where it began to repeat itself; a seeker that was quoting a page then
answers from the quote. The skeleton is the start of the model's own turn (the request's
``turn_prefix``, after the chat template's assistant header): placed in the user message, it
made the diffusion half start a new turn inside the value. The value ends at its closing
quote; the rest of the action (an answer's ``sources``, a fetch's ``page``) is read from what
the model wrote after it, and the action is closed from the schema. The result is parsed and
validated like any turn: an empty or over-long value still fails.

Both paths use this module: the durable workflow's model-turn activity and the offline episode
loop, so the evaluation measures what production runs.
"""

from __future__ import annotations

import json
import re

from dllmflow.agent.actions import (
    ACTION_CLOSE,
    ACTION_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    TOOL_NAMES,
    Action,
    ParsedTurn,
    parse_turn,
)

# The argument whose value the model writes after the skeleton: each tool's required string.
VALUE_KEY = {"search": "query", "fetch": "id", "answer": "answer"}
WRITER_MUST_ANSWER = "the writer must use the answer tool"

_TOOL_RE = re.compile(r'"tool"\s*:\s*"(' + "|".join(TOOL_NAMES) + r')"')
_SKELETON_RE = re.compile(re.escape(ACTION_OPEN) + r'\{"tool": "(\w+)", "args": \{"(\w+)": "$')
_SOURCES_RE = re.compile(r'"sources"\s*:\s*\[(.*?)\]', re.S)
_PAGE_RE = re.compile(r'"page"\s*:\s*(\d+)')
_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTES_A_PAGE_RE = re.compile(r"\[[\w.:-]+\] says")  # the seeker's reading: [x019] says "..."
# A thinking that writes the same run of words twice has started to loop (a small model does
# not get out of one by itself); five words keep an ordinary repeated phrase from counting.
LOOP_WORDS = 5


def writer_check(role: str, tool: str | None) -> str | None:
    """The writer's turn ends the episode: only the answer tool is allowed there."""
    if role == "writer" and tool != "answer":
        return WRITER_MUST_ANSWER
    return None


def check_turn(role: str, text: str) -> tuple[ParsedTurn, str | None]:
    """The parsed turn, and why it cannot be used (parse, schema or the writer's rule) or None."""
    parsed = parse_turn(text)
    return parsed, parsed.error or writer_check(role, parsed.action and parsed.action.tool)


def turn_error(role: str, text: str) -> str | None:
    """Why this turn cannot be used; None when it can."""
    return check_turn(role, text)[1]


def runaway_thinking(text: str) -> str | None:
    """The thinking of a turn that never closed it and wrote no action, with one copy of the
    part it loops over (a quote left open is closed); None for any other turn.

    The loop starts at the first run of LOOP_WORDS words written twice; its period is the
    distance between the two. One period is kept, starting after a sentence end when the loop
    has one (``Step 2: find X.`` rather than ``find X. Step 2:``).
    """
    if THINK_CLOSE in text or ACTION_OPEN in text or not text.lstrip().startswith(THINK_OPEN):
        return None
    body = text.split(THINK_OPEN, 1)[1]
    words = [body[a:b] for a, b in (m.span() for m in re.finditer(r"\S+", body))]
    starts = [m.start() for m in re.finditer(r"\S+", body)]
    first_at: dict[tuple[str, ...], int] = {}
    cut = len(body)
    for i in range(len(words) - LOOP_WORDS + 1):
        j = first_at.setdefault(tuple(words[i : i + LOOP_WORDS]), i)
        if j == i:
            continue
        period = i - j
        after_sentence = [k for k in range(j, i) if k == 0 or words[k - 1].endswith(".")]
        k = next((k for k in after_sentence if k + period < len(words)), j)
        cut = starts[k + period]
        break
    thinking = body[:cut].rstrip()
    if thinking.count('"') % 2:
        thinking = thinking.rstrip(",;") + '"'
    return thinking or None


def repair_tool(role: str, text: str) -> str:
    """The tool the repaired action calls: the writer's is always answer; otherwise the tool the
    broken action named (or mentioned, when its JSON was cut short); a runaway thinking that
    was quoting a page answers from it; else search."""
    if role == "writer":
        return "answer"
    if (thinking := runaway_thinking(text)) and _QUOTES_A_PAGE_RE.search(thinking):
        return "answer"
    span = text.split(ACTION_OPEN, 1)[1] if ACTION_OPEN in text else ""
    named = _TOOL_RE.search(span)
    if named:
        return named.group(1)
    return next((tool for tool in TOOL_NAMES if tool in span), "search")


def repair_prefix(role: str, text: str) -> str | None:
    """The prompt suffix the repair decodes after, or None for a turn with no thinking to keep.

    A think-first turn keeps its text verbatim up to its THINK_CLOSE (and the whitespace after
    it); an action-first (P-ReAct) turn's thinking is moved before the action; a runaway
    thinking (never closed) is kept up to its loop and closed."""
    thinking = parse_turn(text).thinking or runaway_thinking(text)
    if not thinking:
        return None
    close = text.find(THINK_CLOSE)
    action_at = text.find(ACTION_OPEN)
    if close >= 0 and (action_at < 0 or close < action_at):
        end = close + len(THINK_CLOSE)
        end += len(text[end:]) - len(text[end:].lstrip())
        head = text[:end]
    else:
        head = f"{THINK_OPEN}{thinking}{THINK_CLOSE}\n"
    tool = repair_tool(role, text)
    return f'{head}{ACTION_OPEN}{{"tool": "{tool}", "args": {{"{VALUE_KEY[tool]}": "'


def complete_repair(prefix: str, continuation: str) -> str:
    """The repaired turn: ``prefix`` (from repair_prefix) with the value the model wrote in
    ``continuation`` and the action closed from the schema. When no value can be read, the raw
    text is returned for the parser to reject."""
    skeleton = _SKELETON_RE.search(prefix)
    if skeleton is None:
        raise ValueError("prefix does not end with an action skeleton (use repair_prefix)")
    tool, key = skeleton.groups()
    value, rest = _string_value(continuation)
    if not value:
        return prefix + continuation
    args: dict[str, object] = {key: value}
    if tool == "answer":
        sources = _SOURCES_RE.search(rest)
        args["sources"] = _STRING_RE.findall(sources.group(1)) if sources else []
    elif tool == "fetch" and (page := _PAGE_RE.search(rest)):
        args["page"] = int(page.group(1))
    head = prefix[: skeleton.start()]
    return f"{head}{ACTION_OPEN}{Action(tool, args).to_json()}{ACTION_CLOSE}"


def _string_value(text: str) -> tuple[str, str]:
    """(the JSON string value that starts ``text``, what follows its closing quote). A value
    with no closing quote ends where the action closes or the text ends."""
    end = text.find(ACTION_CLOSE)
    body = text if end < 0 else text[:end]
    raw = _STRING_RE.match('"' + body)
    if raw is not None:
        literal, rest = raw.group(1), body[raw.end() - 1 :]
    else:
        literal, rest = body.rstrip().rstrip('"}]').rstrip(), ""
    try:
        value = json.loads(f'"{literal}"')
    except json.JSONDecodeError:
        value = literal
    return value.strip(), rest
