"""Bearer-token auth for the API and a cookie session for the dashboard.

One shared operator token: DLLMFLOW_API_TOKEN, or a random one generated into
<state_dir>/api_token (mode 0600) on first use. API clients send `Authorization: Bearer <token>`.
Browsers log in once with the /login form (a token in the query string is never accepted) and get
an HttpOnly, SameSite=Strict cookie holding a random session id; the session lives in the API
process (SessionStore), expires after SESSION_MAX_AGE_S, and is deleted by /logout, so a cookie
never outlives its logout or an API restart. Cookie-authenticated writes must also carry the
X-Requested-By header (cross-site forms cannot set it), which the dashboard's scripts add;
/logout, a plain form, instead carries the session's own random CSRF value.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from dllmflow.config import Settings
from dllmflow.stack.credentials import ensure_secret

TOKEN_FILE = "api_token"
COOKIE_NAME = "dllmflow_session"
CSRF_HEADER = "X-Requested-By"
CSRF_VALUE = "dllmflow-dashboard"
CSRF_FIELD = "csrf"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SESSION_MAX_AGE_S = 7 * 24 * 3600
MAX_SESSIONS = 10_000


class AuthError(Exception):
    """401 (or 403 for a cookie write without the dashboard header); message says why."""

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.message, self.status_code = message, status_code


def token_path(settings: Settings) -> Path:
    return settings.state_dir / TOKEN_FILE


def ensure_api_token(settings: Settings) -> str:
    """The configured token, else the one in the state dir, created (0600) if absent."""
    if settings.api_token is not None and settings.api_token.get_secret_value().strip():
        return settings.api_token.get_secret_value().strip()
    return ensure_secret(token_path(settings), if_empty="delete it or set DLLMFLOW_API_TOKEN")


def fingerprint(token: str) -> str:
    """Who made a call, for the audit log: a short hash that does not reveal the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Session:
    csrf: str  # per-login random value the logout form sends back
    expires_at: float


@dataclass
class SessionStore:
    """Dashboard sessions, kept server-side by the hash of their random id."""

    max_age_s: float = SESSION_MAX_AGE_S
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def create(self) -> str:
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._prune(now)
                while len(self._sessions) >= MAX_SESSIONS:  # drop the oldest logins
                    self._sessions.pop(next(iter(self._sessions)))
            self._sessions[self._key(session_id)] = Session(
                secrets.token_urlsafe(24), now + self.max_age_s
            )
        return session_id

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(self._key(session_id))
            if session is not None and session.expires_at <= time.time():
                self._sessions.pop(self._key(session_id), None)
                return None
            return session

    def revoke(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(self._key(session_id), None) is not None

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]


def token_matches(candidate: str, token: str) -> bool:
    return hmac.compare_digest(candidate.encode(), token.encode())


@dataclass(frozen=True)
class Principal:
    actor: str  # token fingerprint
    via: str  # "bearer" | "cookie"


def authenticate(request: Request, token: str, sessions: SessionStore) -> Principal:
    """Check the bearer header or the session cookie; raise AuthError when neither is valid."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        if not token_matches(value.strip(), token):
            raise AuthError("invalid API token")
        return Principal(fingerprint(token), "bearer")
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is not None:
        session = sessions.get(cookie)
        if session is None:
            raise AuthError("dashboard session expired or invalid; log in again")
        if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != CSRF_VALUE:
            raise AuthError(f"cookie-authenticated writes need the {CSRF_HEADER} header", 403)
        request.state.csrf = session.csrf
        return Principal(fingerprint(token), "cookie")
    raise AuthError("missing API token: send 'Authorization: Bearer <token>'")
