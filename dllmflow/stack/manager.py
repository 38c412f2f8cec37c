"""`dllmflow up | down | status`: start the embedded servers idempotently, stop them by pid."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dllmflow.config import Settings
from dllmflow.stack.components import COMPONENTS, StackError
from dllmflow.stack.health import CHECKS, Health, check_api, check_worker
from dllmflow.stack.process import ProcessRecord

ORDER = ("postgres", "redis", "temporal", "ray", "worker", "api")
SERVICES = ("postgres", "redis", "temporal", "ray")  # external when their DLLMFLOW_* URL is set
EXTERNAL_SETTING = {
    "postgres": "DLLMFLOW_DATABASE_URL",
    "redis": "DLLMFLOW_REDIS_URL",
    "temporal": "DLLMFLOW_TEMPORAL_ADDRESS",
    "ray": "DLLMFLOW_RAY_ADDRESS",
}

Progress = Callable[[str], None]


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
    return state


@contextmanager
def stack_lock(settings: Settings) -> Iterator[None]:
    """Serialise concurrent `up`/`down` calls on one state dir."""
    ensure_state_dir(settings)
    with open(settings.state_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(
    settings: Settings, progress: Progress = lambda _: None, migrate: bool = True
) -> list[Health]:
    """Start every embedded component that is not already healthy; check the external ones."""
    with stack_lock(settings):
        state = StackState(settings.state_dir)
        records = state.load()
        migrated = False
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
            component = COMPONENTS[name](settings)
            record = records.get(name)
            if record and record.alive():
                if component.health().healthy:
                    progress(f"{name}: already running (pid {record.pid})")
                    continue
                progress(f"{name}: pid {record.pid} is not healthy; restarting")
                component.stop(record)
            elif record:
                progress(f"{name}: pid {record.pid} is gone; restarting")
            component.check_ports_free()
            progress(f"{name}: starting")
            records[name] = component.start()
            state.save(records)
            progress(f"{name}: started (pid {records[name].pid})")
    return status(settings)


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


def status(settings: Settings) -> list[Health]:
    return [CHECKS[name](settings) for name in SERVICES] + [
        check_worker(settings),
        check_api(settings),
    ]
