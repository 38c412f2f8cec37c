"""The corpus snapshot the tools read from: a load that commits in the middle of a search or a
fetch does not split its result between two corpus versions, and a query blocked behind a lock
ends at the statement timeout instead of holding its tool call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from dllmflow.config import Settings
from dllmflow.store import corpus as store
from dllmflow.workers.tools import fetch as fetch_module
from dllmflow.workers.tools import search as search_module
from dllmflow.workers.tools.fetch import fetch
from dllmflow.workers.tools.search import search
from tests.tools.conftest import doc, documents_locked

pytestmark = pytest.mark.integration

BEFORE = [doc("harbor", "The old harbor keeps its lamps lit."), doc("mill", "A quiet mill.")]
# What the concurrent load commits: "harbor" rewritten, one document added.
AFTER = [
    doc("harbor", "The harbor became a lighthouse museum."),
    doc("lighthouse", "A lighthouse on the cliff."),
]


def load_in_another_transaction(settings: Settings, corpus: str) -> None:
    """Commit AFTER from another thread (its own connection) and wait until it is committed."""
    errors: list[BaseException] = []

    def load() -> None:
        try:
            store.load_documents(settings, AFTER, corpus=corpus)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the concurrent load blocked behind the reader"
    assert not errors, errors


def load_after_first_read(
    settings: Settings, corpus: str, module: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Wrap `module.name` (the tool's first read in its snapshot) so that a load commits right
    after it, before the tool reads its rows; returns the versions the wrapper saw."""
    original: Callable[..., Any] = getattr(module, name)
    seen: list[int] = []

    def read_then_load(conn: Connection, corpus_name: str) -> Any:
        result = original(conn, corpus_name)
        seen.append(result[0] if isinstance(result, tuple) else result)
        load_in_another_transaction(settings, corpus)
        return result

    monkeypatch.setattr(module, name, read_then_load)
    return seen


def test_search_reads_one_version_while_a_load_commits(stack, corpus_name, monkeypatch):
    store.load_documents(stack, BEFORE, corpus=corpus_name)
    before = store.corpus_version(stack, corpus_name)
    seen = load_after_first_read(stack, corpus_name, search_module, "read_state", monkeypatch)

    result = search(stack, "harbor lighthouse", k=5, corpus=corpus_name)
    assert seen == [before]
    assert store.corpus_version(stack, corpus_name) == before + 1  # the load did commit
    # Rows of the version it reports: the old harbor text, no lighthouse document yet.
    assert result.corpus_version == before
    assert [hit["id"] for hit in result.value] == ["harbor"]
    assert "lamps" in result.value[0]["snippet"]

    monkeypatch.undo()
    after = search(stack, "harbor lighthouse", k=5, corpus=corpus_name)
    assert after.corpus_version == before + 1
    assert {hit["id"] for hit in after.value} == {"harbor", "lighthouse"}


def test_fetch_reads_one_version_while_a_load_commits(stack, corpus_name, monkeypatch):
    store.load_documents(stack, BEFORE, corpus=corpus_name)
    before = store.corpus_version(stack, corpus_name)
    seen = load_after_first_read(stack, corpus_name, fetch_module, "read_version", monkeypatch)

    result = fetch(stack, "harbor", corpus=corpus_name)
    assert seen == [before] and store.corpus_version(stack, corpus_name) == before + 1
    assert result.corpus_version == before
    assert result.value["text"] == BEFORE[0]["text"]


def test_a_blocked_corpus_read_ends_at_the_statement_timeout(stack, corpus_name):
    store.load_documents(stack, BEFORE, corpus=corpus_name)
    impatient = stack.model_copy(update={"corpus_statement_timeout_ms": 200})
    with documents_locked(stack):
        for call in (
            lambda: search(impatient, "harbor", corpus=corpus_name),
            lambda: fetch(impatient, "harbor", corpus=corpus_name),
        ):
            with pytest.raises(OperationalError) as raised:
                call()
            assert isinstance(raised.value.orig, psycopg.errors.QueryCanceled)
            assert "statement timeout" in str(raised.value.orig)
    # Unblocked, the same reads answer.
    assert [hit["id"] for hit in search(impatient, "harbor", corpus=corpus_name).value] == [
        "harbor"
    ]
