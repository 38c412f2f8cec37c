"""The supervisor `dllmflow up` leaves running: it restarts a dead embedded server, worker or API.

Every CHECK_S seconds it looks at the processes `up` recorded (stack.json): one whose pid is
gone is started again, under the stack lock (never racing `up` or `down`), with exponential
backoff per component (BACKOFF_S doubling up to BACKOFF_CAP_S) while its start keeps failing.
What it is doing is written to <state_dir>/supervisor.json, which `dllmflow status` shows.
A component `down` removed from stack.json is not restarted; neither is anything while
<state_dir>/supervisor.paused exists (manager.supervision_paused).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dllmflow.config import Settings, get_settings

CHECK_S = 1.0
BACKOFF_S = 1.0
BACKOFF_CAP_S = 60.0
HEALTHY_RESET_S = 60.0  # running this long after a restart: its backoff starts over
STALE_S = 15.0


@dataclass
class Supervised:
    state: str = "running"  # running | restarting
    attempts: int = 0  # failed starts since it last ran
    restarts: int = 0  # successful restarts in total
    next_try: float = 0.0
    since: float = field(default_factory=time.time)
    error: str = ""


def state_path(settings: Settings) -> Path:
    return settings.state_dir / "supervisor.json"


def pause_path(settings: Settings) -> Path:
    return settings.state_dir / "supervisor.paused"


def read_state(settings: Settings) -> dict[str, object]:
    try:
        return json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {}


def alive(settings: Settings) -> bool:
    """The supervisor wrote its state within STALE_S seconds."""
    at = read_state(settings).get("at")
    return isinstance(at, int | float) and time.time() - at < STALE_S


def supervise_once(settings: Settings, tracked: dict[str, Supervised], now: float) -> None:
    from dllmflow.stack import manager
    from dllmflow.stack.components import COMPONENTS

    if pause_path(settings).exists():
        return
    with manager.stack_lock(settings, wait=False) as locked:
        if not locked:
            return  # `up` or `down` is at work (maybe starting this supervisor): next round
        store = manager.StackState(settings.state_dir)
        records = store.load()
        for name in manager.ORDER:
            record = records.get(name)
            if name == "supervisor" or record is None:
                continue
            entry = tracked.setdefault(name, Supervised())
            if record.alive():
                if entry.state == "running" and now - entry.since > HEALTHY_RESET_S:
                    entry.attempts = 0
                continue
            if now < entry.next_try:
                continue
            entry.state = "restarting"
            _write(settings, tracked)
            component = COMPONENTS[name](settings)
            try:
                component.check_ports_free()
                records[name] = component.start()
            except Exception as exc:  # a start that failed is retried after the backoff
                entry.attempts += 1
                entry.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                entry.next_try = now + min(BACKOFF_CAP_S, BACKOFF_S * 2**entry.attempts)
                print(f"supervisor: {name} did not start: {entry.error}", flush=True)
                continue
            store.save(records)
            entry.state, entry.error, entry.since = "running", "", time.time()
            entry.restarts += 1
            entry.next_try = 0.0
            print(f"supervisor: restarted {name} (pid {records[name].pid})", flush=True)


def _write(settings: Settings, tracked: dict[str, Supervised]) -> None:
    payload = {"pid": os.getpid(), "at": time.time(), "paused": pause_path(settings).exists()}
    payload.update({name: asdict(entry) for name, entry in tracked.items()})
    path = state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _reap_children() -> None:
    """Collect restarted servers that exited (they are this process's children)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def run(settings: Settings) -> None:
    tracked: dict[str, Supervised] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"supervisor watching {settings.state_dir}", flush=True)
    _write(settings, tracked)
    while True:
        _reap_children()
        try:
            supervise_once(settings, tracked, time.time())
        except Exception as exc:  # never die of one bad round; say why and go on
            print(f"supervisor: round failed: {exc}", flush=True)
        _write(settings, tracked)
        time.sleep(CHECK_S)


if __name__ == "__main__":
    run(get_settings())
