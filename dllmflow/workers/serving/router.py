"""Which backend serves a turn: routing policies, and the call that applies them.

Policies (per episode):
  routed     silent planning/seeking (plan, seek) -> diffusion; user-facing (write, chat) -> AR
  ar         always AR
  diffusion  always diffusion
  ab         a deterministic hash of the episode id sends ``ab_diffusion_share`` of episodes to
             diffusion, the rest to AR (an episode stays on one arm for all its turns)
  shadow     served as ``routed``; on ``shadow_share`` of episodes the other backend decodes the
             same turn too, and its output and timings are recorded, never served

A policy picks a slot ("ar" or "diffusion"); the slot's ``SlotBackend`` (backends.py) decodes:
local Ray replicas or an external OpenAI-compatible engine, so every policy works across a
local and an external backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dllmflow.models.sampling.base import GenerationRequest

from .backends import SlotBackend
from .errors import ServingError
from .pool import EventCallback, Outcome
from .settings import ServingSettings

TURN_KINDS: tuple[str, ...] = ("plan", "seek", "write", "chat")
POLICIES: tuple[str, ...] = ("routed", "ar", "diffusion", "ab", "shadow")
ROUTED: dict[str, str] = {"plan": "diffusion", "seek": "diffusion", "write": "ar", "chat": "ar"}


@dataclass(frozen=True)
class Route:
    primary: str  # the backend whose output is served
    shadow: str | None  # the backend that also decodes it, for the record only
    reason: str


def other(backend: str) -> str:
    return "ar" if backend == "diffusion" else "diffusion"


def bucket(key: str, salt: str) -> float:
    """A stable number in [0, 1) for ``key``: same episode, same arm, on every process."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose(kind: str, policy: str, episode_id: str, settings: ServingSettings) -> Route:
    if kind not in TURN_KINDS:
        raise ValueError(f"unknown turn kind {kind!r}; kinds: {', '.join(TURN_KINDS)}")
    if policy == "routed":
        return Route(ROUTED[kind], None, f"routed: {kind} turns go to {ROUTED[kind]}")
    if policy in ("ar", "diffusion"):
        return Route(policy, None, f"policy {policy}")
    if policy == "ab":
        b = bucket(episode_id, "ab")
        arm = "diffusion" if b < settings.ab_diffusion_share else "ar"
        return Route(
            arm, None, f"ab: bucket {b:.3f} vs diffusion share {settings.ab_diffusion_share}"
        )
    if policy == "shadow":
        primary = ROUTED[kind]
        b = bucket(episode_id, "shadow")
        shadow = other(primary) if b < settings.shadow_share else None
        return Route(primary, shadow, f"shadow: bucket {b:.3f} vs share {settings.shadow_share}")
    raise ValueError(f"unknown policy {policy!r}; policies: {', '.join(POLICIES)}")


@dataclass
class Routed:
    outcome: Outcome  # what is served
    routing: dict[str, Any]  # recorded with the turn


class Router:
    def __init__(self, backends: Mapping[str, SlotBackend], settings: ServingSettings) -> None:
        self.backends = dict(backends)
        self.settings = settings
        self._shadow_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shadow")

    def generate(
        self,
        kind: str,
        policy: str,
        episode_id: str,
        build: Callable[[str], GenerationRequest],
        on_event: EventCallback | None = None,
    ) -> Routed:
        """Decode one turn; ``build(backend)`` makes the request for that backend's model."""
        route = choose(kind, policy, episode_id, self.settings)
        shadow = None
        if route.shadow is not None:
            # Started first so both decode at the same time; it never streams progress.
            shadow = self._shadow_pool.submit(
                self.backends[route.shadow].generate, build(route.shadow)
            )
        outcome = self.backends[route.primary].generate(build(route.primary), on_event)
        routing = {"policy": policy, "kind": kind, "reason": route.reason, **outcome.metadata()}
        if shadow is not None:
            routing["served_text"] = outcome.result["text"]
            routing["shadow"] = self._shadow_record(route.shadow, shadow)
        return Routed(outcome, routing)

    def _shadow_record(self, backend: str, future) -> dict[str, Any]:
        try:
            shadow: Outcome = future.result(timeout=self.settings.call_timeout_s)
        except (ServingError, TimeoutError) as exc:  # a shadow failure never fails the turn
            return {"backend": backend, "error": f"{type(exc).__name__}: {exc}"}
        return {**shadow.metadata(), "text": shadow.result["text"]}
