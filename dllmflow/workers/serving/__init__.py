"""Model serving on Ray: replicas per backend, continuous batching, routing policies."""

from .errors import GenerationFailed, GenerationTimeout, ReplicaUnavailable, ServingError
from .replicas import serving_status
from .router import POLICIES, TURN_KINDS, Route, Router, choose
from .settings import BACKENDS, ServingSettings

__all__ = [
    "BACKENDS",
    "POLICIES",
    "TURN_KINDS",
    "GenerationFailed",
    "GenerationTimeout",
    "ReplicaUnavailable",
    "Route",
    "Router",
    "ServingError",
    "ServingSettings",
    "choose",
    "serving_status",
]
