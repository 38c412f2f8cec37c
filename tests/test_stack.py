"""The embedded stack: real servers start, report health, keep data across down/up."""

from __future__ import annotations

import json
import os
import signal

import psycopg
import pytest
import redis
from sqlalchemy import inspect
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings, load_settings
from dllmflow.stack import manager
from dllmflow.stack.components import StackError
from dllmflow.stack.health import libpq_url
from dllmflow.store.db import get_engine
from tests.conftest import insert_finished_episode, use_private_stack

pytestmark = pytest.mark.integration


def test_status_reports_every_component_with_versions(stack: Settings) -> None:
    rows = {h.name: h for h in manager.status(stack)}
    assert set(rows) == {"postgres", "redis", "temporal", "ray", "worker", "api"}
    for health in rows.values():
        assert health.healthy, f"{health.name}: {health.detail}"
        assert health.version
    assert rows["postgres"].detail.startswith("schema ")


def test_migrations_create_the_schema(stack: Settings) -> None:
    tables = set(inspect(get_engine(stack)).get_table_names())
    assert {"episodes", "checkpoints", "eval_runs", "alembic_version"} <= tables


def test_cli_status_json(stack: Settings) -> None:
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert all(payload[name]["healthy"] for name in ("postgres", "redis", "temporal", "ray"))


def test_unreachable_external_database_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DLLMFLOW_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    settings = load_settings(state_dir=tmp_path)
    with pytest.raises(StackError, match="DLLMFLOW_DATABASE_URL"):
        manager.up(settings)


def test_cli_bad_setting_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setenv("DLLMFLOW_POSTGRES_PORT", "-5")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert "DLLMFLOW_POSTGRES_PORT" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_data_survives_down_up_and_crashes_are_repaired(tmp_path, monkeypatch) -> None:
    settings = use_private_stack(monkeypatch, tmp_path / "own")
    try:
        manager.up(settings)
        insert_finished_episode(settings, "ep-survivor")
        redis.Redis.from_url(settings.effective_redis_url).set("survivor", "yes")

        # A crashed component is detected and restarted by the next `up`.
        records = manager.StackState(settings.state_dir).load()
        os.kill(records["redis"].pid, signal.SIGKILL)
        assert not manager.status(settings)[1].healthy
        manager.up(settings)
        assert manager.StackState(settings.state_dir).load()["redis"].pid != records["redis"].pid

        # `dllmflow down` / `dllmflow up` themselves, on this private stack.
        result = CliRunner().invoke(app, ["down"])
        assert result.exit_code == 0, result.output
        line = next(x for x in result.output.splitlines() if x.startswith("stopped: "))
        stopped = line.removeprefix("stopped: ").split(", ")
        assert set(stopped) == {"postgres", "redis", "temporal", "ray", "worker", "api"}
        assert not any(r.alive() for r in records.values())
        assert not any(h.healthy for h in manager.status(settings))

        result = CliRunner().invoke(app, ["up", "--json", "--no-supervise"])
        assert result.exit_code == 0, result.output
        health = json.loads(result.stdout)
        assert set(health) >= {"postgres", "redis", "temporal", "ray", "worker", "api"}
        assert all(h["healthy"] for h in health.values()), health
        with psycopg.connect(libpq_url(settings.effective_database_url)) as conn:
            row = conn.execute("SELECT status FROM episodes WHERE id = 'ep-survivor'").fetchone()
        assert row == ("completed",)
        assert redis.Redis.from_url(settings.effective_redis_url).get("survivor") == b"yes"
    finally:
        manager.down(settings)


def test_a_taken_port_is_named(tmp_path, monkeypatch) -> None:
    import socket

    settings = use_private_stack(monkeypatch, tmp_path / "taken")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.postgres_port))
        holder.listen()
        with pytest.raises(StackError, match="DLLMFLOW_POSTGRES_PORT"):
            manager.up(settings)
