"""The embedded stack exposes nothing beyond its user and the loopback interface: the state dir
and what is in it are owner-only, no process of the stack listens on another address, and
Postgres, Redis and Ray refuse clients without the state dir's credentials."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from dllmflow.api.auth import ensure_api_token
from dllmflow.config import Settings
from dllmflow.stack.health import libpq_url
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
    for must in (
        "logs/api.log",
        "logs/redis.log",
        "api_token",
        "postgres_password",
        "redis_password",
        "ray_auth_token",
        "redis/redis.conf",
        "temporal/temporal.db",
    ):
        assert (state / must).exists(), must
    assert list((state / "redis").rglob("*.aof")) or (state / "redis" / "appendonly.aof").exists()


def test_postgres_refuses_connections_without_the_password(stack: Settings) -> None:
    base = f"postgresql://postgres@127.0.0.1:{stack.postgres_port}"
    for url in (f"{base}/dllmflow", base.replace("postgres@", "postgres:guess@") + "/postgres"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, connect_timeout=5).close()
    with psycopg.connect(libpq_url(stack.effective_database_url)) as conn:  # the project's URL
        rules = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
    assert rules == [("scram-sha-256",)]


def test_redis_refuses_commands_without_the_password(stack: Settings) -> None:
    with socket.create_connection(("127.0.0.1", stack.redis_port), timeout=5) as sock:
        sock.sendall(b"SET intruder yes\r\n")
        reply = sock.recv(200)
    assert reply.startswith(b"-NOAUTH"), reply
    wrong = redis.Redis(host="127.0.0.1", port=stack.redis_port, password="guess")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    client = redis.Redis.from_url(stack.effective_redis_url)  # the project's URL
    assert client.ping() and client.get("intruder") is None


def test_ray_refuses_calls_without_the_token(stack: Settings) -> None:
    url = f"{stack.effective_ray_dashboard_url}/api/version"
    for headers, status in (({}, 401), ({"Authorization": "Bearer guess"}, 403)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
        assert refused.value.code == status
    token = stack.ray_auth_token_file.read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
