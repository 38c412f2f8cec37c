"""GET /api/episodes/{id}/events: the episode's progress stream as Server-Sent Events.

Each Redis stream entry becomes one SSE event (its name is the progress event's: started,
model_progress, turn, tool, finished, dead_lettered, ...; its id is the stream entry id, so a
reconnecting EventSource resumes with Last-Event-ID). The stream ends with an "end" event once
the episode is finished and nothing more is queued for it ("stream_error" if Redis or
Postgres became unreachable mid-stream).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dllmflow.api.deps import require_token
from dllmflow.api.state import ApiState, api_state
from dllmflow.store.models import EpisodeStatus

router = APIRouter(prefix="/api/episodes", tags=["episodes"], dependencies=[Depends(require_token)])

log = logging.getLogger(__name__)
STREAM_ID = r"^\d+-\d+$"
BLOCK_MS = 2000  # how long one read waits for new events before re-checking the episode
SETTLE_MS = 300  # after the episode finished: a last wait for its final events
PING_S = 15


def sse(entry_id: str | None, event: str, data: dict[str, Any]) -> dict[str, str]:
    message = {"event": event, "data": json.dumps(data, default=str)}
    if entry_id:
        message["id"] = entry_id
    return message


async def follow(
    state: ApiState, request: Request, episode_id: str, after: str
) -> AsyncIterator[dict[str, str]]:
    try:
        async for message in _follow(state, request, episode_id, after):
            yield message
    except (redis.exceptions.ConnectionError, sqlalchemy.exc.OperationalError) as exc:
        # Headers are already sent: say so in the stream; the client may reconnect.
        log.warning("event stream for %s stopped: %s", episode_id, exc)
        yield sse(None, "stream_error", {"error": f"store unavailable: {exc.__class__.__name__}"})


async def _follow(
    state: ApiState, request: Request, episode_id: str, after: str
) -> AsyncIterator[dict[str, str]]:
    cursor = after
    episode = await run_in_threadpool(state.episodes.get, episode_id)
    finished = episode.status in EpisodeStatus.FINISHED
    while not await request.is_disconnected():
        # A finished episode only has its backlog left: don't wait for more.
        events = await state.read_progress(episode_id, cursor, None if finished else BLOCK_MS)
        for entry_id, data in events:
            cursor = entry_id
            yield sse(entry_id, str(data.get("event") or "message"), data)
        if events:
            continue
        episode = await run_in_threadpool(state.episodes.get, episode_id)
        if episode.status not in EpisodeStatus.FINISHED:
            finished = False  # retried: running again
            continue
        # Finished: its last events are published right after the status is written.
        late = await state.read_progress(episode_id, cursor, SETTLE_MS)
        for entry_id, data in late:
            cursor = entry_id
            yield sse(entry_id, str(data.get("event") or "message"), data)
        if late:
            finished = True
            continue
        yield sse(None, "end", {"episode_id": episode_id, "status": episode.status})
        return


@router.get(
    "/{episode_id}/events",
    summary="Live progress (Server-Sent Events) until the episode finishes",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    episode_id: str,
    request: Request,
    after: str = Query("0-0", pattern=STREAM_ID, description="stream id to resume after"),
    last_event_id: str | None = Header(None, pattern=STREAM_ID),
    state: ApiState = Depends(api_state),
) -> EventSourceResponse:
    await run_in_threadpool(state.episodes.get, episode_id)  # 404 before the stream starts
    return EventSourceResponse(
        follow(state, request, episode_id, last_event_id or after),
        ping=PING_S,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
