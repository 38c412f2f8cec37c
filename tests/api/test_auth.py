"""Bearer token, dashboard session cookie, and the token file."""

from __future__ import annotations

import stat

import httpx
import pytest
from pydantic import SecretStr

from dllmflow.api.auth import (
    COOKIE_NAME,
    CSRF_HEADER,
    CSRF_VALUE,
    ensure_api_token,
    fingerprint,
    token_path,
)
from dllmflow.config import load_settings

pytestmark = pytest.mark.integration

PROTECTED = [
    ("GET", "/api/episodes"),
    ("POST", "/api/episodes"),
    ("GET", "/api/episodes/ep-x/turns"),
    ("GET", "/api/episodes/ep-x/events"),
    ("POST", "/api/episodes/ep-x/cancel"),
    ("GET", "/api/dlq"),
    ("DELETE", "/api/dlq"),
    ("GET", "/api/eval-runs"),
    ("GET", "/api/audit"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]


def test_token_is_generated_once_private_and_stable(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    token = ensure_api_token(settings)
    assert len(token) >= 40
    assert stat.S_IMODE(token_path(settings).stat().st_mode) == 0o600
    assert ensure_api_token(settings) == token
    token_path(settings).chmod(0o644)
    assert ensure_api_token(settings) == token
    assert stat.S_IMODE(token_path(settings).stat().st_mode) == 0o600
    assert token not in fingerprint(token)


def test_configured_token_wins(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path, api_token=SecretStr("configured-token"))
    assert ensure_api_token(settings) == "configured-token"
    assert not token_path(settings).exists()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_requests_without_a_valid_token_get_401(anon: httpx.Client, method: str, path: str):
    missing = anon.request(method, path)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "token" in missing.json()["error"]
    wrong = anon.request(method, path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "invalid API token"}


def test_malformed_authorization_header_is_named(anon: httpx.Client, api_token: str) -> None:
    reply = anon.get("/api/episodes", headers={"Authorization": f"Basic {api_token}"})
    assert reply.status_code == 401
    assert "Bearer <token>" in reply.json()["error"]


def test_healthz_and_static_need_no_token(anon: httpx.Client) -> None:
    assert anon.get("/healthz").json() == {"status": "ok"}
    assert anon.get("/static/dashboard.css").status_code == 200


def test_dashboard_login_sets_a_session_cookie(anon: httpx.Client, api_token: str) -> None:
    page = anon.get("/episodes")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login?next=")

    bad = anon.post("/login", data={"token": "nope", "next": "/dlq"})
    assert bad.status_code == 401 and "invalid token" in bad.text
    assert COOKIE_NAME not in bad.cookies

    good = anon.post("/login", data={"token": api_token, "next": "//evil.example/x"})
    assert good.status_code == 303
    assert good.headers["location"] == "/episodes"  # no open redirect
    cookie = good.cookies[COOKIE_NAME]
    assert api_token not in cookie
    set_cookie = good.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie

    anon.cookies.set(COOKIE_NAME, cookie)
    assert anon.get("/episodes").status_code == 200
    assert anon.get("/api/episodes").status_code == 200
    # Cookie-authenticated writes need the dashboard's header (a cross-site form cannot add it).
    assert anon.delete("/api/dlq").status_code == 403
    anon.cookies.set(COOKIE_NAME, "forged")
    assert anon.get("/api/episodes").status_code == 401


def test_token_in_the_url_is_not_accepted(anon: httpx.Client, api_token: str) -> None:
    reply = anon.get("/dlq", params={"token": api_token, "x": "1"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fdlq%3Fx%3D1"  # token dropped, not used
    assert COOKIE_NAME not in reply.cookies


def test_cookie_write_with_dashboard_header_is_audited(
    anon: httpx.Client, client: httpx.Client, api_token: str, seeded
) -> None:
    login = anon.post("/login", data={"token": api_token, "next": "/episodes"})
    anon.cookies.set(COOKIE_NAME, login.cookies[COOKIE_NAME])
    reply = anon.post(f"/api/episodes/{seeded.completed}/cancel", headers={CSRF_HEADER: CSRF_VALUE})
    assert reply.status_code == 409  # already finished: refused, but the attempt is recorded
    entries = client.get("/api/audit", params={"target": seeded.completed}).json()
    assert entries
    assert entries[0]["action"] == "episode.cancel"
    assert entries[0]["via"] == "cookie"
