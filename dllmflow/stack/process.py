"""Starting, identifying and stopping the server processes that `dllmflow up` owns."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ProcessRecord:
    """A started process, identified by pid and create time so a reused pid is never mistaken."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid=pid, create_time=psutil.Process(pid).create_time())

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def spawn(
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str | None] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start `argv` detached in its own session (it outlives the CLI), logging to log_path;
    `env` is added to this process's environment (a None value removes that variable)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # logs may hold addresses, errors and request lines: owner only
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
            cwd=cwd,
            user=user,
            start_new_session=True,
            umask=0o077,  # data files (redis AOF, temporal.db, Ray's session dir) owner-only
        )
    return ProcessRecord.of(proc.pid)


def terminate_tree(
    record: ProcessRecord,
    timeout: float = 20.0,
    sig: int = signal.SIGTERM,
    only_root: bool = False,
) -> None:
    """Stop a process and every descendant (only the process itself with `only_root`);
    escalate to SIGKILL after `timeout` seconds."""
    if not record.alive():
        return
    root = psutil.Process(record.pid)
    family = [root] if only_root else [root, *root.children(recursive=True)]
    # The root first: servers like `ray start --block` shut their own children down cleanly.
    try:
        root.send_signal(sig)
        root.wait(timeout)
    except psutil.TimeoutExpired:
        pass
    except psutil.Error:
        pass
    leftovers = [p for p in family if _running(p)]
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=5)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.25) -> bool:
    """Poll `predicate` until it returns truthy or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
