"""Postgres-backed tools with the in-memory search's interface (dllmflow.agent.episode.Tools),
so the local episode loop and offline eval can run against the real corpus unchanged."""

from __future__ import annotations

from typing import Any

from dllmflow.config import Settings
from dllmflow.store.corpus import DEFAULT_CORPUS
from dllmflow.workers.tools.base import ToolError
from dllmflow.workers.tools.fetch import fetch
from dllmflow.workers.tools.search import DEFAULT_K, search


class CorpusTools:
    def __init__(self, settings: Settings, corpus: str = DEFAULT_CORPUS) -> None:
        self.settings = settings
        self.corpus = corpus

    def search(self, query: str, k: int = DEFAULT_K) -> list[dict[str, Any]]:
        return search(self.settings, query, k, corpus=self.corpus).value

    def fetch(self, doc_id: str, page: int = 0) -> dict[str, Any]:
        try:
            return fetch(self.settings, doc_id, page, corpus=self.corpus).value
        except ToolError as exc:
            raise KeyError(str(exc)) from None  # what InMemorySearch raises
