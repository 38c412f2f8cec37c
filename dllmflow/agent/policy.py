"""Policies for the episode loop: a model behind a sampler, or the oracle.

A policy maps (role, question record, history of Steps) to the next turn. ``ModelPolicy``
renders the context with ``prompting.render_context`` (the same renderer training used) and
decodes one turn with its sampler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dllmflow.agent.episode import PolicyTurn
from dllmflow.agent.prompting import CONTEXT_TOKENS, Step, render_context
from dllmflow.models.sampling.base import GenerationRequest, GenerationResult, Sampler
from dllmflow.world.oracle import oracle_turn


class ModelPolicy:
    continues_turns = True  # takes a ``prefix``: the episode loop's one repair (agent.repair)

    def __init__(
        self,
        sampler: Sampler,
        *,
        max_new_tokens: int = 160,
        tau: float = 0.9,
        commit_order: str = "confidence",
        planner_commit_order: str | None = None,
        hold_repeats: bool = True,
        action_first: bool = False,
        context_tokens: int | None = None,
        max_denoise_steps: int | None = None,
    ) -> None:
        self.sampler = sampler
        self.max_new_tokens = max_new_tokens
        self.tau = tau
        self.commit_order = commit_order
        # The planner's turn may commit in another order than the seeker's and writer's
        # (None: the same).
        self.planner_commit_order = planner_commit_order or commit_order
        self.hold_repeats = hold_repeats
        self.action_first = action_first
        # Default: the budget the checkpoint was trained with (the tiny pair's: 640 tokens).
        trained = getattr(sampler.model.config, "context_tokens", None) or CONTEXT_TOKENS
        budget = context_tokens or trained
        self.context_tokens = min(budget, sampler.max_position - max_new_tokens - 16)
        self.max_denoise_steps = max_denoise_steps

    def count_tokens(self, text: str) -> int:
        return len(self.sampler.tokenizer(text, add_special_tokens=False)["input_ids"])

    def request(
        self,
        role: str,
        question: Mapping[str, Any] | str,
        history: Sequence[Step],
        prefix: str = "",
    ) -> GenerationRequest:
        """The turn's request; with ``prefix`` the turn continues after it (think-first)."""
        room = self.context_tokens - (self.count_tokens(prefix) if prefix else 0)
        prompt = render_context(
            role,
            question,
            history,
            max_tokens=max(32, room),
            count_tokens=self.count_tokens,
            action_first=self.action_first,
        )
        return GenerationRequest(
            prompt=prompt,
            turn_prefix=prefix,
            max_new_tokens=self.max_new_tokens,
            tau=self.tau,
            commit_order=self.planner_commit_order if role == "planner" else self.commit_order,
            hold_repeats=self.hold_repeats,
            action_first=self.action_first and not prefix,
            max_denoise_steps=self.max_denoise_steps,
        )

    def generate(
        self,
        role: str,
        question: Mapping[str, Any] | str,
        history: Sequence[Step],
        prefix: str = "",
    ) -> GenerationResult:
        return self.sampler.generate(self.request(role, question, history, prefix))

    def __call__(
        self,
        role: str,
        question: Mapping[str, Any],
        history: Sequence[Step],
        prefix: str = "",
    ) -> PolicyTurn:
        """The turn (``prefix`` + what the model wrote after it)."""
        result = self.generate(role, question, history, prefix)
        return PolicyTurn(prefix + result.text, result.to_dict())


class OraclePolicy:
    def __init__(self, action_first: bool = False) -> None:
        self.action_first = action_first

    def __call__(
        self, role: str, question: Mapping[str, Any], history: Sequence[Step]
    ) -> PolicyTurn:
        return PolicyTurn(oracle_turn(role, question, history, action_first=self.action_first))
