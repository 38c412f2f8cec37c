"""/api/episodes: submit, list, inspect, retry, replay, cancel."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from dllmflow.api import queries
from dllmflow.api.audit import audited
from dllmflow.api.deps import require_token
from dllmflow.api.errors import Conflict
from dllmflow.api.schemas import (
    CheckpointOut,
    EpisodeOut,
    EpisodeSummary,
    ReplayEpisode,
    RetryEpisode,
    StatusName,
    SubmitEpisode,
    TimelineTurn,
)
from dllmflow.api.state import ApiState, api_state
from dllmflow.api.views import layout_waterfall, preview, temporal_url, timeline, waterfall_steps
from dllmflow.store.episodes import EpisodeNotFound
from dllmflow.store.models import Episode, EpisodeStatus

router = APIRouter(prefix="/api/episodes", tags=["episodes"], dependencies=[Depends(require_token)])


def episode_out(state: ApiState, episode: Episode) -> EpisodeOut:
    out = EpisodeOut.model_validate(episode)
    out.temporal_url = temporal_url(state.settings, episode)
    return out


def idempotent_id(actor: str, key: str) -> str:
    """Same caller + same Idempotency-Key -> same episode id, so a retried POST is harmless."""
    return "ep-" + hashlib.sha256(f"{actor}\0{key}".encode()).hexdigest()[:16]


@router.post("", status_code=201, response_model=EpisodeOut, summary="Submit an episode")
async def submit(
    body: SubmitEpisode,
    request: Request,
    response: Response,
    idempotency_key: str | None = Header(None, max_length=200),
    state: ApiState = Depends(api_state),
) -> EpisodeOut:
    episode_id = None
    if idempotency_key:
        episode_id = idempotent_id(request.state.principal.actor, idempotency_key)
        try:
            existing = await run_in_threadpool(state.episodes.get, episode_id)
        except EpisodeNotFound:
            pass
        else:
            response.status_code = 200  # already submitted under this key
            # A first request whose workflow never started: this one starts it.
            await (await state.service()).ensure_started(existing)
            return episode_out(state, await run_in_threadpool(state.episodes.get, episode_id))
    service = await state.service()
    payload: dict[str, Any] = {"policy": body.policy, "question": preview(body.question, 200)}
    if body.budgets:
        payload["budgets"] = body.budgets.given()
    async with audited(request, "episode.submit", target=episode_id, payload=payload) as entry:
        budgets = body.budgets.to_budgets() if body.budgets else None
        try:
            episode = await service.submit(
                body.question,
                body.policy,
                budgets,
                question_record=body.question_record,
                episode_id=episode_id,
            )
        except IntegrityError:
            if episode_id is None:
                raise
            # A concurrent request with the same Idempotency-Key won the race.
            episode = await run_in_threadpool(state.episodes.get, episode_id)
            response.status_code = 200  # already submitted under this key
        entry.target = episode.id
    return episode_out(state, episode)


@router.get("", response_model=list[EpisodeSummary], summary="List episodes, newest first")
def list_episodes(
    status: StatusName | None = Query(None, description="only episodes in this status"),
    limit: int = Query(50, ge=1, le=500),
    state: ApiState = Depends(api_state),
) -> list[Episode]:
    return state.episodes.list(status=status, limit=limit)


@router.get("/{episode_id}", response_model=EpisodeOut)
def get_episode(episode_id: str, state: ApiState = Depends(api_state)) -> EpisodeOut:
    return episode_out(state, state.episodes.get(episode_id))


@router.get(
    "/{episode_id}/turns",
    response_model=list[TimelineTurn],
    summary="The turn timeline, one row per step (model turn + its tool call)",
)
def get_turns(episode_id: str, state: ApiState = Depends(api_state)) -> list[TimelineTurn]:
    state.episodes.get(episode_id)
    return timeline(state.checkpoints.for_episode(episode_id))


@router.get("/{episode_id}/waterfall", summary="Per-step latency waterfall in seconds")
def get_waterfall(episode_id: str, state: ApiState = Depends(api_state)) -> dict[str, Any]:
    episode = state.episodes.get(episode_id)
    steps, provisional = waterfall_steps(
        episode, timeline(state.checkpoints.for_episode(episode_id))
    )
    chart = layout_waterfall(steps, provisional)
    return {
        "provisional": provisional,
        "total_s": chart.total_s,
        "by_segment": chart.by_segment,
        "steps": [
            {
                "step": s.step,
                "role": s.role,
                "backend": s.backend,
                "tool": s.tool,
                "timings": s.timings,
                "tool_start": s.tool_start,
                "overlap": s.overlap,
            }
            for s in steps
        ],
    }


@router.get(
    "/{episode_id}/checkpoints/{checkpoint_id}",
    response_model=CheckpointOut,
    summary="One whole checkpoint (superseded ones included)",
)
def get_checkpoint(
    episode_id: str, checkpoint_id: int, state: ApiState = Depends(api_state)
) -> Any:
    return queries.checkpoint(state.settings, episode_id, checkpoint_id)


@router.get("/{episode_id}/history", summary="The workflow's Temporal event history")
async def get_history(episode_id: str, state: ApiState = Depends(api_state)) -> list[dict]:
    await run_in_threadpool(state.episodes.get, episode_id)
    return await (await state.service()).history(episode_id)


@router.post(
    "/{episode_id}/retry",
    response_model=EpisodeOut,
    summary="Continue a failed or dead-lettered episode from its last checkpoint",
)
async def retry(
    episode_id: str,
    request: Request,
    body: RetryEpisode | None = None,
    state: ApiState = Depends(api_state),
) -> EpisodeOut:
    await run_in_threadpool(state.episodes.get, episode_id)
    overrides = body.budgets.given() if body and body.budgets else {}
    service = await state.service()
    async with audited(request, "episode.retry", episode_id, {"budgets": overrides}):
        try:
            episode = await service.retry(episode_id, **overrides)
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
    return episode_out(state, episode)


@router.post(
    "/{episode_id}/replay",
    status_code=201,
    response_model=EpisodeOut,
    summary="A new episode reusing checkpoints before from_step, then recomputing",
)
async def replay(
    episode_id: str, body: ReplayEpisode, request: Request, state: ApiState = Depends(api_state)
) -> EpisodeOut:
    await run_in_threadpool(state.episodes.get, episode_id)
    service = await state.service()
    payload = {"from_step": body.from_step, "policy": body.policy}
    async with audited(request, "episode.replay", episode_id, payload) as entry:
        episode = await service.replay(episode_id, body.from_step, body.policy)
        entry.extra = {"replay_episode_id": episode.id}
    return episode_out(state, episode)


@router.post("/{episode_id}/cancel", status_code=202, summary="Ask the workflow to cancel")
async def cancel(
    episode_id: str, request: Request, state: ApiState = Depends(api_state)
) -> dict[str, str]:
    service = await state.service()
    async with audited(request, "episode.cancel", episode_id):
        episode = await run_in_threadpool(state.episodes.get, episode_id)
        if episode.status in EpisodeStatus.FINISHED:
            raise Conflict(f"episode {episode_id} already finished ({episode.status})")
        await service.cancel(episode_id)
    return {"episode_id": episode_id, "status": "cancelling"}
