"""ToolExecutor: validate an agent action, run its tool, and report the outcome.

The episode workflow's `tool` activity calls ``ToolExecutor(settings).run(action, key=...)``
and checkpoints ``outcome.to_dict()``. What the agent did wrong (malformed call, unknown tool,
no such document) comes back as ``outcome.error``, a short message for its next turn; what the
infrastructure did wrong (Postgres down) raises, so the activity's retry policy handles it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dllmflow.agent.actions import Action
from dllmflow.config import Settings
from dllmflow.workers.tools import registry
from dllmflow.workers.tools.base import ToolError, ToolResult
from dllmflow.workers.tools.fetch import fetch
from dllmflow.workers.tools.http_fetch import http_fetch, is_url
from dllmflow.workers.tools.latency import LatencyProfile
from dllmflow.workers.tools.search import DEFAULT_K, search
from dllmflow.workers.tools.settings import ToolSettings, load_tool_settings


@dataclass(frozen=True)
class ToolOutcome:
    """One tool call's whole outcome, JSON-serialisable for a checkpoint.

    ``result`` is the tool's value (search: list of {"id","title","url","snippet"}; fetch:
    {"id","title","url","text","page","pages"}; answer: None) and ``error`` the agent-facing
    message; exactly one of them is set unless the action is terminal. ``corpus_version`` is the
    version the result was read from (None when no corpus was read).
    """

    tool: str
    result: Any = None
    error: str | None = None
    latency_s: float = 0.0
    corpus_version: int | None = None
    injected_delay_s: float = 0.0
    terminal: bool = False
    source: str = "corpus"  # corpus | http | none

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def observation(self) -> Any:
        """What the agent sees next (prompting.Step.observation): the result or {"error": ...}."""
        return {"error": self.error} if self.error is not None else self.result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolOutcome:
        return cls(**data)


def _canonical(args: Mapping[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, ensure_ascii=False)


class ToolExecutor:
    """Runs validated actions against one corpus, with the configured latency profile."""

    def __init__(
        self,
        settings: Settings,
        *,
        corpus: str | None = None,
        tool_settings: ToolSettings | None = None,
        latency: LatencyProfile | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.tool_settings = tool_settings or load_tool_settings()
        self.corpus = corpus or self.tool_settings.corpus
        self.latency = latency if latency is not None else self.tool_settings.latency
        self.sleep = sleep

    def run(self, action: Action | Mapping[str, Any], *, key: str | None = None) -> ToolOutcome:
        """Validate and execute ``action``. ``key`` (the activity's idempotency key) seeds the
        injected delay; without it the delay is seeded by the call's arguments."""
        started = time.perf_counter()
        try:
            call = registry.validate_call(action)
        except registry.ToolCallError as exc:
            return ToolOutcome(
                tool=_tool_name(action),
                error=str(exc),
                latency_s=time.perf_counter() - started,
                source="none",
            )
        spec = registry.TOOLS[call.tool]
        if spec.terminal:
            elapsed = time.perf_counter() - started
            return ToolOutcome(tool=call.tool, terminal=True, latency_s=elapsed, source="none")
        delay = self.latency.sample(call.tool, key if key is not None else _canonical(call.args))
        try:
            outcome, source = self._execute(call)
        except ToolError as exc:
            delay = self._wait(delay, exc.source)
            return ToolOutcome(
                tool=call.tool,
                error=str(exc),
                latency_s=time.perf_counter() - started,
                corpus_version=exc.corpus_version,
                injected_delay_s=delay,
                source=exc.source,
            )
        registry.check_result(call.tool, outcome.value)
        delay = self._wait(delay, source)
        return ToolOutcome(
            tool=call.tool,
            result=outcome.value,
            latency_s=time.perf_counter() - started,
            corpus_version=outcome.corpus_version,
            injected_delay_s=delay,
            source=source,
        )

    def _wait(self, delay: float, source: str) -> float:
        """Apply the injected delay to a corpus-backed call (a real HTTP fetch already took its
        real time); returns the delay applied."""
        if delay <= 0 or source != "corpus":
            return 0.0
        self.sleep(delay)
        return delay

    async def arun(
        self, action: Action | Mapping[str, Any], *, key: str | None = None
    ) -> ToolOutcome:
        """``run`` off the event loop, for async activities."""
        return await asyncio.to_thread(self.run, action, key=key)

    def _execute(self, call: Action) -> tuple[ToolResult, str]:
        args = call.args
        if call.tool == "search":
            return search(
                self.settings, args["query"], args.get("k", DEFAULT_K), corpus=self.corpus
            ), "corpus"
        doc_id, page = args["id"], args.get("page", 0)
        try:
            return fetch(self.settings, doc_id, page, corpus=self.corpus), "corpus"
        except ToolError:
            allow = self.tool_settings.http_allow
            if not (allow and is_url(doc_id)):
                raise
        try:
            value = http_fetch(
                doc_id,
                page,
                allow=allow,
                timeout_s=self.tool_settings.http_fetch_timeout_s,
                max_bytes=self.tool_settings.http_fetch_max_bytes,
            )
        except ToolError as exc:
            exc.source = "http"
            raise
        return ToolResult(value, None), "http"


def _tool_name(action: Any) -> str:
    if isinstance(action, Action):
        return action.tool
    tool = action.get("tool") if isinstance(action, Mapping) else None
    return tool if isinstance(tool, str) else ("" if tool is None else repr(tool))
