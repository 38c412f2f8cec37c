"""/api/dlq: list, retry and purge dead-lettered work."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from dllmflow.api.audit import audited
from dllmflow.api.deps import require_token
from dllmflow.api.errors import Conflict
from dllmflow.api.queries import NotFound
from dllmflow.api.routes.episodes import episode_out
from dllmflow.api.schemas import DeadLetterOut, EpisodeOut, PurgeResult, RetryEpisode
from dllmflow.api.state import ApiState, api_state

router = APIRouter(prefix="/api/dlq", tags=["dead letters"], dependencies=[Depends(require_token)])

EntryId = Path(pattern=r"^\d+-\d+$", description="the dead-letter stream entry id")


@router.get("", response_model=list[DeadLetterOut], summary="Dead-lettered work, oldest first")
def list_dead_letters(
    limit: int = Query(100, ge=1, le=10_000), state: ApiState = Depends(api_state)
) -> list[DeadLetterOut]:
    return [DeadLetterOut(**asdict(letter)) for letter in state.dlq.list(limit)]


@router.post(
    "/{entry_id}/retry",
    response_model=EpisodeOut,
    summary="Retry the entry's episode from its last good checkpoint",
)
async def retry_dead_letter(
    request: Request,
    entry_id: str = EntryId,
    body: RetryEpisode | None = None,
    state: ApiState = Depends(api_state),
) -> EpisodeOut:
    """The body's budgets (all optional) replace the episode's: a budget that dead-lettered
    the work (denoising steps, turns) is retried larger, not with the same limit again."""
    letter = await run_in_threadpool(state.dlq.get, entry_id)
    if letter is None:
        raise NotFound(f"no dead-letter entry {entry_id!r}")
    overrides = body.budgets.given() if body and body.budgets else {}
    service = await state.service()
    payload = {
        "episode_id": letter.episode_id,
        "step": letter.step,
        "kind": letter.kind,
        "budgets": overrides,
    }
    async with audited(request, "dlq.retry", entry_id, payload):
        try:
            episode = await service.retry(letter.episode_id, **overrides)
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
    return episode_out(state, episode)


@router.delete("", response_model=PurgeResult, summary="Delete every dead-letter entry")
async def purge_dead_letters(request: Request, state: ApiState = Depends(api_state)) -> PurgeResult:
    depth = await run_in_threadpool(state.dlq.depth)
    async with audited(request, "dlq.purge", "dlq", {"depth": depth}) as entry:
        purged = await run_in_threadpool(state.dlq.purge)
        entry.extra = {"purged": purged}
    return PurgeResult(purged=purged)
