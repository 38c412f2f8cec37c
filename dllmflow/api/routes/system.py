"""/healthz (open), /metrics and /openapi.json (token), /docs (a redirect to /api-reference)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dllmflow.api.deps import require_token, require_viewer

router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness; needs no token")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/metrics",
    tags=["system"],
    dependencies=[Depends(require_token)],
    summary="Prometheus metrics (scrape with the bearer token)",
    response_class=Response,
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()


@router.get("/docs", include_in_schema=False, dependencies=[Depends(require_viewer)])
def docs() -> RedirectResponse:
    """No Swagger UI: it loads its viewer from a CDN (blank offline, and a third-party script on a
    page holding the session). /api-reference renders the same schema server-side."""
    return RedirectResponse("/api-reference", status_code=303)
