"""Worker liveness from the workers themselves: each running worker rewrites its own heartbeat
file (pid, task queue, time) under <state_dir>/heartbeats every HEARTBEAT_S seconds.

A worker is live when its file is fresh and its pid is the process that wrote it, so a worker
killed with SIGKILL reads as dead within STALE_S, while Temporal still lists its pollers for
minutes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from dllmflow.config import Settings

HEARTBEAT_S = 2.0
STALE_S = 10.0


@dataclass(frozen=True)
class WorkerBeat:
    pid: int
    create_time: float
    task_queue: str
    at: float

    def alive(self, now: float | None = None) -> bool:
        if (now or time.time()) - self.at > STALE_S:
            return False
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def heartbeat_dir(settings: Settings) -> Path:
    return settings.state_dir / "heartbeats"


def write_heartbeat(settings: Settings) -> Path:
    """Record that this process is a live worker on settings.task_queue (atomic rewrite)."""
    folder = heartbeat_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    beat = WorkerBeat(pid, psutil.Process(pid).create_time(), settings.task_queue, time.time())
    path = folder / f"worker-{pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(vars(beat)))
    os.replace(tmp, path)
    return path


def clear_heartbeat(settings: Settings) -> None:
    (heartbeat_dir(settings) / f"worker-{os.getpid()}.json").unlink(missing_ok=True)


def worker_beats(settings: Settings) -> list[WorkerBeat]:
    """Every heartbeat file on settings.task_queue; files of dead workers are removed."""
    beats = []
    for path in sorted(heartbeat_dir(settings).glob("worker-*.json")):
        try:
            beat = WorkerBeat(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if not beat.alive() and time.time() - beat.at > 10 * STALE_S:
            path.unlink(missing_ok=True)
            continue
        if beat.task_queue == settings.task_queue:
            beats.append(beat)
    return beats


def live_workers(settings: Settings) -> list[WorkerBeat]:
    return [beat for beat in worker_beats(settings) if beat.alive()]
