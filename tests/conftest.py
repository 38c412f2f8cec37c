"""Shared fixtures: one real embedded stack (Postgres, Redis, Temporal, Ray) per test session.

Setting DLLMFLOW_DATABASE_URL / _REDIS_URL / _TEMPORAL_ADDRESS / _RAY_ADDRESS runs the same tests
against external servers instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dllmflow.config import Settings, get_settings, load_settings

# Triton fixes interpreter vs compiler when it is first imported, and test modules outside
# tests/kernels may import it first (through transformers or torch), so without a GPU the
# interpreter is chosen here, before any test module is collected (tests/kernels/conftest.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


def stack_env(state_dir: Path) -> dict[str, str]:
    env = {"DLLMFLOW_STATE_DIR": str(state_dir)}
    for name, port in zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True):
        env[f"DLLMFLOW_{name.upper()}"] = str(port)
    return env


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
