"""Request limits, sessions, CSRF on logout and security headers, against the app in-process (no
stack: every check here answers before Postgres, Redis or Temporal would be touched)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from dllmflow.api.app import create_app
from dllmflow.api.auth import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, CSRF_VALUE
from dllmflow.config import load_settings

TOKEN = "test-token-0123456789"
LIMIT = 64 * 1024


@pytest.fixture
def app(tmp_path: Path):
    settings = load_settings(
        state_dir=tmp_path / "state", api_token=SecretStr(TOKEN), api_max_body_bytes=LIMIT
    )
    return create_app(settings)


@pytest.fixture
def anon(app) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        yield c


def login(client: TestClient) -> str:
    reply = client.post("/login", data={"token": TOKEN, "next": "/dlq"})
    assert reply.status_code == 303, reply.text
    return reply.cookies[COOKIE_NAME]


def call_raw(app, method: str, path: str, headers: dict[str, str], chunks: list[bytes]):
    """Drive the ASGI app directly, recording how many body chunks it pulled."""
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        i = len(pulled)
        pulled.append(i)
        if i < len(chunks):
            return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, len(pulled)


def test_declared_oversize_body_gets_413_before_auth_and_unread(app) -> None:
    started = time.monotonic()
    status, body, pulled = call_raw(
        app, "POST", "/api/episodes", {"content-length": str(100 * 1024 * 1024)}, [b"x" * 1024]
    )
    assert status == 413
    assert b"DLLMFLOW_API_MAX_BODY_BYTES" in body
    assert pulled == 0  # not one byte read
    assert time.monotonic() - started < 1.0


def test_unauthenticated_write_is_refused_before_its_body_is_read(app) -> None:
    status, body, pulled = call_raw(
        app, "POST", "/api/episodes", {"transfer-encoding": "chunked"}, [b"{}"] * 3
    )
    assert status == 401 and b"missing API token" in body
    assert pulled == 0


def test_streamed_body_is_cut_off_at_the_limit(app) -> None:
    chunk = b"x" * (LIMIT // 4)
    chunks = [b'{"question": "', *([chunk] * 100), b'"}']
    status, body, pulled = call_raw(
        app,
        "POST",
        "/api/episodes",
        {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        chunks,
    )
    assert status == 413, body
    assert b"larger than" in body
    assert pulled <= 6  # stopped reading just past the limit, not after 100 chunks


def test_body_limit_applies_to_the_login_form_too(anon: TestClient) -> None:
    reply = anon.post("/login", content=b"token=" + b"a" * (LIMIT + 1))
    assert reply.status_code == 413


def test_query_string_tokens_never_log_in(anon: TestClient) -> None:
    for query in (f"token={TOKEN}", f"%74oken={TOKEN}", f"TOKEN={TOKEN}"):
        reply = anon.get(f"/dlq?{query}&x=1")
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/login?next=")
        assert TOKEN not in reply.headers["location"]  # not carried into ?next=
        assert COOKIE_NAME not in reply.cookies


def test_sessions_are_random_and_revoked_by_logout(anon: TestClient) -> None:
    first = login(anon)
    second = login(anon)
    assert first != second and TOKEN not in first
    anon.cookies.clear()
    anon.cookies.set(COOKIE_NAME, first)
    assert anon.get("/openapi.json").status_code == 200
    page = anon.get("/api-reference").text
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page)
    assert csrf, "the logout form carries the session's CSRF value"

    assert anon.post("/logout").status_code == 403  # no CSRF value: refused, still logged in
    assert anon.post("/logout", data={CSRF_FIELD: "guess"}).status_code == 403
    assert anon.get("/openapi.json").status_code == 200

    out = anon.post("/logout", data={CSRF_FIELD: csrf.group(1)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    anon.cookies.clear()
    anon.cookies.set(COOKIE_NAME, first)  # a copy of the cookie kept from before the logout
    refused = anon.get("/openapi.json")
    assert refused.status_code == 401 and "log in again" in refused.json()["error"]

    anon.cookies.clear()
    anon.cookies.set(COOKIE_NAME, second)  # other logins stay valid
    assert anon.get("/openapi.json").status_code == 200
    assert anon.post("/logout", headers={CSRF_HEADER: CSRF_VALUE}).status_code == 303
    assert anon.get("/openapi.json").status_code == 401


def test_security_headers_on_pages_api_and_errors(anon: TestClient) -> None:
    replies = [
        anon.get("/login"),
        anon.get("/healthz"),
        anon.get("/static/dashboard.js"),
        anon.get("/api/episodes"),  # 401
        anon.post("/api/episodes", content=b"x" * (LIMIT + 1)),  # 413
    ]
    for reply in replies:
        csp = reply.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"


def test_pages_have_no_inline_scripts_and_docs_use_no_cdn(anon: TestClient) -> None:
    login(anon)
    for path in ("/login", "/api-reference"):
        page = anon.get(path).text
        scripts = re.findall(r"<script\b[^>]*>", page)
        assert scripts and all('src="/static/' in s for s in scripts), scripts
        assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
        assert "cdn" not in page.lower()
    docs = anon.get("/docs")
    assert docs.status_code == 303 and docs.headers["location"] == "/api-reference"
