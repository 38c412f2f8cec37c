"""Fixtures for the corpus and tool tests: every test gets its own corpus in the shared database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dllmflow.config import Settings
from dllmflow.store.db import get_engine


@pytest.fixture
def corpus_name(stack: Settings) -> Iterator[str]:
    """A fresh corpus name, emptied again after the test."""
    from dllmflow.store.corpus import delete_corpus

    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    delete_corpus(stack, name)


def doc(doc_id: str, text: str, title: str | None = None) -> dict[str, str]:
    return {
        "id": doc_id,
        "title": title or f"Document {doc_id}",
        "url": f"https://corpus.example.org/{doc_id}",
        "text": text,
    }


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[Iterable[Any]], Path]:
    """Write lines (dicts as JSON, str and bytes verbatim) to a .jsonl file; returns its path."""

    def write(lines: Iterable[Any]) -> Path:
        path = tmp_path / f"corpus-{uuid.uuid4().hex[:6]}.jsonl"
        with path.open("wb") as f:
            for line in lines:
                if isinstance(line, dict):
                    line = json.dumps(line)
                if isinstance(line, str):
                    line = line.encode("utf-8")
                f.write(line.rstrip(b"\n") + b"\n")
        return path

    return write


@contextmanager
def documents_locked(settings: Settings, idle_s: float = 5.0) -> Iterator[None]:
    """Another session holds an ACCESS EXCLUSIVE lock on `documents` (a migration, a VACUUM
    FULL). Postgres ends that session after `idle_s` idle in its transaction, so a read that no
    statement timeout stops still returns (and the test fails instead of hanging)."""
    holder = get_engine(settings).connect()
    holder.exec_driver_sql(f"SET idle_in_transaction_session_timeout = {int(idle_s * 1000)}")
    holder.exec_driver_sql("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        try:
            holder.rollback()
        except Exception:  # the session was ended by the idle timeout: drop it from the pool
            holder.invalidate()
        holder.close()
