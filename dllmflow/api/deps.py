"""FastAPI dependencies: who is calling (bearer token or dashboard cookie)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request, Security
from fastapi.responses import RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dllmflow.api.auth import COOKIE_NAME, AuthError, Principal, authenticate

bearer = HTTPBearer(
    auto_error=False,
    description="DLLMFLOW_API_TOKEN, or the token in <state_dir>/api_token",
)


class RedirectTo(Exception):
    """Answer a dashboard request with a redirect (to /login)."""

    def __init__(self, response: RedirectResponse) -> None:
        self.response = response


def require_token(
    request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)
) -> Principal:
    api = request.app.state.api
    principal = authenticate(request, api.token, api.sessions)
    request.state.principal = principal
    return principal


def set_session(response: Response, request: Request) -> None:
    """Start a new server-side session (a fresh random id and CSRF value per login)."""
    sessions = request.app.state.api.sessions
    response.set_cookie(
        COOKIE_NAME,
        sessions.create(),
        max_age=int(sessions.max_age_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def safe_next(target: str | None) -> str:
    """Only same-site relative paths, so /login cannot be used as an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/episodes"
    return target


def require_viewer(request: Request) -> Principal:
    """Dashboard pages: the session cookie or a bearer header; otherwise send the browser to
    /login (which comes back here after the form)."""
    api = request.app.state.api
    try:
        principal = authenticate(request, api.token, api.sessions)
    except AuthError:
        # A token pasted into the URL is not accepted, and is not carried on into ?next=.
        rest = [(k, v) for k, v in request.query_params.multi_items() if k.lower() != "token"]
        here = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        raise RedirectTo(
            RedirectResponse("/login?" + urlencode({"next": here}), status_code=303)
        ) from None
    request.state.principal = principal
    return principal
