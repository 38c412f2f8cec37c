"""Every error leaves the API as JSON, {"error": message} (+ "fields" on 422); no tracebacks."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from temporalio.service import RPCError

from dllmflow.api.audit import AuditUnavailable
from dllmflow.api.auth import AuthError
from dllmflow.api.deps import RedirectTo
from dllmflow.api.queries import NotFound
from dllmflow.api.state import TemporalUnavailable
from dllmflow.api.templating import TEMPLATES
from dllmflow.store.episodes import EpisodeNotFound
from dllmflow.workflows.service import WorkflowNotStarted

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The request is valid but the resource is in the wrong state for it (409)."""


def wants_html(request: Request) -> bool:
    """A browser asking for a dashboard page (API clients always get JSON)."""
    path = request.url.path
    if path.startswith(("/api/", "/metrics", "/openapi.json")):
        return False
    return "text/html" in request.headers.get("accept", "")


def error(request: Request, status: int, message: str, **extra: Any) -> Response:
    if wants_html(request):
        return TEMPLATES.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if request.url.path.startswith("/v1/"):
        # The OpenAI-compatible face answers errors the way OpenAI clients read them.
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "code": status, **extra}}
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    fields = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else ""
        name = ".".join(loc[1:] if where else loc) or where or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        fields.append({"field": name, "in": where or "body", "message": message})
    return fields


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = field_errors(exc)
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return error(request, 422, f"invalid request: {summary}", fields=fields)

    @app.exception_handler(RedirectTo)
    async def _redirect(request: Request, exc: RedirectTo) -> Response:
        return exc.response

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> Response:
        return error(request, exc.status_code, exc.message)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(EpisodeNotFound)
    @app.exception_handler(NotFound)
    async def _missing(request: Request, exc: LookupError) -> Response:
        return error(request, 404, str(exc).strip("'\""))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> Response:
        return error(request, 409, str(exc))

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError) -> Response:
        return error(request, 400, str(exc))

    @app.exception_handler(TemporalUnavailable)
    @app.exception_handler(AuditUnavailable)
    @app.exception_handler(WorkflowNotStarted)
    async def _unavailable(request: Request, exc: Exception) -> Response:
        return error(request, 503, str(exc))

    @app.exception_handler(redis.exceptions.ConnectionError)
    async def _redis(request: Request, exc: Exception) -> Response:
        return error(request, 503, f"Redis is not reachable (DLLMFLOW_REDIS_URL): {exc}")

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _postgres(request: Request, exc: Exception) -> Response:
        log.warning("database error: %s", exc)
        return error(
            request, 503, "Postgres is not reachable (DLLMFLOW_DATABASE_URL); see the server log"
        )

    @app.exception_handler(RPCError)
    async def _temporal(request: Request, exc: RPCError) -> Response:
        return error(request, 502, f"Temporal refused the request: {exc.message}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(request, 500, f"internal error ({exc.__class__.__name__}); see the server log")
