"""The one renderer of a model's context: role instruction, question, prior turns, observations.

Training (dllmflow.training.tiny_pair) and inference (samplers, the episode workflow) both call
``render_context``, so the model always sees the same layout::

    Role: seeker
    Task: <role instruction>
    Question: <question>
    Turn 1 planner:
    <think>...</think>
    <action>{...}</action>
    Result 1: Search results:
    [p017] Alma Verner: Alma Verner is a researcher in botany.
    Turn 2 seeker:
    ...
    Turn 5 seeker:

and the model continues with its turn (``actions.render_turn``). To stay inside the model's
context, the planner's turn and the last ``FULL_TURNS`` turns are kept whole; older turns keep
only their action, older observations shrink to one line, and when that is still too long the
oldest turns are dropped (a marker line says how many).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dllmflow.agent.actions import ACTION_CLOSE, ACTION_OPEN, ROLES, parse_turn

ROLE_INSTRUCTIONS: dict[str, str] = {
    "planner": "Break the question into steps, then start with a search.",
    "seeker": (
        "Find each fact with search and fetch, then answer with the fact and its source ids."
    ),
    "writer": "Give the final answer and cite the source ids.",
}
ACTION_FIRST_LINE = "Order: action first, then thinking."
CONTEXT_TOKENS = 640  # context budget of the shipped models (turn budget 160 on top, < 1024)
FULL_TURNS = 2  # the most recent turns kept whole (besides the planner's)
MAX_RESULTS = 4  # search results shown in full
MAX_SNIPPET = 100
MAX_PAGE_CHARS = 700
SUMMARY_RESULTS = 3


@dataclass
class Step:
    """One past turn: who spoke, the raw turn text, and what its tool returned.

    observation: search -> list of {"id","title","url","snippet"}; fetch -> {"id","title","url",
    "text","page","pages"}; an invalid action or failed tool -> {"error": message}; answer -> None.
    """

    role: str
    turn: str
    observation: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_step(item: Step | Mapping[str, Any]) -> Step:
    if isinstance(item, Step):
        return item
    return Step(role=item["role"], turn=item["turn"], observation=item.get("observation"))


def question_text(question: str | Mapping[str, Any]) -> str:
    return question if isinstance(question, str) else str(question["question"])


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def render_observation(obs: Any, *, full: bool = True) -> str:
    """Text of a tool observation; ``full=False`` gives the one-line summary of older ones."""
    if obs is None:
        return ""
    if isinstance(obs, Mapping) and "error" in obs:
        return f"Error: {_clip(str(obs['error']), 200)}"
    if isinstance(obs, list):
        if not obs:
            return "Search results: none."
        if not full:
            shown = "; ".join(f"{r['id']} {_clip(r['title'], 40)}" for r in obs[:SUMMARY_RESULTS])
            return f"Search results: {shown}."
        lines = [
            f"[{r['id']}] {_clip(r['title'], 60)}: {_clip(r.get('snippet', ''), MAX_SNIPPET)}"
            for r in obs[:MAX_RESULTS]
        ]
        return "Search results:\n" + "\n".join(lines)
    if isinstance(obs, Mapping) and "text" in obs:
        page, pages = int(obs.get("page", 0)) + 1, int(obs.get("pages", 1))
        head = f"[{obs['id']}] {_clip(obs.get('title', ''), 60)} (page {page} of {pages})"
        if not full:
            return f"Fetched {head}."
        return f"{head}:\n{_clip(obs['text'], MAX_PAGE_CHARS)}"
    return _clip(json.dumps(obs, ensure_ascii=False, default=str), 300)


def _action_only(turn: str) -> str:
    start, end = turn.find(ACTION_OPEN), turn.rfind(ACTION_CLOSE)
    if start < 0 or end < start:
        return _clip(turn, 200)
    return turn[start : end + len(ACTION_CLOSE)]


def _render_step(index: int, step: Step, *, full_turn: bool, full_obs: bool) -> str:
    turn = step.turn.strip() if full_turn else _action_only(step.turn.strip())
    text = f"Turn {index + 1} {step.role}:\n{turn}\n"
    obs = render_observation(step.observation, full=full_obs)
    if obs:
        text += f"Result {index + 1}: {obs}\n"
    return text


def render_context(
    role: str,
    question: str | Mapping[str, Any],
    history: Sequence[Step | Mapping[str, Any]] = (),
    *,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    action_first: bool = False,
) -> str:
    """The model's input for ``role``'s next turn; the model's turn text follows it directly.

    With ``max_tokens`` and ``count_tokens`` (e.g. ``lambda s: len(tok(s).input_ids)``) the
    result fits in ``max_tokens``: older turns are compacted, then dropped, oldest first.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    steps = [as_step(s) for s in history]
    n = len(steps)
    header = f"Role: {role}\nTask: {ROLE_INSTRUCTIONS[role]}\n"
    if action_first:
        header += ACTION_FIRST_LINE + "\n"
    header += f"Question: {_clip(question_text(question), 600)}\n"
    tail = f"Turn {n + 1} {role}:\n"

    rendered = [
        _render_step(
            i,
            s,
            full_turn=(i == 0 and s.role == "planner") or i >= n - FULL_TURNS,
            full_obs=i == n - 1,
        )
        for i, s in enumerate(steps)
    ]

    def compose(keep_first: bool, drop: int) -> str:
        # keep_first: keep step 0 (the plan); drop: how many of the following steps to omit.
        first = rendered[:1] if keep_first else []
        rest = rendered[len(first) + drop :]
        marker = [f"({drop} earlier turns omitted)\n"] if drop else []
        return header + "".join(first + marker + rest) + tail

    text = compose(True, 0)
    if max_tokens is None or count_tokens is None or count_tokens(text) <= max_tokens:
        return text
    # Drop the oldest turns after the plan, then the plan too; the latest turn goes last.
    candidates = [(True, d) for d in range(1, n - 1)] + [(False, d) for d in range(1, n + 1)]
    for keep_first, drop in candidates:
        text = compose(keep_first, drop)
        if count_tokens(text) <= max_tokens:
            return text
    # Still too long (a huge question): keep the role line and as much of the end as fits.
    role_line = header.split("\n", 1)[0] + "\n..."
    rest = text[len(role_line) :]
    while count_tokens(role_line + rest) > max_tokens and len(rest) > len(tail):
        rest = rest[max(8, (len(rest) - len(tail)) // 8) :]
    return role_line + rest if len(rest) >= len(tail) else role_line + tail


def turn_is_valid(turn: str) -> bool:
    return parse_turn(turn).valid
