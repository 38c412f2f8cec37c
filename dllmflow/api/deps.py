"""FastAPI dependencies: who is calling (bearer token or dashboard cookie)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request, Security
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dllmflow.api.auth import COOKIE_NAME, AuthError, Principal, authenticate, token_matches
from dllmflow.api.auth import session_value as cookie_value

bearer = HTTPBearer(
    auto_error=False,
    description="DLLMFLOW_API_TOKEN, or the token in <state_dir>/api_token",
)
SESSION_MAX_AGE_S = 7 * 24 * 3600


class RedirectTo(Exception):
    """Answer a dashboard request with a redirect (to /login, or to drop ?token=)."""

    def __init__(self, response: RedirectResponse) -> None:
        self.response = response


def require_token(
    request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)
) -> Principal:
    principal = authenticate(request, request.app.state.api.token)
    request.state.principal = principal
    return principal


def set_session(response: RedirectResponse, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        cookie_value(token),
        max_age=SESSION_MAX_AGE_S,
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
    """Dashboard pages: accept ?token= once (set the cookie, redirect without it), the cookie,
    or a bearer header; otherwise send the browser to /login."""
    token: str = request.app.state.api.token
    given = request.query_params.get("token")
    if given is not None:
        if not token_matches(given, token):
            raise RedirectTo(RedirectResponse("/login?error=invalid+token", status_code=303))
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        url = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(url, status_code=303)
        set_session(response, request, token)
        raise RedirectTo(response)
    try:
        principal = authenticate(request, token)
    except AuthError:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise RedirectTo(
            RedirectResponse("/login?" + urlencode({"next": here}), status_code=303)
        ) from None
    request.state.principal = principal
    return principal
