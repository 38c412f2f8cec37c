"""Engine and session factory for the configured Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from dllmflow.config import Settings


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(settings: Settings) -> Engine:
    return _engine(settings.effective_database_url)


@lru_cache(maxsize=8)
def _autocommit_engine(url: str) -> Engine:
    # Same pool as _engine(url); connections are switched to autocommit while checked out.
    return _engine(url).execution_options(isolation_level="AUTOCOMMIT")


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(get_engine(settings), expire_on_commit=False)


@contextmanager
def transaction(settings: Settings) -> Iterator[Session]:
    """A session whose work commits on success and rolls back entirely on any error."""
    with session_factory(settings).begin() as session:
        yield session


@contextmanager
def autocommit(settings: Settings) -> Iterator[Connection]:
    """A connection on which every statement is its own transaction.

    For hot paths made of single statements (a checkpoint INSERT, a keyed SELECT): Postgres runs
    each one atomically, and skipping BEGIN/COMMIT saves two round trips per statement.
    """
    with _autocommit_engine(settings.effective_database_url).connect() as conn:
        yield conn
