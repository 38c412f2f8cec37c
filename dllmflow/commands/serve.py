"""`dllmflow serve`: run the HTTP API and dashboard with uvicorn."""

from __future__ import annotations

import uvicorn

from dllmflow.api.app import create_app
from dllmflow.api.auth import ensure_api_token, token_path
from dllmflow.config import Settings


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted; host/port default to DLLMFLOW_API_HOST / DLLMFLOW_API_PORT."""
    host = host or settings.api_host
    port = port or settings.api_port
    ensure_api_token(settings)
    source = "DLLMFLOW_API_TOKEN" if settings.api_token else str(token_path(settings))
    shown = "[::1]" if host == "::1" else host
    print(
        f"dllmflow API on http://{shown}:{port}  (dashboard /episodes, docs /docs)\n"
        f"token: {source}",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
    )
