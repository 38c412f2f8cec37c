"""The tool registry: every tool's argument schema, result schema and whether it ends a turn.

Argument schemas come from dllmflow.agent.actions.TOOL_ARG_SCHEMAS (the single source the
trainers and samplers use too); result schemas pin the shapes search and fetch return, which
are also the shapes dllmflow.world.local_search produces for training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from dllmflow.agent import actions
from dllmflow.agent.actions import Action, ActionError

_STRING = {"type": "string"}

SEARCH_RESULT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"id": _STRING, "title": _STRING, "url": _STRING, "snippet": _STRING},
        "required": ["id", "title", "url", "snippet"],
        "additionalProperties": False,
    },
}
FETCH_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": _STRING,
        "title": _STRING,
        "url": _STRING,
        "text": _STRING,
        "page": {"type": "integer", "minimum": 0},
        "pages": {"type": "integer", "minimum": 1},
    },
    "required": ["id", "title", "url", "text", "page", "pages"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args_schema: dict[str, Any]
    result_schema: dict[str, Any] | None  # None: terminal, nothing is executed
    terminal: bool = False


TOOLS: dict[str, ToolSpec] = {
    "search": ToolSpec(
        "search",
        "Full-text search of the corpus; returns up to k (default 5) {id,title,url,snippet}.",
        actions.TOOL_ARG_SCHEMAS["search"],
        SEARCH_RESULT_SCHEMA,
    ),
    "fetch": ToolSpec(
        "fetch",
        "One page (default 0) of a document by id or url: {id,title,url,text,page,pages}.",
        actions.TOOL_ARG_SCHEMAS["fetch"],
        FETCH_RESULT_SCHEMA,
    ),
    "answer": ToolSpec(
        "answer",
        "Final answer with the ids of the documents it rests on; ends the episode.",
        actions.TOOL_ARG_SCHEMAS["answer"],
        None,
        terminal=True,
    ),
}
if set(TOOLS) != set(actions.TOOL_NAMES):  # pragma: no cover - guards the two lists drifting
    raise RuntimeError(f"tool registry {sorted(TOOLS)} != actions.TOOL_NAMES")


class ToolCallError(ValueError):
    """A malformed call; the message is short and tells the agent what to change."""


def validate_call(action: Action | Mapping[str, Any]) -> Action:
    """The validated action, or ToolCallError, e.g. "unknown tool 'serch'; tools: search, ..."."""
    payload = {"tool": action.tool, "args": action.args} if isinstance(action, Action) else action
    try:
        return actions.validate_action(payload)
    except ActionError as exc:
        raise ToolCallError(str(exc)) from None


@cache
def _result_validator(tool: str) -> Any:
    import jsonschema

    schema = TOOLS[tool].result_schema
    if schema is None:
        return None
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # once, not on every call as jsonschema.validate does
    return cls(schema)


def check_result(tool: str, result: Any) -> None:
    """Assert a result has its declared shape (a failure is a bug in the tool, not the agent)."""
    validator = _result_validator(tool)
    if validator is not None:
        validator.validate(result)


def describe() -> list[dict[str, Any]]:
    """The tools as a model- or API-facing list (name, description, argument schema)."""
    return [
        {"name": t.name, "description": t.description, "parameters": t.args_schema}
        for t in TOOLS.values()
    ]
