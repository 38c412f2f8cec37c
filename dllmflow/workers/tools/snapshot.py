"""One consistent read of the corpus: the version and the rows come from the same snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from dllmflow.config import Settings
from dllmflow.store.db import get_engine


@contextmanager
def corpus_snapshot(settings: Settings) -> Iterator[Connection]:
    """A read-only REPEATABLE READ transaction, so a concurrent load can't split a result
    between two corpus versions. A statement running longer than
    settings.corpus_statement_timeout_ms is cancelled (QueryCanceled), so a runaway query or a
    blocked table becomes an error instead of a stuck activity."""
    connection = get_engine(settings).connect()
    with connection.execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        # One round trip for both settings (no parameters, so psycopg sends them as one query).
        timeout_ms = int(settings.corpus_statement_timeout_ms)
        conn.exec_driver_sql(
            f"SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {timeout_ms}"
        )
        yield conn


def clean_text(value: str) -> str:
    """What Postgres can take: no NUL characters and no unpaired surrogates."""
    value = value.replace("\x00", " ")
    return value.encode("utf-8", "replace").decode("utf-8")
