"""The FastAPI application: REST API under /api, SSE progress, dashboard pages, /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dllmflow.api import errors
from dllmflow.api.auth import ensure_api_token
from dllmflow.api.metrics import registry_for
from dllmflow.api.routes import dashboard, dlq, episodes, events, openai_compat, records, system
from dllmflow.api.security import AuthBeforeBody, BodyLimit, SecurityHeaders
from dllmflow.api.state import ApiState
from dllmflow.config import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
DESCRIPTION = """\
Submit and operate dllmflow research episodes.

Every endpoint except `/healthz` needs the API token: `Authorization: Bearer <token>` (the
DLLMFLOW_API_TOKEN setting, or the token generated into `<state_dir>/api_token`). Mutating calls
are recorded in the audit log (`GET /api/audit`). Errors are JSON: `{"error": "..."}`, and a 422
also lists each bad field under `fields`. Request bodies over DLLMFLOW_API_MAX_BODY_BYTES (1 MiB
by default) get 413. The schema is at `/openapi.json`; `/api-reference` renders it as a page.

`/v1/models` and `/v1/chat/completions` serve the model slots to any OpenAI client (same bearer
token); diffusion streams each refinement pass as a replacement delta (`delta.dllmflow.replace`).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.api.close()
    app.state.models.close()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="dllmflow",
        description=DESCRIPTION,
        version="0.1.0",
        docs_url=None,  # /openapi.json is served by routes.system, behind the token; no CDN UI
        redoc_url=None,
        openapi_url=None,
    )
    app.state.api = ApiState(settings, ensure_api_token(settings))
    app.state.metrics = registry_for(settings)
    app.state.models = openai_compat.ModelFace(settings)  # /v1: the model slots, OpenAI style
    errors.install(app)
    for module in (system, episodes, events, dlq, records, openai_compat):
        app.include_router(module.router)
    app.include_router(dashboard.public)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Added innermost first: headers wrap everything, the size check runs before auth.
    app.add_middleware(AuthBeforeBody)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app
