"""Episode rows: created on submit, moved through their statuses by the workflow's activities."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update

from dllmflow.config import Settings
from dllmflow.store.db import run_autocommit, transaction
from dllmflow.store.models import Episode, EpisodeStatus

MAX_QUESTION_CHARS = 4000


class EpisodeNotFound(LookupError):
    def __init__(self, episode_id: str) -> None:
        super().__init__(f"no episode with id {episode_id!r}")


def new_episode_id() -> str:
    return "ep-" + uuid.uuid4().hex[:16]


def validate_question(question: str, limit: int = MAX_QUESTION_CHARS) -> str:
    text = question.strip() if isinstance(question, str) else ""
    if not text:
        raise ValueError("question must be a non-empty string")
    if len(text) > limit:
        raise ValueError(f"question is {len(text)} characters; the limit is {limit}")
    return text


class EpisodeRepository:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def create(
        self,
        *,
        question: str,
        policy: str,
        budgets: dict[str, Any],
        question_record: dict[str, Any] | None = None,
        episode_id: str | None = None,
        parent_episode_id: str | None = None,
        replay_from_step: int | None = None,
        eval_run_id: str | None = None,
        task_queue: str | None = None,
    ) -> Episode:
        record = dict(question_record or {})
        episode = Episode(
            id=episode_id or new_episode_id(),
            question=validate_question(question),
            question_id=str(record["id"]) if record.get("id") is not None else None,
            question_record=record,
            policy=policy,
            status=EpisodeStatus.QUEUED,
            budgets=budgets,
            parent_episode_id=parent_episode_id,
            replay_from_step=replay_from_step,
            eval_run_id=eval_run_id,
            task_queue=task_queue,
        )
        episode.workflow_id = f"episode-{episode.id}"
        with transaction(self.settings) as session:
            session.add(episode)
        return episode

    def get(self, episode_id: str) -> Episode:
        with transaction(self.settings) as session:
            episode = session.get(Episode, episode_id)
            if episode is None:
                raise EpisodeNotFound(episode_id)
            return episode

    def list(
        self,
        status: str | None = None,
        limit: int = 50,
        eval_run_id: str | None = None,
        *,
        policy: str | None = None,
        text: str | None = None,
        offset: int = 0,
    ) -> list[Episode]:
        """Newest first; ``text`` matches inside the question (case-insensitive)."""
        query = select(Episode).order_by(Episode.created_at.desc(), Episode.id).limit(limit)
        if offset:
            query = query.offset(offset)
        if policy:
            query = query.where(Episode.policy == policy)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(Episode.question.ilike(pattern, escape="\\"))
        if status:
            if status not in EpisodeStatus.ALL:
                raise ValueError(
                    f"unknown status {status!r}; statuses: {', '.join(EpisodeStatus.ALL)}"
                )
            query = query.where(Episode.status == status)
        if eval_run_id:
            query = query.where(Episode.eval_run_id == eval_run_id)
        with transaction(self.settings) as session:
            return list(session.scalars(query).all())

    def update(self, episode_id: str, **values: Any) -> None:
        """One atomic UPDATE (autocommit: no BEGIN/COMMIT round trips on the activity path)."""
        if values.get("status") in EpisodeStatus.FINISHED:
            values.setdefault("finished_at", func.now())
        statement = update(Episode).where(Episode.id == episode_id).values(**values)
        # Safe to repeat (run_autocommit may): it sets the same values again.
        rowcount = run_autocommit(self.settings, lambda conn: conn.execute(statement).rowcount)
        if rowcount == 0:
            raise EpisodeNotFound(episode_id)

    def mark_not_started(self, episode_id: str, error: str) -> bool:
        """A `queued` row whose workflow did not start becomes `failed` with `error` (only if it
        is still queued: a workflow that did start after all moves the row on itself)."""
        statement = (
            update(Episode)
            .where(Episode.id == episode_id, Episode.status == EpisodeStatus.QUEUED)
            .values(status=EpisodeStatus.FAILED, error=error, finished_at=func.now())
        )
        return bool(run_autocommit(self.settings, lambda conn: conn.execute(statement).rowcount))

    def counts_by_status(self) -> dict[str, int]:
        with transaction(self.settings) as session:
            rows = session.execute(select(Episode.status, func.count()).group_by(Episode.status))
            return {status: count for status, count in rows}
