"""ASGI middleware that runs before any route: security headers on every response, a request
body limit (413) checked before auth and before any parsing, and auth for writes before their
body is read.

Order, outermost first: SecurityHeaders -> BodyLimit -> AuthBeforeBody -> the app. BodyLimit
refuses a declared Content-Length over the limit without reading a byte, and counts the bytes
of bodies sent without one (chunked), failing the read as soon as the count passes the limit.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dllmflow.api.auth import SAFE_METHODS, AuthError, authenticate

# No inline scripts anywhere (the dashboard's scripts are files under /static). Inline style
# attributes stay allowed: templates size bars with them, and autoescaping keeps user text out.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# Writes that check credentials themselves: the login form, and logout (which only revokes).
PUBLIC_WRITES = {"/login", "/logout"}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body larger than {limit} bytes (DLLMFLOW_API_MAX_BODY_BYTES)",
        )


async def _send_json(send: Send, status: int, payload: dict[str, Any], extra=()) -> None:
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    *((n, v) for n, v in SECURITY_HEADERS if n not in present),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_json(send, 400, {"error": "invalid Content-Length header"})
                return
            if length > limit:
                await _send_json(send, 413, {"error": BodyTooLarge(limit).detail})
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # raised outside a route's exception handlers
            if started:
                raise
            await _send_json(send, 413, {"error": exc.detail})


class AuthBeforeBody:
    """Refuse an unauthenticated write before its body is read (FastAPI reads and parses the
    body before it runs dependencies such as require_token)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and scope["path"] not in PUBLIC_WRITES
        ):
            request = Request(scope)
            api = scope["app"].state.api
            try:
                authenticate(request, api.token, api.sessions)
            except AuthError as exc:
                extra = [(b"www-authenticate", b"Bearer")] if exc.status_code == 401 else []
                await _send_json(send, exc.status_code, {"error": exc.message}, extra)
                return
        await self.app(scope, receive, send)
