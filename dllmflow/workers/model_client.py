"""The model-backed TurnGenerator the episode workflow calls for every non-oracle policy.

It renders the agent's context (prompting.render_context, the one renderer), lets the router
pick a backend for the turn kind and policy, streams progress to the activity's callback (AR and
external engines: token deltas; local diffusion: refinement passes with the partial text and
committed fraction) and
maps the sampler's result to a GeneratedTurn with the routing record attached.
"""

from __future__ import annotations

import uuid
from typing import Any

from dllmflow.agent.prompting import CONTEXT_TOKENS, render_context
from dllmflow.config import Settings
from dllmflow.models.sampling.base import GenerationRequest
from dllmflow.workers.serving.backends import make_backends
from dllmflow.workers.serving.connect import connect
from dllmflow.workers.serving.pool import ReplicaPool
from dllmflow.workers.serving.router import Router
from dllmflow.workers.serving.settings import ServingSettings
from dllmflow.workers.turns import (
    GeneratedTurn,
    GenerateRequest,
    NotConverged,
    ProgressCallback,
)

ROLE_KIND = {"planner": "plan", "seeker": "seek", "writer": "write"}


class ModelTurnGenerator:
    def __init__(self, settings: Settings, serving: ServingSettings | None = None) -> None:
        self.settings = settings
        self.serving = serving or ServingSettings()
        self.pool = ReplicaPool(self.serving)
        # Each slot: local replicas or an external engine (DLLMFLOW_AR_KIND / _DIFFUSION_KIND).
        self.backends = make_backends(self.serving, self.pool)
        if self.serving.local_backends():
            connect(settings)
        self.router = Router(self.backends, self.serving)
        for backend in self.backends.values():  # start every replica loading now, side by side
            backend.warm()

    def generate(self, request: GenerateRequest, on_progress: ProgressCallback) -> GeneratedTurn:
        kind = ROLE_KIND.get(request.role, "chat")
        prefix = request.repair_prefix or request.action_prefix or ""
        action_first = self.serving.action_first and not request.repair_prefix

        def on_event(backend: str, replica: str, event: dict[str, Any]) -> None:
            on_progress(
                {
                    "event": event["kind"],  # "tokens" | "refinement"
                    "backend": backend,
                    "engine": self.backends[backend].kind,  # "local" | "openai-compatible"
                    "replica": replica,
                    "text": event["text"],
                    "tokens_generated": event["tokens_generated"],
                    "committed_fraction": event["committed_fraction"],
                    "forward_passes": event["forward_passes"],
                    "refinement_passes": event["refinement_passes"],
                    "action_ready": event["action_text"] is not None,
                    "action_text": event["action_text"],
                    "action_first": action_first,
                    "repair": bool(request.repair_prefix),
                    "done": event["done"],
                }
            )

        routed = self.router.generate(
            kind,
            request.policy,
            request.episode_id,
            lambda backend: self.build_request(backend, request),
            on_event,
        )
        out, result = routed.outcome, routed.outcome.result
        if prefix:
            routed.routing["repair_prefix_chars"] = len(prefix)
        # An action-first turn whose action span was committed keeps its action when the
        # budget runs out while the thinking is refined: the action is what the tool runs.
        action_committed = action_first and (
            result.get("action_ready_pass") is not None or bool(request.action_prefix)
        )
        if result["stop_reason"] == "not_converged" and not action_committed:
            raise NotConverged(
                f"{out.backend} turn (episode {request.episode_id}, step {request.step}) used "
                f"its denoising budget ({request.max_denoise_steps} passes) without closing "
                "its action"
            )
        ready = result.get("action_ready_seconds")
        return GeneratedTurn(
            text=prefix + result["text"],
            backend=out.backend,
            model=out.model,
            queue_s=out.queue_s,
            decode_s=result["decode_seconds"],
            tokens=result["tokens_generated"],
            forward_passes=result["forward_passes"],
            refinement_passes=result["refinement_passes"],
            stop_reason=result["stop_reason"],
            action_ready_s=ready,
            action_first=action_first,
            routing=routed.routing,
        )

    def build_request(self, backend: str, request: GenerateRequest) -> GenerationRequest:
        """The rendered context (plus any repair prefix) sized for ``backend``'s model."""
        slot = self.backends[backend]
        info = slot.limits()
        count = slot.count_tokens
        prefix = request.repair_prefix or request.action_prefix or ""
        budget = self.serving.max_new_tokens
        room = info["max_position"] - budget - info["prompt_slack"] - 16
        budget_tokens = self.serving.context_tokens or info.get("context_tokens") or CONTEXT_TOKENS
        max_tokens = min(budget_tokens, room) - (count(prefix) if prefix else 0)
        prompt = render_context(
            request.role,
            request.question,
            request.history,
            max_tokens=max(32, max_tokens),
            count_tokens=count,
            action_first=self.serving.action_first,
        )
        return GenerationRequest(
            prompt=prompt,
            turn_prefix=prefix,
            max_new_tokens=budget,
            tau=self.serving.tau,
            hold_repeats=self.serving.hold_repeats,
            max_denoise_steps=request.max_denoise_steps if backend == "diffusion" else None,
            action_first=self.serving.action_first and not request.repair_prefix,
            action_in_prompt=bool(request.action_prefix) and not request.repair_prefix,
            request_id=f"{request.episode_id}:{request.step}:{backend}:{uuid.uuid4().hex[:8]}",
        )
