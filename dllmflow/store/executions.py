"""The execution counter: one Postgres row per idempotency key, incremented before the work runs.

A checkpoint records the count its own run saw. Work that ran again before its checkpoint
committed (a retry after a crash or timeout) shows as a count above 1; work that ran again after
its checkpoint committed, which must never happen, shows as a count above the checkpoint's.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from dllmflow.config import Settings
from dllmflow.store.db import run_autocommit
from dllmflow.store.models import Execution

EXECUTIONS = Execution.__table__


def start_execution(settings: Settings, episode_id: str, key: str) -> int:
    """Count one more run of the work behind `key`; returns the count including this run."""
    statement = (
        insert(EXECUTIONS)
        .values(idempotency_key=key, episode_id=episode_id, count=1)
        .on_conflict_do_update(
            index_elements=[EXECUTIONS.c.idempotency_key],
            set_={"count": EXECUTIONS.c.count + 1, "last_at": func.now()},
        )
        .returning(EXECUTIONS.c.count)
    )
    return int(run_autocommit(settings, lambda conn: conn.execute(statement).scalar_one()))


def executions(settings: Settings, key: str) -> int:
    """How many times the work behind `key` started (0: never, e.g. a copied checkpoint)."""
    query = select(EXECUTIONS.c.count).where(EXECUTIONS.c.idempotency_key == key)
    return int(run_autocommit(settings, lambda conn: conn.execute(query).scalar()) or 0)


def executions_for(settings: Settings, episode_ids: list[str]) -> dict[str, int]:
    """Every counted key of these episodes -> its count."""
    query = select(EXECUTIONS.c.idempotency_key, EXECUTIONS.c.count).where(
        EXECUTIONS.c.episode_id.in_(episode_ids)
    )
    rows = run_autocommit(settings, lambda conn: conn.execute(query).all())
    return {key: int(count) for key, count in rows}
