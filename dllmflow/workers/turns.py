"""Turn generators: what produces an agent's next turn for a policy (oracle or a model backend)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dllmflow.agent.prompting import Step
from dllmflow.config import Settings

ProgressCallback = Callable[[dict[str, Any]], None]


class NotConverged(RuntimeError):
    """A diffusion turn that used its whole denoising budget without closing its action."""


@dataclass
class GenerateRequest:
    episode_id: str
    step: int
    role: str
    policy: str
    question: dict[str, Any]  # the question record ("question", and "hops" for the oracle)
    history: list[Step]
    max_denoise_steps: int
    repair_prefix: str | None = None  # re-decode only what follows this (the action span)
    # P-ReAct resume: the action span committed (and checkpointed) by an earlier attempt; only
    # the thinking after it is decoded.
    action_prefix: str | None = None


@dataclass
class GeneratedTurn:
    text: str
    backend: str
    model: str
    queue_s: float = 0.0
    decode_s: float = 0.0
    tokens: int = 0
    forward_passes: int = 0
    refinement_passes: int = 0
    stop_reason: str = "action_closed"
    action_ready_s: float | None = None  # P-ReAct: when the action span was complete
    action_first: bool = False  # decoded action-first (P-ReAct order)
    routing: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "text"}
        return out


class TurnGenerator(Protocol):
    def generate(
        self, request: GenerateRequest, on_progress: ProgressCallback
    ) -> GeneratedTurn: ...


class OracleGenerator:
    """The scripted oracle: the world's ground truth plus the real tool results it is shown."""

    def generate(self, request: GenerateRequest, on_progress: ProgressCallback) -> GeneratedTurn:
        from dllmflow.world.oracle import oracle_turn

        start = time.perf_counter()
        text = oracle_turn(request.role, request.question, request.history)
        on_progress({"event": "turn_text", "text": text})
        return GeneratedTurn(
            text=text, backend="oracle", model="oracle", decode_s=time.perf_counter() - start
        )


def generator_for(policy: str, settings: Settings) -> TurnGenerator:
    if policy == "oracle":
        return OracleGenerator()
    from dllmflow.workers.model_client import ModelTurnGenerator

    return ModelTurnGenerator(settings)
