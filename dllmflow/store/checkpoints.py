"""Whole-sample checkpoints: one row per activity output, found again by its idempotency key.

Reads and the checkpoint INSERT are single statements on an autocommit connection (Core, no ORM
unit of work): each is atomic on its own, and an activity pays one round trip per statement.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, case, func, select, update
from sqlalchemy.dialects.postgresql import insert

from dllmflow.config import Settings
from dllmflow.store.db import run_autocommit, transaction
from dllmflow.store.models import Checkpoint

CHECKPOINTS = Checkpoint.__table__
LIVE = CHECKPOINTS.c.superseded_at.is_(None)
# Within a step: the model turn, then a P-ReAct turn's early action, then the tool call, in
# whatever order they were written (a P-ReAct tool call can commit before its turn).
KIND_ORDER = case((CHECKPOINTS.c.kind == "action", 1), (CHECKPOINTS.c.kind == "tool", 2), else_=0)


def content_hash(value: Any) -> str:
    """A stable hash of JSON-able inputs (sorted keys), for attempt-independent keys."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def idempotency_key(episode_id: str, step: int, kind: str, inputs_hash: str) -> str:
    return f"{episode_id}/{step}/{kind}/{inputs_hash}"


@dataclass(frozen=True)
class StoredCheckpoint:
    id: int
    episode_id: str
    step: int
    kind: str
    role: str | None
    idempotency_key: str
    payload: dict[str, Any]
    backend: str | None
    model: str | None
    timings: dict[str, Any]

    @classmethod
    def of(cls, row: Checkpoint | Row[Any]) -> StoredCheckpoint:
        return cls(
            row.id,
            row.episode_id,
            row.step,
            row.kind,
            row.role,
            row.idempotency_key,
            row.payload,
            row.backend,
            row.model,
            row.timings,
        )


class CheckpointStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _one(self, *where: Any) -> StoredCheckpoint | None:
        row = run_autocommit(
            self.settings, lambda conn: conn.execute(select(CHECKPOINTS).where(*where)).first()
        )
        return StoredCheckpoint.of(row) if row else None

    def _all(self, *where: Any) -> list[StoredCheckpoint]:
        query = (
            select(CHECKPOINTS)
            .where(*where)
            .order_by(CHECKPOINTS.c.step, KIND_ORDER, CHECKPOINTS.c.id)
        )
        rows = run_autocommit(self.settings, lambda conn: conn.execute(query).all())
        return [StoredCheckpoint.of(r) for r in rows]

    def get(self, key: str) -> StoredCheckpoint | None:
        return self._one(CHECKPOINTS.c.idempotency_key == key)

    def save(
        self,
        *,
        episode_id: str,
        step: int,
        kind: str,
        key: str,
        payload: dict[str, Any],
        role: str | None = None,
        backend: str | None = None,
        model: str | None = None,
        timings: dict[str, Any] | None = None,
    ) -> tuple[StoredCheckpoint, bool]:
        """Insert as one atomic statement; if the key already exists keep the first write.

        Returns the stored row and whether this call wrote it (False: a concurrent or earlier
        attempt got there first, and its result is the one that counts).
        """
        values = {
            "episode_id": episode_id,
            "step": step,
            "kind": kind,
            "role": role,
            "idempotency_key": key,
            "payload": payload,
            "backend": backend,
            "model": model,
            "timings": timings or {},
        }

        def write(conn: Connection) -> tuple[Row[Any] | None, bool]:
            row = conn.execute(
                insert(CHECKPOINTS)
                .values(**values)
                .on_conflict_do_nothing()
                .returning(*CHECKPOINTS.c)
            ).first()
            if row is not None:
                return row, True
            # The INSERT wrote nothing; the row that won is committed, so a plain read sees it.
            query = select(CHECKPOINTS).where(CHECKPOINTS.c.idempotency_key == key)
            return conn.execute(query).first(), False

        # Safe to repeat (run_autocommit may): a second INSERT of the same key is a no-op.
        row, wrote = run_autocommit(self.settings, write)
        if row is None:
            raise RuntimeError(
                f"checkpoint for {episode_id} step {step} {kind} conflicts with a different"
                " live checkpoint at the same step (inputs changed under a running episode)"
            )
        return StoredCheckpoint.of(row), wrote

    def for_episode(
        self, episode_id: str, before_step: int | None = None
    ) -> list[StoredCheckpoint]:
        """Live checkpoints in step order (turn, early action, tool call within a step)."""
        where = [CHECKPOINTS.c.episode_id == episode_id, LIVE]
        if before_step is not None:
            where.append(CHECKPOINTS.c.step < before_step)
        return self._all(*where)

    def at_step(self, episode_id: str, step: int) -> list[StoredCheckpoint]:
        """The live checkpoints of one step (its model turn, then its tool call if any)."""
        return self._all(CHECKPOINTS.c.episode_id == episode_id, CHECKPOINTS.c.step == step, LIVE)

    def at(self, episode_id: str, step: int, kind: str) -> StoredCheckpoint | None:
        return self._one(
            CHECKPOINTS.c.episode_id == episode_id,
            CHECKPOINTS.c.step == step,
            CHECKPOINTS.c.kind == kind,
            LIVE,
        )

    def turn_at(self, episode_id: str, step: int) -> StoredCheckpoint | None:
        """The live model-turn checkpoint of a step (not its tool call or early action)."""
        return self._one(
            CHECKPOINTS.c.episode_id == episode_id,
            CHECKPOINTS.c.step == step,
            CHECKPOINTS.c.kind.not_in(("tool", "action")),
            LIVE,
        )

    def supersede_from(self, episode_id: str, step: int) -> int:
        """Retire live checkpoints at `step` and later (kept, renamed) so they are recomputed."""
        with transaction(self.settings) as session:
            result = session.execute(
                update(Checkpoint)
                .where(
                    Checkpoint.episode_id == episode_id,
                    Checkpoint.step >= step,
                    Checkpoint.superseded_at.is_(None),
                )
                .values(
                    superseded_at=func.now(),
                    idempotency_key=Checkpoint.idempotency_key
                    + "~"
                    + func.cast(Checkpoint.id, Checkpoint.idempotency_key.type),
                )
            )
            return result.rowcount or 0
