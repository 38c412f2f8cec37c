"""What serves a slot: the one interface the router, the turn generator and the API's /v1 face use.

A slot ("ar" or "diffusion") is served by a ``SlotBackend``: dllmflow's own Ray replicas
(``LocalBackend``, kind "local") or an external OpenAI-compatible engine
(``OpenAICompatibleBackend`` in ``openai_engine.py``, kind "openai-compatible"). Every policy
(routed, ab, shadow, ...) picks a slot and calls its backend, so a local and an external backend
mix freely: routed with the writer on vLLM and planning on our diffusion replicas, A/B between
our AR replicas and a hosted model, or shadowing an external engine with a local one.

A backend yields the same progress events and the same ``Outcome`` whatever it is: events are
``ProgressEvent`` dicts ("tokens" deltas, or "refinement" passes for a local diffusion model),
passed to ``on_event(slot, replica, event)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from dllmflow.models.sampling.base import GenerationRequest

from .pool import EventCallback, Outcome, ReplicaPool
from .settings import BACKENDS, ServingSettings


class SlotBackend(ABC):
    slot: str  # "ar" | "diffusion"
    kind: str  # "local" | "openai-compatible"

    def warm(self) -> None:
        """Start loading (replicas) or connecting; never raises for a backend still starting."""
        return None

    @abstractmethod
    def limits(self) -> dict[str, Any]:
        """max_position (prompt + turn), prompt_slack, context_tokens (None: no trained budget)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes for this backend's model (an upper estimate where no tokenizer
        is at hand), used to size the rendered context."""

    @abstractmethod
    def generate(
        self,
        request: GenerationRequest,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> Outcome: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What /v1/models and status pages show (never a secret)."""


class LocalBackend(SlotBackend):
    """The slot's Ray replicas (continuous batching), through the shared ReplicaPool."""

    kind = "local"

    def __init__(self, pool: ReplicaPool, slot: str) -> None:
        self.pool, self.slot = pool, slot

    def warm(self) -> None:
        self.pool.handles(self.slot)

    def limits(self) -> dict[str, Any]:
        info = self.pool.info(self.slot)
        return {
            "max_position": info["max_position"],
            "prompt_slack": info["prompt_slack"],
            "context_tokens": info.get("context_tokens"),
        }

    def count_tokens(self, text: str) -> int:
        tokenizer = self.pool.tokenizer(self.slot)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        request: GenerationRequest,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> Outcome:
        return self.pool.generate(self.slot, request, on_event, timeout_s)

    def describe(self) -> dict[str, Any]:
        info = self.pool.info(self.slot)
        return {
            "slot": self.slot,
            "kind": self.kind,
            "model": info.get("model", self.slot),
            "sampler": info.get("sampler"),
            "max_position": info.get("max_position"),
            "replicas": self.pool.settings.replicas(self.slot),
        }


def make_backend(serving: ServingSettings, slot: str, pool: ReplicaPool) -> SlotBackend:
    """The backend DLLMFLOW_<SLOT>_KIND names; bad settings raise BackendSettingsError."""
    engine = serving.engine(slot)
    engine.check()
    if engine.kind == "openai-compatible":
        from .openai_engine import OpenAICompatibleBackend

        return OpenAICompatibleBackend(engine, call_timeout_s=serving.call_timeout_s)
    return LocalBackend(pool, slot)


def make_backends(serving: ServingSettings, pool: ReplicaPool) -> dict[str, SlotBackend]:
    return {slot: make_backend(serving, slot, pool) for slot in BACKENDS}
