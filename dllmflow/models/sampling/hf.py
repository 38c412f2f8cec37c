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
    Sampler,
    SequenceState,
    Timer,
    _note_action,
    find_turn_end,
)


@dataclass
class HFState(SequenceState):
    past: Any = None
    next_token: int | None = None
    text: str = ""
    started: bool = False


class HFCausalSampler(Sampler):
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
        return HFState(
            request=request, prompt_ids=self.encode_prompt(request.prompt, request.max_new_tokens)
        )

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

    def _advance(self, s: HFState, token: int) -> ProgressEvent:
        req, before = s.request, s.text
        s.next_token = None
        if token in self.eos_ids:
            self._finish(s, "eos")
        else:
            s.generated.append(token)
            s.text = self.tokenizer.decode(s.generated, skip_special_tokens=True)
            end = find_turn_end(s.text, req.action_first, req.stop_at_action_close)
            if end is not None:
                s.text = s.text[:end]
                self._finish(s, "turn_closed" if req.action_first else "action_closed")
            elif len(s.generated) >= req.max_new_tokens:
                self._finish(s, "budget_exhausted")
            else:
                s.next_token = token
        action = _note_action(s, s.text)
        return ProgressEvent(
            request_id=s.request_id,
            kind="tokens",
            text=s.text[len(before) :] if s.text.startswith(before) else s.text,
            tokens_generated=len(s.generated),
            committed_fraction=1.0,
            forward_passes=s.forward_passes,
            refinement_passes=0,
            action_text=action,
            done=s.done,
            stop_reason=s.stop_reason,
        )

    def _finish(self, s: HFState, reason: str) -> None:
        s.done, s.stop_reason, s.final_text = True, reason, s.text
        s.past = None
