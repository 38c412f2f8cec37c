"""Per-app state: settings, the token, repositories, and a lazily connected EpisodeService."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetterQueue, ProgressStream
from dllmflow.workflows.service import EpisodeService


class TemporalUnavailable(RuntimeError):
    pass


@dataclass
class ApiState:
    settings: Settings
    token: str
    episodes: EpisodeRepository = field(init=False)
    checkpoints: CheckpointStore = field(init=False)
    dlq: DeadLetterQueue = field(init=False)
    progress: ProgressStream = field(init=False)
    _service: EpisodeService | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.episodes = EpisodeRepository(self.settings)
        self.checkpoints = CheckpointStore(self.settings)
        self.dlq = DeadLetterQueue(self.settings)
        self.progress = ProgressStream(self.settings)

    async def service(self) -> EpisodeService:
        """Connect to Temporal on first use, so read-only pages work while it is down."""
        async with self._lock:
            if self._service is None:
                try:
                    self._service = await EpisodeService.connect(self.settings)
                except Exception as exc:
                    raise TemporalUnavailable(
                        f"Temporal is not reachable at {self.settings.effective_temporal_address}"
                        f" (DLLMFLOW_TEMPORAL_ADDRESS): {exc}"
                    ) from exc
            return self._service


def api_state(request: Request) -> ApiState:
    return request.app.state.api
