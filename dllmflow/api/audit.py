"""Audit log of mutating API and CLI calls (table created by migrations/versions/0003_audit.py).

`audited(...)` (API) and `audited_cli(...)` (CLI) write the row before the action (outcome
"pending") and complete it after, so an action that cannot be audited is refused (503 / a
one-line CLI error) rather than run unrecorded.
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from starlette.concurrency import run_in_threadpool

from dllmflow.api.auth import Principal
from dllmflow.config import Settings
from dllmflow.store.db import transaction

log = logging.getLogger(__name__)

audit_log = Table(
    "audit_log",
    MetaData(),
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), server_default=func.now()),
    Column("actor", String(64), nullable=False),
    Column("via", String(16), nullable=False),
    Column("client", String(64)),
    Column("action", String(64), nullable=False),
    Column("target", String(200)),
    Column("payload", JSONB, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
    Column("finished_at", DateTime(timezone=True)),
)


class AuditUnavailable(RuntimeError):
    pass


@dataclass
class AuditEntry:
    """Handed to the route so it can name the target once it is known (e.g. a new episode)."""

    id: int
    target: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def _begin(settings: Settings, values: dict[str, Any]) -> int:
    with transaction(settings) as session:
        return int(
            session.execute(
                insert(audit_log).values(**values).returning(audit_log.c.id)
            ).scalar_one()
        )


def _finish(settings: Settings, entry: AuditEntry, outcome: str, detail: str | None) -> None:
    values: dict[str, Any] = {
        "outcome": outcome,
        "detail": detail,
        "finished_at": func.now(),
        "target": entry.target,
    }
    if entry.extra:
        values["payload"] = audit_log.c.payload.op("||")(literal(entry.extra, JSONB))
    with transaction(settings) as session:
        session.execute(update(audit_log).where(audit_log.c.id == entry.id).values(**values))


@asynccontextmanager
async def audited(
    request: Request,
    action: str,
    target: str | None = None,
    payload: dict[str, Any] | None = None,
) -> AsyncIterator[AuditEntry]:
    settings: Settings = request.app.state.api.settings
    principal: Principal = request.state.principal
    values = {
        "actor": principal.actor,
        "via": principal.via,
        "client": request.client.host if request.client else None,
        "action": action,
        "target": target,
        "payload": payload or {},
        "outcome": "pending",
    }
    try:
        entry_id = await run_in_threadpool(_begin, settings, values)
    except Exception as exc:
        raise AuditUnavailable(
            f"the audit log could not be written ({exc.__class__.__name__})"
            "; the action was not performed"
        ) from exc
    entry = AuditEntry(entry_id, target)
    try:
        yield entry
    except BaseException as exc:
        await _safe_finish(settings, entry, "error", str(exc)[:2000] or exc.__class__.__name__)
        raise
    await _safe_finish(settings, entry, "ok", None)


async def _safe_finish(settings: Settings, entry: AuditEntry, outcome: str, detail: str | None):
    try:
        await run_in_threadpool(_finish, settings, entry, outcome, detail)
    except Exception:  # the "pending" row already records who tried what
        log.exception("could not complete audit entry %s", entry.id)


def cli_actor() -> str:
    """Who ran a CLI command: the local user (the CLI needs no API token)."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME/USER
        user = "unknown"
    return f"cli:{user}"[:64]


@contextmanager
def audited_cli(
    settings: Settings,
    action: str,
    target: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Iterator[AuditEntry]:
    """The CLI's twin of `audited`: same table and action names, via "cli"."""
    values = {
        "actor": cli_actor(),
        "via": "cli",
        "client": socket.gethostname()[:64] or None,
        "action": action,
        "target": target,
        "payload": payload or {},
        "outcome": "pending",
    }
    try:
        entry_id = _begin(settings, values)
    except Exception as exc:
        raise ConnectionError(
            f"the audit log in Postgres could not be written ({exc.__class__.__name__})"
            "; the action was not performed"
        ) from exc
    entry = AuditEntry(entry_id, target)
    try:
        yield entry
    except BaseException as exc:
        _finish_quietly(settings, entry, "error", str(exc)[:2000] or exc.__class__.__name__)
        raise
    _finish_quietly(settings, entry, "ok", None)


def _finish_quietly(settings: Settings, entry: AuditEntry, outcome: str, detail: str | None):
    try:
        _finish(settings, entry, outcome, detail)
    except Exception:
        log.exception("could not complete audit entry %s", entry.id)


def recent(settings: Settings, limit: int = 100, target: str | None = None) -> list[dict[str, Any]]:
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if target:
        query = query.where(audit_log.c.target == target)
    with transaction(settings) as session:
        return [dict(row._mapping) for row in session.execute(query)]
