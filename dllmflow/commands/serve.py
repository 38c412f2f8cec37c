"""`dllmflow serve`: run the HTTP API and dashboard with uvicorn."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

import uvicorn

from dllmflow.api.app import create_app
from dllmflow.api.auth import ensure_api_token, token_path
from dllmflow.config import Settings

_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s]*)=([^&;\s]*)")
SECRET_PARAMS = {"token", "api_token", "access_token"}


def redact_query(text: str) -> str:
    """Mask the value of every query parameter whose name, once URL-decoded (`%74oken`,
    `TOKEN`), is a token: the API never accepts one there, but a client may still send it."""

    def mask(match: re.Match[str]) -> str:
        name = match.group(2)
        for _ in range(3):  # double-encoded names too (%2574oken)
            name = unquote_plus(name)
        if name.strip().lower() in SECRET_PARAMS:
            return f"{match.group(1)}{match.group(2)}=***"
        return match.group(0)

    return _QUERY_PARAM.sub(mask, text)


class RedactTokenParam(logging.Filter):
    """Keep a token sent in a query string out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted; host/port default to DLLMFLOW_API_HOST / DLLMFLOW_API_PORT."""
    host = host or settings.api_host
    port = port or settings.api_port
    ensure_api_token(settings)
    source = "DLLMFLOW_API_TOKEN" if settings.api_token else str(token_path(settings))
    shown = f"[{host}]" if ":" in host else host
    print(
        f"dllmflow API on http://{shown}:{port}  (dashboard /episodes, API /api-reference)\n"
        f"token: {source}",
        flush=True,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
    )
    logging.getLogger("uvicorn.access").addFilter(RedactTokenParam())  # after uvicorn's setup
    uvicorn.Server(config).run()
