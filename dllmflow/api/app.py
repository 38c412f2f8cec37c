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
from dllmflow.api.routes import dashboard, dlq, episodes, events, records, system
from dllmflow.api.state import ApiState
from dllmflow.config import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
DESCRIPTION = """\
Submit and operate dllmflow research episodes.

Every endpoint except `/healthz` needs the API token: `Authorization: Bearer <token>` (the
DLLMFLOW_API_TOKEN setting, or the token generated into `<state_dir>/api_token`). Mutating calls
are recorded in the audit log (`GET /api/audit`). Errors are JSON: `{"error": "..."}`, and a 422
also lists each bad field under `fields`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.api.close()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="dllmflow",
        description=DESCRIPTION,
        version="0.1.0",
        docs_url=None,  # /docs and /openapi.json are served by routes.system, behind the token
        redoc_url=None,
        openapi_url=None,
    )
    app.state.api = ApiState(settings, ensure_api_token(settings))
    app.state.metrics = registry_for(settings)
    errors.install(app)
    for module in (system, episodes, events, dlq, records):
        app.include_router(module.router)
    app.include_router(dashboard.public)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
