"""What every tool returns, and the one error type whose message goes back to the agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ToolError(ValueError):
    """A call the agent can fix (no such document, page out of range); the message says how.

    ``corpus_version`` is set when the answer depended on the corpus (a missing id may exist in
    a later version), so error outcomes replay as exactly as results do.
    """

    def __init__(
        self, message: str, *, corpus_version: int | None = None, source: str = "corpus"
    ) -> None:
        super().__init__(message)
        self.corpus_version = corpus_version
        self.source = source


@dataclass(frozen=True)
class ToolResult:
    """A tool's value and the corpus version it was computed from (replay key with the args)."""

    value: Any
    corpus_version: int | None
