"""Any local Hugging Face causal LM (Qwen, Llama, ... or our own AR checkpoint) behind the same
step-level interface, through ``AutoModelForCausalLM`` and its own KV cache.

Each sequence keeps its own ``past_key_values``; a step runs one forward per sequence (no
cross-sequence padding), so batched and single-request greedy outputs are identical.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import (
    GenerationRequest,
    ProgressEvent,
    SequenceState,
    Timer,
    TokenSampler,
    TokenState,
)


@dataclass
class HFState(TokenState):
    past: Any = None
    started: bool = False


class HFCausalSampler(TokenSampler):
    kind = "hf-ar"

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        cfg = model.config
        self.max_position = int(
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "max_position", 2048)
        )
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else cfg.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        # transformers renamed `past_key_values` to `cache` (5.2x); take whichever it has.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def start(self, request: GenerationRequest) -> HFState:
        return HFState(request=request, prompt_ids=self.encode_request(request))

    @torch.no_grad()
    def step(self, states: Sequence[SequenceState]) -> list[ProgressEvent]:
        device = next(self.model.parameters()).device
        events = []
        for s in states:
            if s.done:
                continue
            assert isinstance(s, HFState)
            with Timer([s]):
                if not s.started:
                    ids = torch.tensor([s.prompt_ids], device=device)
                    s.started = True
                else:
                    ids = torch.tensor([[s.next_token]], device=device)
                out = self.model(input_ids=ids, use_cache=True, **{self.cache_arg: s.past})
                s.past = getattr(out, self.cache_arg, None)
                s.forward_passes += 1
                token = int(out.logits[0, -1].argmax(-1))
                events.append(self._advance(s, token))
        return events

    def is_eos(self, token: int) -> bool:
        return token in self.eos_ids

    def decode_ids(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def release(self, s: TokenState) -> None:
        s.past = None
