"""Health checks that talk to each server for real (a query, a ping, an RPC), never a pid check."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
import redis

from dllmflow import __version__
from dllmflow.config import Settings
from dllmflow.stack.credentials import read_secret


@dataclass
class Health:
    name: str
    healthy: bool
    address: str
    embedded: bool
    version: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def redact(url: str) -> str:
    """Hide a password in a URL before it is printed."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def check_postgres(settings: Settings, timeout: float = 3.0) -> Health:
    url = settings.effective_database_url
    health = Health("postgres", False, redact(url), settings.embedded("postgres"))
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=max(1, int(timeout))) as conn:
            health.version = conn.execute("SHOW server_version").fetchone()[0]
            head = None
            if _has_alembic(conn):
                head = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            health.detail = f"schema {head[0]}" if head else "schema not migrated"
            health.healthy = True
    except psycopg.Error as exc:
        health.detail = _first_line(exc)
    return health


def _has_alembic(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]


def check_redis(settings: Settings, timeout: float = 3.0) -> Health:
    url = settings.effective_redis_url
    health = Health("redis", False, redact(url), settings.embedded("redis"))
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
            health.version = str(client.info("server")["redis_version"])
            health.healthy = True
        finally:
            client.close()
    except (redis.RedisError, ValueError) as exc:
        health.detail = _first_line(exc)
    return health


def check_temporal(settings: Settings, timeout: float = 5.0) -> Health:
    address = settings.effective_temporal_address
    health = Health("temporal", False, address, settings.embedded("temporal"))
    try:
        health.version = asyncio.run(asyncio.wait_for(_temporal_version(settings), timeout))
        health.healthy = True
        if settings.embedded("temporal"):
            health.detail = f"web ui {settings.temporal_ui_url}"
    except Exception as exc:  # connection errors come in many RPC shapes
        health.detail = _first_line(exc) or type(exc).__name__
    return health


async def _temporal_version(settings: Settings) -> str:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
    from temporalio.client import Client

    client = await Client.connect(
        settings.effective_temporal_address, namespace=settings.temporal_namespace
    )
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    return info.server_version or "unknown"


def check_ray(settings: Settings, timeout: float = 3.0) -> Health:
    address = settings.effective_ray_address
    health = Health("ray", False, address, settings.embedded("ray"))
    dashboard = settings.effective_ray_dashboard_url
    if dashboard is None:
        health.detail = "set DLLMFLOW_RAY_DASHBOARD_URL to health-check an external Ray cluster"
        return health
    try:
        payload = ray_dashboard_get(settings, "/api/version", timeout)
        health.version = payload.get("ray_version")
        health.healthy = True
        health.detail = f"dashboard {dashboard}"
    except (OSError, ValueError) as exc:
        health.detail = _first_line(exc)
    return health


def ray_dashboard_get(settings: Settings, path: str, timeout: float = 3.0) -> dict:
    """GET `path` of the Ray dashboard (its JSON), with the cluster's token when it has one."""
    request = urllib.request.Request(f"{settings.effective_ray_dashboard_url}{path}")
    token = ray_auth_token(settings)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def ray_auth_token(settings: Settings) -> str | None:
    """The embedded cluster's token (the state dir's ray_auth_token); for an external
    cluster, Ray's own (RAY_AUTH_TOKEN or ~/.ray/auth_token) when it has token auth on."""
    if settings.embedded("ray"):
        return read_secret(settings.ray_auth_token_file)
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = Path.home() / ".ray" / "auth_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def check_worker(settings: Settings, timeout: float = 5.0) -> Health:
    """Healthy when a worker on the task queue is live by its own heartbeat (stack.liveness):
    its pid is running and it rewrote its heartbeat file within the last few seconds (Temporal's
    poller list keeps a dead worker's pollers for minutes, so it is not asked)."""
    from dllmflow.stack.liveness import live_workers

    health = Health("worker", False, settings.task_queue, True, version=__version__)
    live = live_workers(settings)
    health.healthy = bool(live)
    if live:
        pids = ", ".join(str(beat.pid) for beat in live)
        health.detail = f"{len(live)} live worker(s) (pid {pids}) on {settings.task_queue!r}"
    else:
        health.detail = f"no live worker on task queue {settings.task_queue!r}"
    return health


def supervisor_note(settings: Settings, name: str) -> str:
    """What the supervisor says about a component it is restarting ("" when nothing)."""
    path = settings.state_dir / "supervisor.json"
    try:
        state = json.loads(path.read_text()).get(name) or {}
    except (OSError, ValueError):
        return ""
    if state.get("state") != "restarting":
        return ""
    note = f"supervisor restarting it (attempt {state.get('attempts', 1)})"
    if state.get("error"):
        note += f", last error: {state['error']}"
    return note


def check_api(settings: Settings, timeout: float = 3.0) -> Health:
    url = f"http://{settings.api_host}:{settings.api_port}"
    health = Health("api", False, url, True, version=__version__)
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as resp:
            health.healthy = resp.status == 200
            health.detail = f"dashboard {url}/episodes"
    except (OSError, ValueError) as exc:
        health.detail = _first_line(exc)
    return health


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


CHECKS = {
    "postgres": check_postgres,
    "redis": check_redis,
    "temporal": check_temporal,
    "ray": check_ray,
}
