"""`dllmflow serve`: run the HTTP API and dashboard with uvicorn."""

from __future__ import annotations

import logging
import re

import uvicorn

from dllmflow.api.app import create_app
from dllmflow.api.auth import ensure_api_token, token_path
from dllmflow.config import Settings

_TOKEN_PARAM = re.compile(r"(?<=[?&]token=)[^&\s]*")


class RedactTokenParam(logging.Filter):
    """Keep a dashboard's one-time ?token= out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_PARAM.sub("***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted; host/port default to DLLMFLOW_API_HOST / DLLMFLOW_API_PORT."""
    host = host or settings.api_host
    port = port or settings.api_port
    ensure_api_token(settings)
    source = "DLLMFLOW_API_TOKEN" if settings.api_token else str(token_path(settings))
    shown = f"[{host}]" if ":" in host else host
    print(
        f"dllmflow API on http://{shown}:{port}  (dashboard /episodes, docs /docs)\n"
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
