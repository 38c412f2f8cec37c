"""Block-wise diffusion decoding with confidence-gated commits and a KV cache of committed blocks.

Per turn: the context (left-padded to whole blocks) and a block of <|mask|> tokens go through one
block-causal prefill; each later forward pass denoises the active block against the cache and
``kernels.confidence_commit`` fixes every masked position whose max probability reaches ``tau``
(at least one per pass). A finished block's clean keys/values are written in the same forward
that runs the next block's first denoising pass (``forward_cached`` over [done | next]).

Stops: the turn's end tag decoded with nothing masked before it (think-first: ACTION_CLOSE;
P-ReAct action-first: the THINK_CLOSE after the action), eos, the token budget
("budget_exhausted"), or the denoising budget per block / per turn ("not_converged").
With ``action_first`` the action is known as soon as its span is committed: the result's
``action_ready_pass`` / ``action_ready_seconds`` say when, so a caller can start the tool while
the thinking span is still being refined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dllmflow import kernels

from ..tokenizer import decode
from .base import (
    MASK_GLYPH,
    GenerationRequest,
    ProgressEvent,
    Sampler,
    SequenceState,
    Timer,
    _note_action,
    find_turn_end,
    run_cached,
)


@dataclass
class DiffusionState(SequenceState):
    cache: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    pad: int = 0  # pad tokens left of the prompt
    block_start: int = 0  # cache position of the active block
    block_tokens: torch.Tensor | None = None  # [b] ids, mask id where still masked
    block_masked: torch.Tensor | None = None  # [b] bool
    block_steps: int = 0
    pending: list[int] | None = None  # last finished block, keys not yet written clean
    n_blocks: int = 0  # turn budget in blocks


class DiffusionSampler(Sampler):
    """For ``BlockDiffusionLM`` (dllmflow.models.modeling_diffusion)."""

    kind = "diffusion"

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block = int(model.config.block_size)
        self.max_position = int(model.config.max_position)
        self.prompt_slack = self.block  # left padding plus rounding the turn up to blocks
        self.mask_id = int(model.config.mask_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = int(tokenizer.eos_token_id)

    def start(self, request: GenerationRequest) -> DiffusionState:
        ids = self.encode_prompt(request.prompt, request.max_new_tokens)
        b = self.block
        state = DiffusionState(request=request, prompt_ids=ids)
        state.pad = (-len(ids)) % b
        state.block_start = state.pad + len(ids)
        state.n_blocks = -(-request.max_new_tokens // b)
        self._new_block(state)
        return state

    def _new_block(self, s: DiffusionState) -> None:
        s.block_tokens = torch.full((self.block,), self.mask_id, dtype=torch.long)
        s.block_masked = torch.ones(self.block, dtype=torch.bool)
        s.block_steps = 0

    @torch.no_grad()
    def step(self, states: Sequence[SequenceState]) -> list[ProgressEvent]:
        live = [s for s in states if not s.done]
        assert all(isinstance(s, DiffusionState) for s in live)
        device = self.model.embed.weight.device
        b = self.block
        logits_of: dict[int, torch.Tensor] = {}  # id(state) -> [b, V]
        # New sequences: prefill context + first masked block, one by one (lengths differ).
        for s in [s for s in live if s.cache is None]:
            with Timer([s]):
                cap = s.block_start + s.n_blocks * b
                s.cache = self.model.new_cache(1, cap)
                ids = [self.pad_id] * s.pad + s.prompt_ids + s.block_tokens.tolist()
                logits = self.model.prefill(torch.tensor([ids], device=device), *s.cache)
                logits_of[id(s)] = logits[0, -b:]
        # Running sequences, grouped by input length: [active] or [finished | active].
        for with_pending in (False, True):
            group = [
                s
                for s in live
                if id(s) not in logits_of and (s.pending is not None) == with_pending
            ]
            if not group:
                continue
            with Timer(group):
                rows = [(s.pending or []) + s.block_tokens.tolist() for s in group]
                starts = [s.block_start - (b if with_pending else 0) for s in group]
                logits = run_cached(
                    self.model, [s.cache for s in group], torch.tensor(rows, device=device), starts
                )
                for row, s in enumerate(group):
                    logits_of[id(s)] = logits[row, -b:]
                    s.pending = None
        if not logits_of:
            return []
        advanced = [s for s in live if id(s) in logits_of]
        with Timer(advanced):
            # One fused confidence/commit call for the whole batch.
            logits = torch.stack([logits_of[id(s)] for s in advanced])  # [B, b, V]
            tokens = torch.stack([s.block_tokens for s in advanced]).to(device)  # [B, b]
            masked = torch.stack([s.block_masked for s in advanced]).to(device)  # [B, b]
            tau = torch.tensor([float(s.request.tau) for s in advanced], device=device)
            kernels.confidence_commit(logits, tokens, masked, tau)
            events = []
            for row, s in enumerate(advanced):
                s.block_tokens, s.block_masked = tokens[row].cpu(), masked[row].cpu()
                s.forward_passes += 1
                s.refinement_passes += 1
                s.block_steps += 1
                events.append(self._after_pass(s))
        return events

    def _after_pass(self, s: DiffusionState) -> ProgressEvent:
        req, b = s.request, self.block
        masked = s.block_masked.tolist()
        block = s.block_tokens.tolist()
        first_mask = masked.index(True) if True in masked else b
        prefix = s.generated + block[:first_mask]  # the settled start of the turn
        has_eos = self.eos_id in prefix
        if has_eos:
            prefix = prefix[: prefix.index(self.eos_id)]
        text = decode(self.tokenizer, prefix)
        end = find_turn_end(text, req.action_first, req.stop_at_action_close)
        if end is not None:
            reason = "turn_closed" if req.action_first else "action_closed"
            self._finish(s, _cut(self.tokenizer, prefix, end), reason)
        elif has_eos:
            self._finish(s, prefix, "eos")
        else:
            if first_mask == b:  # block done: keep it, open the next one
                s.generated += block
                if len(s.generated) >= req.max_new_tokens or len(s.generated) >= s.n_blocks * b:
                    self._finish(s, s.generated[: req.max_new_tokens], "budget_exhausted")
                else:
                    s.pending = block
                    s.block_start += b
                    self._new_block(s)
            elif s.block_steps >= (req.max_steps_per_block or b):
                self._finish(s, prefix, "not_converged")
            turn_budget = req.max_denoise_steps
            if not s.done and turn_budget is not None and s.refinement_passes >= turn_budget:
                self._finish(s, prefix, "not_converged")
        settled = s.final_text if s.done else decode(self.tokenizer, prefix)
        action = _note_action(s, settled)
        n_masked = 0 if s.done else int(s.block_masked.sum())
        decoded = len(s.generated) + (0 if s.done else b)
        return ProgressEvent(
            request_id=s.request_id,
            kind="refinement",
            text=settled if s.done else self._partial(s),
            tokens_generated=len(s.generated),
            committed_fraction=1.0 if s.done else (decoded - n_masked) / max(1, decoded),
            forward_passes=s.forward_passes,
            refinement_passes=s.refinement_passes,
            action_text=action,
            done=s.done,
            stop_reason=s.stop_reason,
        )

    def _partial(self, s: DiffusionState) -> str:
        """The turn so far with MASK_GLYPH where the active block is still masked."""
        parts, run = [decode(self.tokenizer, s.generated)], []
        for tok, m in zip(s.block_tokens.tolist(), s.block_masked.tolist(), strict=True):
            if m:
                parts.append(decode(self.tokenizer, run) + MASK_GLYPH)
                run = []
            else:
                run.append(tok)
        parts.append(decode(self.tokenizer, run))
        return "".join(parts)

    def _finish(self, s: DiffusionState, tokens: list[int], reason: str) -> None:
        s.generated = list(tokens)
        s.final_text = decode(self.tokenizer, s.generated)
        s.done, s.stop_reason = True, reason
        s.cache = None


def _cut(tokenizer, ids: list[int], end: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text reaches ``end`` characters."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(tokenizer, ids[:mid])) >= end:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]
