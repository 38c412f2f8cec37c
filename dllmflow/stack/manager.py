"""`dllmflow up | down | status`: start the embedded servers idempotently, stop them by pid."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dllmflow.config import Settings
from dllmflow.stack.components import COMPONENTS, StackError
from dllmflow.stack.health import CHECKS, Health, check_api, check_worker, supervisor_note
from dllmflow.stack.process import ProcessRecord

ORDER = ("postgres", "redis", "temporal", "ray", "worker", "api", "supervisor")
SERVICES = ("postgres", "redis", "temporal", "ray")  # external when their DLLMFLOW_* URL is set
EXTERNAL_SETTING = {
    "postgres": "DLLMFLOW_DATABASE_URL",
    "redis": "DLLMFLOW_REDIS_URL",
    "temporal": "DLLMFLOW_TEMPORAL_ADDRESS",
    "ray": "DLLMFLOW_RAY_ADDRESS",
}

CLIENTS = ("worker", "api")  # our processes that keep connections (built once) to the servers

Progress = Callable[[str], None]


def credential_files(settings: Settings) -> list[Path]:
    """The embedded servers' secrets in the state dir (stack.credentials)."""
    return [
        settings.postgres_password_file,
        settings.redis_password_file,
        settings.ray_auth_token_file,
    ]


