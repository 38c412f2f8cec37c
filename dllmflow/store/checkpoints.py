"""Whole-sample checkpoints: one row per activity output, found again by its idempotency key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from dllmflow.config import Settings
from dllmflow.store.db import transaction
from dllmflow.store.models import Checkpoint


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
    def of(cls, row: Checkpoint) -> StoredCheckpoint:
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

    def get(self, key: str) -> StoredCheckpoint | None:
        with transaction(self.settings) as session:
            row = session.scalar(select(Checkpoint).where(Checkpoint.idempotency_key == key))
            return StoredCheckpoint.of(row) if row else None

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
        """Insert in one transaction; if the key already exists keep the first write.

        Returns the stored row and whether this call wrote it (False: a concurrent or earlier
        attempt got there first, and its result is the one that counts).
        """
        with transaction(self.settings) as session:
            row = session.execute(
                insert(Checkpoint)
                .values(
                    episode_id=episode_id,
                    step=step,
                    kind=kind,
                    role=role,
                    idempotency_key=key,
                    payload=payload,
                    backend=backend,
                    model=model,
                    timings=timings or {},
                )
                .on_conflict_do_nothing()
                .returning(Checkpoint)
            ).scalar()
            if row is not None:
                return StoredCheckpoint.of(row), True
            row = session.scalar(select(Checkpoint).where(Checkpoint.idempotency_key == key))
            if row is None:
                raise RuntimeError(
                    f"checkpoint for {episode_id} step {step} {kind} conflicts with a different"
                    " live checkpoint at the same step (inputs changed under a running episode)"
                )
            return StoredCheckpoint.of(row), False

    def for_episode(
        self, episode_id: str, before_step: int | None = None
    ) -> list[StoredCheckpoint]:
        """Live checkpoints in step order (turn before its tool call within a step)."""
        query = select(Checkpoint).where(
            Checkpoint.episode_id == episode_id, Checkpoint.superseded_at.is_(None)
        )
        if before_step is not None:
            query = query.where(Checkpoint.step < before_step)
        with transaction(self.settings) as session:
            rows = session.scalars(query.order_by(Checkpoint.step, Checkpoint.id)).all()
            return [StoredCheckpoint.of(r) for r in rows]

    def at(self, episode_id: str, step: int, kind: str) -> StoredCheckpoint | None:
        with transaction(self.settings) as session:
            row = session.scalar(
                select(Checkpoint).where(
                    Checkpoint.episode_id == episode_id,
                    Checkpoint.step == step,
                    Checkpoint.kind == kind,
                    Checkpoint.superseded_at.is_(None),
                )
            )
            return StoredCheckpoint.of(row) if row else None

    def turn_at(self, episode_id: str, step: int) -> StoredCheckpoint | None:
        """The live model-turn checkpoint of a step (not its tool call)."""
        with transaction(self.settings) as session:
            row = session.scalar(
                select(Checkpoint).where(
                    Checkpoint.episode_id == episode_id,
                    Checkpoint.step == step,
                    Checkpoint.kind != "tool",
                    Checkpoint.superseded_at.is_(None),
                )
            )
            return StoredCheckpoint.of(row) if row else None

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
