"""Greedy autoregressive decoding with a KV cache, one token per sequence per step.

Running sequences share one batched KV arena (arena.py): a step feeds every running sequence's
last token at once over a view of the arena's leading rows. Joining sequences prefill together,
right-padded to the longest prompt of their group (causal attention never looks right).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .arena import prefill_groups, right_padded
from .base import (
    ChatPrompt,
    GenerationRequest,
    ProgressEvent,
    SequenceState,
    TextDecoder,
    Timer,
    TokenSampler,
    TokenState,
)
from .graphs import ArenaPass


@dataclass
class ARState(TokenState):
    length: int = 0  # positions filled in the cache


class ARSampler(TokenSampler):
    """For ``ARForCausalLM`` (dllmflow.models.modeling_ar)."""

    kind = "ar"

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_position = int(model.config.max_position)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.text_of = TextDecoder(tokenizer)
        self.chat = ChatPrompt.for_model(model, tokenizer)

    def start(self, request: GenerationRequest) -> ARState:
        ids = self.encode_request(request)
        return ARState(request=request, prompt_ids=ids)

    @torch.no_grad()
    def step(self, states: Sequence[SequenceState]) -> list[ProgressEvent]:
        live = [s for s in states if not s.done]
        assert all(isinstance(s, ARState) for s in live)
        arena = self.kv_arena()
        running = arena.arrange([s for s in live if s.row is not None])
        joining = [s for s in live if s.row is None]
        picked: list[tuple[ARState, int]] = []
        if running:
            with Timer(running):
                picked += zip(running, self._decode(running), strict=True)
        for group in prefill_groups([len(s.prompt_ids) for s in joining], self.prefill_waste):
            members = [joining[i] for i in group]
            with Timer(members):
                picked += zip(members, self._prefill(members), strict=True)
        # Only now may sequences finish: freeing a row moves another one.
        with Timer([s for s, _ in picked]):
            return [self._advance(s, token) for s, token in picked]

    def _device(self) -> torch.device:
        return self.model.embed.weight.device

    def _decode(self, running: list[ARState]) -> list[int]:
        """One token for each running sequence (arena rows 0..n-1); their greedy next ids."""
        ids = torch.tensor([[s.next_token] for s in running], device=self._device())
        starts = [s.length for s in running]
        starts_t = torch.tensor(starts, device=self._device())
        logits = self.arena_pass(ArenaPass(ids, starts_t, max(starts) + 1))[:, -1]  # [n, V]
        for s in running:
            s.length += 1
            s.forward_passes += 1
        return logits.argmax(-1).tolist()  # one device sync for the batch

    def _prefill(self, members: list[ARState]) -> list[int]:
        """Prompts of one group, right-padded, into fresh arena rows; their first greedy ids."""
        arena = self.kv_arena()
        first = arena.rows
        for s in members:
            arena.add(s, len(s.prompt_ids) + s.request.max_new_tokens)
        ks, vs = arena.view(first, arena.rows)
        ids = torch.tensor(right_padded([s.prompt_ids for s in members], self.pad_id))
        last = torch.tensor([[len(s.prompt_ids) - 1] for s in members])
        device = self._device()
        logits = self.model.prefill(ids.to(device), ks, vs, logits_at=last.to(device))[:, -1]
        for s in members:
            s.length = len(s.prompt_ids)
            s.forward_passes += 1
        return logits.argmax(-1).tolist()

    def is_eos(self, token: int) -> bool:
        return token == self.eos_id

    def decode_ids(self, ids: list[int]) -> str:
        return self.text_of(ids)

    def release(self, s: SequenceState) -> None:
        self.kv_arena().free(s)
