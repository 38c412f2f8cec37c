"""Greedy autoregressive decoding with a KV cache, one token per sequence per step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..tokenizer import decode
from .base import (
    GenerationRequest,
    ProgressEvent,
    SequenceState,
    Timer,
    TokenSampler,
    TokenState,
    run_cached,
)


@dataclass
class ARState(TokenState):
    cache: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    length: int = 0  # positions filled in the cache


class ARSampler(TokenSampler):
    """For ``ARForCausalLM`` (dllmflow.models.modeling_ar)."""

    kind = "ar"

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_position = int(model.config.max_position)
        self.eos_id = int(tokenizer.eos_token_id)

    def start(self, request: GenerationRequest) -> ARState:
        ids = self.encode_prompt(request.prompt, request.max_new_tokens)
        return ARState(request=request, prompt_ids=ids)

    @torch.no_grad()
    def step(self, states: Sequence[SequenceState]) -> list[ProgressEvent]:
        live = [s for s in states if not s.done]
        assert all(isinstance(s, ARState) for s in live)
        events = []
        device = self.model.embed.weight.device
        running = [s for s in live if s.cache is not None and s.next_token is not None]
        # New sequences prefill one by one (prompts differ in length) ...
        for s in [s for s in live if s.cache is None]:
            with Timer([s]):
                cap = len(s.prompt_ids) + s.request.max_new_tokens
                s.cache = self.model.new_cache(1, cap)
                ids = torch.tensor([s.prompt_ids], device=device)
                logits = self.model.prefill(ids, *s.cache)[:, -1]  # [1, V]
                s.length = len(s.prompt_ids)
                s.forward_passes += 1
                events.append(self._advance(s, int(logits.argmax(-1))))
        # ... running ones decode their last token together.
        if running:
            with Timer(running):
                ids = torch.tensor([[s.next_token] for s in running], device=device)
                logits = run_cached(
                    self.model, [s.cache for s in running], ids, [s.length for s in running]
                )[:, -1]  # [B, V]
                for row, s in enumerate(running):
                    s.length += 1
                    s.forward_passes += 1
                    events.append(self._advance(s, int(logits[row].argmax(-1))))
        return events

    def is_eos(self, token: int) -> bool:
        return token == self.eos_id

    def decode_ids(self, ids: list[int]) -> str:
        return decode(self.tokenizer, ids)

    def release(self, s: TokenState) -> None:
        s.cache = None  # free the memory
