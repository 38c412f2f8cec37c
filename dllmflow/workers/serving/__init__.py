"""Model serving on Ray: replicas per backend, continuous batching, routing policies.

Names are imported lazily so that ``serving.scheduler`` (pure torch) works where Ray is not
installed, e.g. benchmarking the batching loop on a bare GPU machine.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenerationFailed": "errors",
    "GenerationTimeout": "errors",
    "ReplicaUnavailable": "errors",
    "ServingError": "errors",
    "serving_status": "replicas",
    "POLICIES": "router",
    "TURN_KINDS": "router",
    "Route": "router",
    "Router": "router",
    "choose": "router",
    "BACKENDS": "settings",
    "ServingSettings": "settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
