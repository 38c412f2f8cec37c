"""Errors a generation can end with; ``retryable`` tells the caller whether to try again."""

from __future__ import annotations


class ServingError(RuntimeError):
    retryable: bool = False


class GenerationFailed(ServingError):
    """The request itself failed inside the replica (bad input, a step that raised)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ReplicaUnavailable(ServingError):
    """The replica died or could not be reached mid-request; Ray restarts it, so retry."""

    retryable = True


class GenerationTimeout(ServingError):
    retryable = True


class EngineUnavailable(ServingError):
    """An external engine could not serve the call (refused, 429 or 5xx after its retries,
    a stream cut short); the activity retries the turn."""

    retryable = True