class StackState:
    """pids of what `up` started, in <state_dir>/stack.json (written atomically)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stack.json"

    def load(self) -> dict[str, ProcessRecord]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {name: ProcessRecord(**rec) for name, rec in raw.items()}

    def save(self, records: dict[str, ProcessRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: vars(r) for n, r in records.items()}, indent=2))
        os.replace(tmp, self.path)


def ensure_state_dir(settings: Settings) -> Path:
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    # Secrets (the API token) and data live here. As root, Postgres runs as its own user and
    # needs to traverse (o+x, never read) into its data directory.
    state.chmod(0o701 if os.geteuid() == 0 else 0o700)
    tighten(state)
    return state


def tighten(state: Path) -> None:
    """Files in the state dir owner-only (0600), directories without group/other read or
    write (traverse bits stay: as root, Postgres's user must reach its data directory). Left
    alone: Postgres's data directory, which initdb keeps 0700/0600 itself."""
    me = os.geteuid()
    for root, dirs, files in os.walk(state):
        here = Path(root)
        if here == state:
            dirs[:] = [d for d in dirs if d != "postgres"]
        for name, strip in [*((d, 0o066) for d in dirs), *((f, 0o077) for f in files)]:
            path = here / name
            try:
                info = path.lstat()
                if info.st_uid == me and not stat.S_ISLNK(info.st_mode) and info.st_mode & strip:
                    path.chmod(stat.S_IMODE(info.st_mode) & ~strip)
            except FileNotFoundError:
                continue  # removed while we walked (a component writing its files)


@contextmanager
def stack_lock(settings: Settings, wait: bool = True) -> Iterator[bool]:
    """Serialise concurrent `up`/`down` calls (and supervisor rounds) on one state dir.

    With wait=False it yields False at once when someone else holds the lock."""
    ensure_state_dir(settings)
    with open(settings.state_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(
    settings: Settings,
    progress: Progress = lambda _: None,
    migrate: bool = True,
    supervise: bool = False,
) -> list[Health]:
    """Start every embedded component that is not already healthy; check the external ones.

    With `supervise` (what `dllmflow up` does) a supervisor is left running that restarts any
    of them that dies (stack.supervisor)."""
    with stack_lock(settings):
        state = StackState(settings.state_dir)
        records = state.load()
        migrated = False
        missing_credentials = [p for p in credential_files(settings) if not p.exists()]
        for name in ORDER:
            if name == "worker" and migrate and not migrated:
                progress(f"postgres: schema at {_migrate(settings)}")
                migrated = True
            if name in SERVICES and not settings.embedded(name):
                health = CHECKS[name](settings)
                if not health.healthy:
                    raise StackError(
                        f"{EXTERNAL_SETTING[name]} points at {health.address}, which is not "
                        f"reachable: {health.detail}"
                    )
                progress(f"{name}: external at {health.address} ({health.version})")
                continue
            if name == "supervisor" and not supervise:
                continue
            component = COMPONENTS[name](settings)
            record = records.get(name)
            if record and record.alive():
                renewed = name in CLIENTS and any(p.exists() for p in missing_credentials)
                if renewed:
                    # Started before the servers had credentials: its clients have none.
                    progress(f"{name}: restarting (the embedded servers now need credentials)")
                    component.stop(record)
                elif component.health().healthy:
                    component.secure()
                    progress(f"{name}: already running (pid {record.pid})")
                    continue
                else:
                    progress(f"{name}: pid {record.pid} is not healthy; restarting")
                    component.stop(record)
            elif record:
                progress(f"{name}: pid {record.pid} is gone; restarting")
            component.check_ports_free()
            progress(f"{name}: starting")
            records[name] = component.start()
            state.save(records)
            progress(f"{name}: started (pid {records[name].pid})")
        tighten(settings.state_dir)  # what this round's components created
    reconcile(settings, progress)
    return status(settings)


def reconcile(settings: Settings, progress: Progress = lambda _: None) -> list[str]:
    """Start the workflow of every queued episode that has none (a submit that died between
    its row and its workflow). A failure is reported, never raised: `up` did its own job."""
    import asyncio

    from dllmflow.workflows.service import EpisodeService

    async def go() -> list[str]:
        return await (await EpisodeService.connect(settings)).reconcile()

    try:
        started = asyncio.run(go())
    except Exception as exc:
        progress(f"episodes: queued episodes not reconciled ({str(exc).splitlines()[0]})")
        return []
    if started:
        progress(f"episodes: started {len(started)} queued episode(s) that had no workflow")
    return started


@contextmanager
def supervision_paused(settings: Settings) -> Iterator[None]:
    """While inside, the supervisor restarts nothing (a fault test keeps a server down)."""
    from dllmflow.stack.supervisor import pause_path

    path = pause_path(settings)
    ensure_state_dir(settings)
    path.touch()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _migrate(settings: Settings) -> str:
    from dllmflow.store.migrate import upgrade

    return upgrade(settings)


def down(settings: Settings, progress: Progress = lambda _: None) -> list[str]:
    """Stop, in reverse start order, every process that `up` recorded. Data stays on disk."""
    stopped: list[str] = []
    with stack_lock(settings):
        state = StackState(settings.state_dir)
        records = state.load()
        for name in reversed(ORDER):
            record = records.pop(name, None)
            if record is None:
                continue
            if record.alive():
                progress(f"{name}: stopping pid {record.pid}")
                COMPONENTS[name](settings).stop(record)
                stopped.append(name)
            state.save(records)
    return stopped


def stop(settings: Settings, name: str) -> bool:
    """Stop one recorded component (e.g. the supervisor); True when it was running."""
    with stack_lock(settings):
        state = StackState(settings.state_dir)
        records = state.load()
        record = records.pop(name, None)
        if record is not None and record.alive():
            COMPONENTS[name](settings).stop(record)
        state.save(records)
    return bool(record)


def status(settings: Settings) -> list[Health]:
    """Every component's health; one the supervisor is restarting says so in its detail."""
    from dllmflow.stack.components import SupervisorComponent

    rows = [CHECKS[name](settings) for name in SERVICES] + [
        check_worker(settings),
        check_api(settings),
    ]
    for row in rows:
        note = supervisor_note(settings, row.name)
        if note:
            row.detail = f"{row.detail}; {note}" if row.detail else note
    if "supervisor" in StackState(settings.state_dir).load():
        rows.append(SupervisorComponent(settings).health())
    return rows
