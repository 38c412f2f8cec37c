"""Shared fixtures: one real embedded stack (Postgres, Redis, Temporal, Ray) per test session.

Setting DLLMFLOW_DATABASE_URL / _REDIS_URL / _TEMPORAL_ADDRESS / _RAY_ADDRESS runs the same tests
against external servers instead.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from dllmflow.config import Settings, get_settings, load_settings

# Triton fixes interpreter vs compiler when it is first imported, and test modules outside
# tests/kernels may import it first (through transformers or torch), so without a GPU the
# interpreter is chosen here, before any test module is collected (tests/kernels/conftest.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    """Each session gets a temp root of its own unless --basetemp names one. Under pytest's
    shared root (/tmp/pytest-of-<user>) another session starting meanwhile resets that root to
    0700, and the embedded Postgres, run as its own system user, then loses the path to its
    data directory mid-test."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="dllmflow-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's own temp root goes when every test passed; after a failure it stays to
    be read (pytest names its path in the failing tests' output)."""
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own and exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()


PORT_SETTINGS = (
    "postgres_port",
    "redis_port",
    "temporal_port",
    "temporal_ui_port",
    "ray_port",
    "ray_dashboard_port",
    "api_port",
)


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


# Ray binds DLLMFLOW_RAY_PORT + 1..7 (config.RAY_PORT_OFFSETS), and a second node of the
# cluster those plus the node stride (10): a stack's ports are one block, all of it free.
RAY_PORT_BLOCK = 20


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports below the kernel's ephemeral range: there no
    outgoing connection or OS-picked port (a Ray worker's) takes one before its server binds it,
    as one did with a block picked by ``bind(0)`` (Ray's client server port, seen in CI)."""
    top = _ephemeral_start() - size
    for base in random.sample(range(20_000, top), 200):
        if all(_bindable(port) for port in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} consecutive free ports in 20000-{top + size}")


def private_component(tmp_path: Path, component_class, **settings) -> Iterator[tuple]:
    """(settings, component, started) for one embedded server over a private state dir, for a
    fixture to yield from; every record a test appends to ``started`` is stopped after it."""
    from dllmflow.stack.manager import ensure_state_dir

    private = load_settings(state_dir=tmp_path / "state", **settings)
    ensure_state_dir(private)
    component, started = component_class(private), []
    yield private, component, started
    for record in started:
        component.stop(record)


def stack_env(state_dir: Path) -> dict[str, str]:
    """Settings of a private embedded stack: its state dir and a free block of ports."""
    env = {"DLLMFLOW_STATE_DIR": str(state_dir)}
    others = [name for name in PORT_SETTINGS if name != "ray_port"]
    base = free_port_block(len(others) + RAY_PORT_BLOCK)
    for i, name in enumerate(others):
        env[f"DLLMFLOW_{name.upper()}"] = str(base + i)
    env["DLLMFLOW_RAY_PORT"] = str(base + len(others))
    return env


def use_private_stack(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Settings:
    """Point this test's DLLMFLOW_* settings at a private stack (own state dir and ports)."""
    for key, value in stack_env(state_dir).items():
        monkeypatch.setenv(key, value)
    return load_settings()


@contextmanager
def ray_without_token_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside, RayComponent.start starts what an older dllmflow started: the same head, no
    token authentication (said explicitly: with a ~/.ray/auth_token on the host, a head left to
    Ray's default would turn token authentication on with that token)."""
    from dllmflow.stack import components

    with_token = components.ray_env
    with monkeypatch.context() as older:
        older.setattr(
            components,
            "ray_env",
            lambda s: {**with_token(s), "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": None},
        )
        older.setattr(components, "_ray_answers_without_token", lambda s: False)
        yield


def insert_finished_episode(settings: Settings, episode_id: str) -> None:
    """A completed episode row, written straight to the stack's database (data to keep)."""
    from sqlalchemy import text

    from dllmflow.store.db import get_engine

    with get_engine(settings).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO episodes (id, question, policy, status) "
                "VALUES (:id, 'q?', 'oracle', 'completed')"
            ),
            {"id": episode_id},
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running stack; its DLLMFLOW_* variables are exported so subprocesses find it too."""
    from dllmflow.stack import manager

    env = stack_env(tmp_path_factory.mktemp("stack"))
    os.environ.update(env)
    get_settings.cache_clear()
    settings = load_settings()
    manager.up(settings)
    try:
        yield settings
    finally:
        manager.down(settings)
        for key in env:
            os.environ.pop(key, None)
        get_settings.cache_clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that boots the stack must say so: `-m "not integration"` starts no server."""
    unmarked = [
        item.nodeid
        for item in items
        if "stack" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that use the `stack` fixture need the `integration` marker:\n  "
            + "\n  ".join(unmarked)
        )
