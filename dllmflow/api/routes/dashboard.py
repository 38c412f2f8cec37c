"""Server-rendered operator dashboard (Jinja2; small vanilla JS for live updates and buttons)."""

from __future__ import annotations

import asyncio
import hmac
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dllmflow.api import queries
from dllmflow.api.auth import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, CSRF_VALUE, token_matches
from dllmflow.api.deps import require_viewer, safe_next, set_session
from dllmflow.api.errors import error
from dllmflow.api.state import ApiState, api_state
from dllmflow.api.templating import TEMPLATES
from dllmflow.api.views import (
    eval_view,
    layout_waterfall,
    temporal_url,
    timeline,
    waterfall_steps,
)
from dllmflow.store.models import EpisodeStatus
from dllmflow.workflows.types import POLICIES

FAILED_LOGIN_DELAY_S = 0.5
MAX_LOGIN_BODY = 4096

public = APIRouter(include_in_schema=False)
router = APIRouter(include_in_schema=False, dependencies=[Depends(require_viewer)])
LIST_REFRESH_MS = 5000  # how often the episode list page refreshes its rows


@public.get("/login")
def login_form(request: Request, next: str | None = None, error: str | None = None) -> Response:
    return TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"next": safe_next(next), "error": error},
        status_code=401 if error else 200,
    )


@public.post("/login")
async def login(request: Request) -> Response:
    body = await request.body()
    form = parse_qs(body[:MAX_LOGIN_BODY].decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or [None])[0])
    token: str = request.app.state.api.token
    if not given or not token_matches(given, token):
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)  # slows guessing a weak configured token
        return TEMPLATES.TemplateResponse(
            request, "login.html", {"next": target, "error": "invalid token"}, status_code=401
        )
    response = RedirectResponse(target, status_code=303)
    set_session(response, request)
    return response


