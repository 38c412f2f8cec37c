"""Read-only queries the repositories do not offer (superseded checkpoints, eval runs)."""

from __future__ import annotations

from sqlalchemy import select

from dllmflow.config import Settings
from dllmflow.store.db import transaction
from dllmflow.store.models import Checkpoint, EvalRun


class NotFound(LookupError):
    pass


def checkpoint(settings: Settings, episode_id: str, checkpoint_id: int) -> Checkpoint:
    """Any checkpoint of the episode, superseded ones included (they stay for the record)."""
    with transaction(settings) as session:
        row = session.scalar(
            select(Checkpoint).where(
                Checkpoint.id == checkpoint_id, Checkpoint.episode_id == episode_id
            )
        )
        if row is None:
            raise NotFound(f"episode {episode_id!r} has no checkpoint {checkpoint_id}")
        return row


def eval_runs(settings: Settings, limit: int = 50) -> list[EvalRun]:
    with transaction(settings) as session:
        query = select(EvalRun).order_by(EvalRun.created_at.desc()).limit(limit)
        return list(session.scalars(query).all())


def eval_run(settings: Settings, run_id: str) -> EvalRun:
    with transaction(settings) as session:
        row = session.get(EvalRun, run_id)
        if row is None:
            raise NotFound(f"no eval run with id {run_id!r}")
        return row
