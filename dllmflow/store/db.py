"""Engine and session factory for the configured Postgres."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from dllmflow.config import Settings


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(settings: Settings) -> Engine:
    return _engine(settings.effective_database_url)


@lru_cache(maxsize=8)
def _autocommit_engine(url: str) -> Engine:
    # A pool of its own without pre-ping: hot-path statements skip that round trip, and a pooled
    # connection that went stale (Postgres restarted) is retried once by run_autocommit.
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_size=5, max_overflow=10)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(get_engine(settings), expire_on_commit=False)


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session whose work commits on success and rolls back entirely on any error."""
    with session_factory(settings).begin() as session:
        yield session


T = TypeVar("T")


def run_autocommit(settings: Settings, work: Callable[[Connection], T]) -> T:
    """Run `work` on a connection where every statement is its own transaction.

    For hot paths made of single statements (a checkpoint INSERT, a keyed SELECT, an UPDATE to
    given values): Postgres runs each one atomically, and skipping BEGIN/COMMIT (and the pool's
    pre-ping) saves three round trips per statement. `work` must be safe to run twice: if the
    pooled connection was stale, it fails on its first statement and runs again on a fresh one.
    """
    engine = _autocommit_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            return work(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with engine.connect() as conn:  # the pool dropped every connection older than the failure
        return work(conn)
