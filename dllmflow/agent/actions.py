"""The agent's action format: one thinking span and exactly one action span per turn.

A turn is plain text::

    <think>free-form reasoning</think>
    <action>{"tool": "search", "args": {"query": "..."}}</action>

The action is JSON validated against ``ACTION_SCHEMA``. This module is the single source of the
format: the oracle, the trainers, the samplers (which stop at ``ACTION_CLOSE``) and the tool
registry all use it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ACTION_OPEN, ACTION_CLOSE = "<action>", "</action>"

Role = Literal["planner", "seeker", "writer"]
ROLES: tuple[Role, ...] = ("planner", "seeker", "writer")
TOOL_NAMES = ("search", "fetch", "answer")

MAX_QUERY_CHARS = 500
MAX_ANSWER_CHARS = 20_000

TOOL_ARG_SCHEMAS: dict[str, dict[str, Any]] = {
    "search": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
            "k": {"type": "integer", "minimum": 1, "maximum": 20},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    "fetch": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 200},
            "page": {"type": "integer", "minimum": 0, "maximum": 10_000},
        },
        "required": ["id"],
        "additionalProperties": False,
    },
    "answer": {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "minLength": 1, "maxLength": MAX_ANSWER_CHARS},
            "sources": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
        },
        "required": ["answer", "sources"],
        "additionalProperties": False,
    },
}

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"tool": {"enum": list(TOOL_NAMES)}, "args": {"type": "object"}},
    "required": ["tool", "args"],
    "additionalProperties": False,
}


class ActionError(ValueError):
    """An action that cannot be parsed or fails its schema; the message is for the agent."""


@dataclass(frozen=True)
class Action:
    tool: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"tool": self.tool, "args": self.args}, ensure_ascii=False)


@dataclass(frozen=True)
class ParsedTurn:
    thinking: str
    action: Action | None
    error: str | None

    @property
    def valid(self) -> bool:
        return self.action is not None and self.error is None


# The turn's own tags are never part of a tool argument: an argument holding one is a turn
# written into a value (a diffusion half's slip, most often in a repaired action).
_MARKUP_RE = re.compile(
    "|".join(re.escape(t) for t in (THINK_OPEN, THINK_CLOSE, ACTION_OPEN, ACTION_CLOSE))
)

_THINK_RE = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.S)
_ACTION_RE = re.compile(re.escape(ACTION_OPEN) + r"(.*?)" + re.escape(ACTION_CLOSE), re.S)


ACTION_SCHEMA_KEY = "<action>"


@cache
def schema_validator(name: str) -> Any:
    """A compiled validator per schema: jsonschema.validate re-checks the schema itself on every
    call, which cost ~7 ms per action on the development machine."""
    import jsonschema

    schema = ACTION_SCHEMA if name == ACTION_SCHEMA_KEY else TOOL_ARG_SCHEMAS[name]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_action(payload: Any) -> Action:
    """Validate a decoded action object; raise ActionError with a short, actionable message."""
    if not isinstance(payload, dict):
        raise ActionError("action must be a JSON object with 'tool' and 'args'")
    tool = payload.get("tool")
    if tool not in TOOL_NAMES:
        raise ActionError(f"unknown tool {tool!r}; tools: {', '.join(TOOL_NAMES)}")
    import jsonschema  # imported here so the format (and the trainer) work without it installed

    # best_match: the same (most relevant) error jsonschema.validate would report.
    exc = jsonschema.exceptions.best_match(
        schema_validator(ACTION_SCHEMA_KEY).iter_errors(payload)
    ) or jsonschema.exceptions.best_match(schema_validator(tool).iter_errors(payload["args"]))
    if exc is not None:
        where = ".".join(str(p) for p in exc.absolute_path) or "args"
        raise ActionError(f"invalid {tool} call: {where}: {exc.message}")
    for key, value in payload["args"].items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and (tag := _MARKUP_RE.search(text)):
                raise ActionError(
                    f"invalid {tool} call: {key}: holds the turn tag {tag.group(0)}; "
                    "write only the value"
                )
    return Action(tool=tool, args=dict(payload["args"]))


def parse_action(span: str) -> Action:
    try:
        payload = json.loads(span)
    except json.JSONDecodeError as exc:
        raise ActionError(f"action is not valid JSON ({exc.msg} at char {exc.pos})") from None
    return validate_action(payload)


def parse_turn(text: str) -> ParsedTurn:
    """Split a generated turn into its thinking and its (validated) action."""
    think = _THINK_RE.search(text)
    thinking = think.group(1).strip() if think else ""
    actions = _ACTION_RE.findall(text)
    if len(actions) != 1:
        found = "no" if not actions else str(len(actions))
        return ParsedTurn(thinking, None, f"expected exactly one {ACTION_OPEN} span, found {found}")
    try:
        return ParsedTurn(thinking, parse_action(actions[0].strip()), None)
    except ActionError as exc:
        return ParsedTurn(thinking, None, str(exc))


def render_turn(thinking: str, action: Action, *, action_first: bool = False) -> str:
    """The turn text; ``action_first`` (P-ReAct order) puts the action span before the thinking.

    parse_turn reads both orders.
    """
    think = f"{THINK_OPEN}{thinking}{THINK_CLOSE}"
    act = f"{ACTION_OPEN}{action.to_json()}{ACTION_CLOSE}"
    return f"{act}\n{think}" if action_first else f"{think}\n{act}"
