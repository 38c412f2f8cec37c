"""Shared bench plumbing: a stack to run against, and result files with their exact command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dllmflow.config import Settings, get_settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"
PORTS = ("postgres", "redis", "temporal", "temporal_ui", "ray", "ray_dashboard", "api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def bench_stack(keep: bool = False) -> Iterator[Settings]:
    """The stack named by DLLMFLOW_* variables if BENCH_USE_RUNNING=1, else a fresh private one."""
    from dllmflow.stack import manager

    if os.environ.get("BENCH_USE_RUNNING") == "1":
        yield get_settings()
        return
    state = Path(tempfile.mkdtemp(prefix="dllmflow-bench-"))
    env = {"DLLMFLOW_STATE_DIR": str(state)}
    env.update({f"DLLMFLOW_{p.upper()}_PORT": str(_free_port()) for p in PORTS})
    os.environ.update(env)
    get_settings.cache_clear()
    settings = load_settings()
    manager.up(settings, progress=lambda m: print(f"  {m}", file=sys.stderr))
    try:
        yield settings
    finally:
        if not keep:
            manager.down(settings)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def record(name: str, payload: dict[str, Any]) -> Path:
    """Print the JSON and write bench/results/<name>.json with the command and machine."""
    payload = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **payload,
    }
    text = json.dumps(payload, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text + "\n")
    return path
