"""The embedded stack exposes nothing beyond its user and the loopback interface: the state dir
and what is in it are owner-only, and no process of the stack listens on another address."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import psutil
import pytest

from dllmflow.api.auth import ensure_api_token
from dllmflow.config import Settings
from dllmflow.stack.manager import StackState

pytestmark = pytest.mark.integration


def _stack_processes(settings: Settings) -> list[psutil.Process]:
    procs: dict[int, psutil.Process] = {}
    for record in StackState(settings.state_dir).load().values():
        try:
            top = psutil.Process(record.pid)
            for proc in [top, *top.children(recursive=True)]:
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(procs.values())


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.mark.xfail(
    strict=True,
    reason="Ray 2.60's gcs_server, raylet and agents bind every interface even with "
    "--node-ip-address 127.0.0.1 (issue 16); the rest of the stack is loopback-only",
)
def test_no_stack_process_listens_beyond_loopback(stack: Settings) -> None:
    procs = _stack_processes(stack)
    names = {p.name() for p in procs}
    assert any("redis" in n for n in names) and any("raylet" in n or "gcs" in n for n in names)
    exposed = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN and not _loopback(conn.laddr.ip):
                exposed.append(
                    f"{proc.name()} (pid {proc.pid}) on {conn.laddr.ip}:{conn.laddr.port}"
                )
    assert not exposed, exposed


def test_state_dir_and_its_files_are_owner_only(stack: Settings) -> None:
    ensure_api_token(stack)
    state = stack.state_dir
    mode = stat.S_IMODE(state.stat().st_mode)
    assert mode == (0o701 if os.geteuid() == 0 else 0o700)
    exposed = []
    for root, dirs, files in os.walk(state):
        here = Path(root)
        if here == state and "postgres" in dirs:
            dirs.remove("postgres")  # initdb's own 0700/0600, owned by Postgres's user as root
        for name in files:
            path = here / name
            if path.is_symlink():
                continue
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                exposed.append(f"{path.relative_to(state)} {oct(path.stat().st_mode)}")
        for name in dirs:
            if stat.S_IMODE((here / name).stat().st_mode) & 0o066:
                exposed.append(
                    f"{(here / name).relative_to(state)}/ {oct((here / name).stat().st_mode)}"
                )
    assert not exposed, exposed
    for must in ("logs/api.log", "logs/redis.log", "api_token", "temporal/temporal.db"):
        assert (state / must).exists(), must
    assert list((state / "redis").rglob("*.aof")) or (state / "redis" / "appendonly.aof").exists()
