"""Per-app state: settings, the token, repositories, and a lazily connected EpisodeService."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request

from dllmflow.api.auth import SessionStore
from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetterQueue, progress_stream
from dllmflow.workflows.service import EpisodeService

API_OUTAGE_S = 10.0  # how long one API request rides out an unreachable Temporal


class TemporalUnavailable(RuntimeError):
    pass


@dataclass
class ApiState:
    settings: Settings
    token: str
    sessions: SessionStore = field(default_factory=SessionStore, init=False)
    episodes: EpisodeRepository = field(init=False)
    checkpoints: CheckpointStore = field(init=False)
    dlq: DeadLetterQueue = field(init=False)
    _service: EpisodeService | None = field(default=None, init=False)
    _redis: aioredis.Redis | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.episodes = EpisodeRepository(self.settings)
        self.checkpoints = CheckpointStore(self.settings)
        self.dlq = DeadLetterQueue(self.settings)

    async def service(self) -> EpisodeService:
        """Connect to Temporal on first use, so read-only pages work while it is down."""
        async with self._lock:
            if self._service is None:
                try:
                    # A request is answered within seconds: a longer outage fails the start
                    # (the row says so, retry starts it) instead of holding the connection.
                    self._service = await EpisodeService.connect(
                        self.settings, outage_s=API_OUTAGE_S
                    )
                except Exception as exc:
                    raise TemporalUnavailable(
                        f"Temporal is not reachable at {self.settings.effective_temporal_address}"
                        f" (DLLMFLOW_TEMPORAL_ADDRESS): {exc}"
                    ) from exc
            return self._service

    async def read_progress(
        self, episode_id: str, after: str, block_ms: int | None, count: int = 500
    ) -> list[tuple[str, dict[str, Any]]]:
        """ProgressStream.read without holding a thread while it waits (one per SSE client)."""
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self.settings.effective_redis_url, decode_responses=True
            )
        reply = await self._redis.xread(
            {progress_stream(episode_id): after}, count=count, block=block_ms
        )
        return [
            (entry_id, json.loads(fields["data"]))
            for _stream, entries in reply or []
            for entry_id, fields in entries
        ]

    async def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None


def api_state(request: Request) -> ApiState:
    return request.app.state.api
