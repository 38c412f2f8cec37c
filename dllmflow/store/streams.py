"""Redis streams: the dead-letter queue and per-episode progress events."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from dllmflow.config import Settings

DLQ_STREAM = "dllmflow:dlq"
PROGRESS_MAXLEN = 5000


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.effective_redis_url, decode_responses=True)


@dataclass
class DeadLetter:
    episode_id: str
    step: int
    kind: str
    error: str
    attempts: int
    last_checkpoint_id: int | None
    policy: str
    budgets: dict[str, Any]
    at: float
    id: str = ""  # the stream entry id

    def to_fields(self) -> dict[str, str]:
        fields = asdict(self)
        fields.pop("id")
        return {k: json.dumps(v) for k, v in fields.items()}

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> DeadLetter:
        return cls(id=entry_id, **{k: json.loads(v) for k, v in fields.items()})


STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")  # Redis stream entry ids: <ms>-<seq>


class DeadLetterQueue:
    def __init__(self, settings: Settings) -> None:
        self.redis = redis_client(settings)

    def add(self, letter: DeadLetter) -> str:
        return self.redis.xadd(DLQ_STREAM, letter.to_fields())

    def list(self, count: int = 100) -> list[DeadLetter]:
        return [DeadLetter.from_entry(i, f) for i, f in self.redis.xrange(DLQ_STREAM, count=count)]

    def get(self, entry_id: str) -> DeadLetter | None:
        """The entry with this stream id, or None (also for a string that is no stream id:
        Redis would answer it with a protocol error)."""
        if not STREAM_ID.fullmatch(entry_id):
            return None
        entries = self.redis.xrange(DLQ_STREAM, min=entry_id, max=entry_id)
        return DeadLetter.from_entry(*entries[0]) if entries else None

    def for_episode(self, episode_id: str) -> list[DeadLetter]:
        return [letter for letter in self.list(10_000) if letter.episode_id == episode_id]

    def remove(self, entry_id: str) -> bool:
        return bool(self.redis.xdel(DLQ_STREAM, entry_id))

    def purge(self) -> int:
        count = self.redis.xlen(DLQ_STREAM)
        self.redis.delete(DLQ_STREAM)
        return count

    def depth(self) -> int:
        return self.redis.xlen(DLQ_STREAM)


FINAL_EVENT = "finished"


def progress_stream(episode_id: str) -> str:
    return f"dllmflow:progress:{episode_id}"


class ProgressStream:
    """Live events of an episode (turns, tool calls, AR tokens, diffusion refinement passes)."""

    def __init__(self, settings: Settings) -> None:
        self.redis = redis_client(settings)
        self.ttl_s = settings.progress_ttl_s

    def publish(self, episode_id: str, kind: str, /, **data: Any) -> None:
        """Append an event; ``finished`` (an episode's last) starts the stream's expiry, any
        other event lifts it (a retried episode writes to its stream again). One round trip."""
        key = progress_stream(episode_id)
        payload = {**data, "event": kind, "at": time.time()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(
            key,
            {"data": json.dumps(payload, default=str)},
            maxlen=PROGRESS_MAXLEN,
            approximate=True,
        )
        if self.ttl_s and kind == FINAL_EVENT:
            pipe.expire(key, self.ttl_s)
        elif self.ttl_s:
            pipe.persist(key)
        pipe.execute()

    def read(
        self, episode_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 500
    ) -> list[tuple[str, dict[str, Any]]]:
        reply = self.redis.xread({progress_stream(episode_id): after}, count=count, block=block_ms)
        events = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append((entry_id, json.loads(fields["data"])))
        return events


def count_execution(settings: Settings, key: str, episode_id: str | None = None) -> int:
    """Record that real (non-cached) work starts for `key` (in Postgres: store.executions)."""
    from dllmflow.store.executions import start_execution

    return start_execution(settings, episode_id or key.split("/", 1)[0], key)


def executions(settings: Settings, key: str) -> int:
    """How many times the work behind `key` started (store.executions; kept here for callers)."""
    from dllmflow.store.executions import executions as counted

    return counted(settings, key)
