"""Connect this process to the configured Ray cluster (the embedded one unless configured)."""

from __future__ import annotations

import os
import threading
from typing import Any

import ray

from .settings import NAMESPACE

_LOCK = threading.Lock()


def connect(settings: Any) -> None:
    """``ray.init`` once per process against ``settings.effective_ray_address``.

    Activities call this from many threads at once (32 model turns starting together): ray.init
    is not thread-safe (a second concurrent call fails "Perhaps you called ray.init twice"),
    so one thread connects while the others wait."""
    if ray.is_initialized():
        return
    with _LOCK:
        if not ray.is_initialized():
            _init(settings)


def _init(settings: Any) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(
            address=settings.effective_ray_address,
            namespace=NAMESPACE,
            ignore_reinit_error=True,
            log_to_driver=False,
        )
    except ConnectionError as exc:
        raise ConnectionError(
            f"cannot reach Ray at {settings.effective_ray_address} ({exc}); run `dllmflow up` "
            "or set DLLMFLOW_RAY_ADDRESS to a running cluster"
        ) from None