@public.post("/logout")
async def logout(request: Request) -> Response:
    """Revoke the session server-side. Needs the session's CSRF value (the form's hidden field)
    or the dashboard's header, so another local page cannot log the operator out."""
    sessions = request.app.state.api.sessions
    cookie = request.cookies.get(COOKIE_NAME)
    session = sessions.get(cookie) if cookie else None
    if session is not None:
        body = await request.body()
        form = parse_qs(body[:MAX_LOGIN_BODY].decode("utf-8", "replace"))
        given = (form.get(CSRF_FIELD) or [""])[0]
        by_form = bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
        if not by_form and request.headers.get(CSRF_HEADER) != CSRF_VALUE:
            return error(request, 403, f"logout needs the session's {CSRF_FIELD} form field")
        sessions.revoke(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/episodes", status_code=303)


@router.get("/episodes", response_class=HTMLResponse)
def episodes_page(
    request: Request,
    status: str | None = None,
    policy: str | None = None,
    q: str | None = Query(None, max_length=200, description="text inside the question"),
    eval_run: str | None = Query(None, max_length=64),
    page: int = Query(1, ge=1, le=10_000),
    limit: int = Query(100, ge=1, le=500),
    state: ApiState = Depends(api_state),
) -> Response:
    """Newest first, ``limit`` a page, filtered by status, policy, question text, eval run."""
    filters = {
        "status": status if status in EpisodeStatus.ALL else None,
        "policy": policy if policy in POLICIES else None,
        "q": (q or "").strip() or None,
        "eval_run": eval_run or None,
    }
    # One row more than a page says whether an older page exists.
    rows = state.episodes.list(
        status=filters["status"],
        limit=limit + 1,
        eval_run_id=filters["eval_run"],
        policy=filters["policy"],
        text=filters["q"],
        offset=(page - 1) * limit,
    )
    counts = state.episodes.counts_by_status()
    return TEMPLATES.TemplateResponse(
        request,
        "episodes.html",
        {
            "episodes": rows[:limit],
            "status": filters["status"],
            "filters": filters,
            "page": page,
            "has_older": len(rows) > limit,
            "query": {k: v for k, v in filters.items() if v} | {"limit": limit},
            "counts": counts,
            "refresh_ms": LIST_REFRESH_MS,
            "nav": "episodes",
        },
    )


def _episode_context(episode_id: str, state: ApiState) -> dict:
    episode = state.episodes.get(episode_id)
    turns = timeline(state.checkpoints.for_episode(episode_id))
    steps, provisional = waterfall_steps(episode, turns)
    metrics = episode.metrics or {}
    summary = {
        "turns": metrics.get("turns", len(turns)),
        "tool_calls": metrics.get("tool_calls", sum(1 for t in turns if t.tool)),
        "invalid_actions": metrics.get("invalid_actions", sum(1 for t in turns if not t.valid)),
    }
    wall = None
    if episode.finished_at and episode.created_at:
        wall = (episode.finished_at - episode.created_at).total_seconds()
    return {
        "episode": episode,
        "turns": turns,
        "chart": layout_waterfall(steps, provisional),
        "summary": summary,
        "wall_s": wall,
        "nav": "episodes",
        "temporal_url": temporal_url(state.settings, episode),
        "dead_letters": [d for d in state.dlq.list(1000) if d.episode_id == episode_id],
    }


@router.get("/episodes/{episode_id}", response_class=HTMLResponse)
def episode_page(episode_id: str, request: Request, state: ApiState = Depends(api_state)):
    return TEMPLATES.TemplateResponse(request, "episode.html", _episode_context(episode_id, state))


@router.get("/episodes/{episode_id}/body", response_class=HTMLResponse)
def episode_body(episode_id: str, request: Request, state: ApiState = Depends(api_state)):
    """The page's re-renderable part (counters, waterfall, timeline), fetched by the live
    view after each turn and tool call so the page never needs a reload."""
    return TEMPLATES.TemplateResponse(
        request, "_episode_body.html", _episode_context(episode_id, state)
    )


@router.get("/dlq", response_class=HTMLResponse)
def dlq_page(request: Request, state: ApiState = Depends(api_state)) -> Response:
    return TEMPLATES.TemplateResponse(
        request, "dlq.html", {"letters": state.dlq.list(1000), "nav": "dlq"}
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    target: str | None = Query(None, max_length=200),
    limit: int = Query(200, ge=1, le=1000),
    state: ApiState = Depends(api_state),
) -> Response:
    """Every write (CLI, API, dashboard): who, how, what, on what, and how it ended."""
    from dllmflow.api.audit import recent

    rows = recent(state.settings, limit, target or None)
    return TEMPLATES.TemplateResponse(
        request, "audit.html", {"rows": rows, "target": target or "", "nav": "audit"}
    )


@router.get("/stack", response_class=HTMLResponse)
async def stack_page(request: Request, state: ApiState = Depends(api_state)) -> Response:
    """Each component's health from a real query or ping, the model replicas on Ray, and links
    to the Temporal UI and the Ray dashboard."""
    from dllmflow.stack import manager
    from dllmflow.workers.serving import serving_status

    s = state.settings
    health = await asyncio.to_thread(manager.status, s)
    replicas, replica_error = [], None
    if any(h.name == "ray" and h.healthy for h in health):
        try:
            replicas = await asyncio.to_thread(serving_status, s)
        except Exception as exc:  # the page shows why instead of failing
            replica_error = f"{type(exc).__name__}: {exc}"
    links = {"Temporal UI": s.temporal_ui_url, "Ray dashboard": s.effective_ray_dashboard_url}
    return TEMPLATES.TemplateResponse(
        request,
        "stack.html",
        {
            "health": health,
            "replicas": replicas,
            "replica_error": replica_error,
            "links": {k: v for k, v in links.items() if v},
            "nav": "stack",
        },
    )


@router.get("/ab", response_class=HTMLResponse)
def ab_page(request: Request, state: ApiState = Depends(api_state)) -> Response:
    runs = [(run, eval_view(run.metrics or {})) for run in queries.eval_runs(state.settings, 20)]
    return TEMPLATES.TemplateResponse(request, "ab.html", {"runs": runs, "nav": "ab"})


@router.get("/api-reference", response_class=HTMLResponse)
def api_reference(request: Request) -> Response:
    """The OpenAPI schema as a plain page (works offline, unlike Swagger UI's CDN script)."""
    schema = request.app.openapi()
    ops = [
        (method.upper(), path, op)
        for path, item in schema.get("paths", {}).items()
        for method, op in item.items()
    ]
    return TEMPLATES.TemplateResponse(
        request, "api_reference.html", {"ops": ops, "schema": schema, "nav": "api"}
    )
