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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dllmflow import kernels
from dllmflow.kernels.confidence import hold_adjacent_repeats, left_to_right_commit

from .arena import prefill_groups, right_padded
from .base import (
    MASK_GLYPH,
    ChatPrompt,
    GenerationRequest,
    ProgressEvent,
    Sampler,
    SequenceState,
    TextDecoder,
    Timer,
    _note_action,
    find_turn_end,
)
from .graphs import ArenaPass


@dataclass
class DiffusionState(SequenceState):
    pad: int = 0  # pad tokens left of the prompt
    block_start: int = 0  # cache position of the active block
    block_tokens: torch.Tensor | None = None  # [b] ids, mask id where still masked
    block_masked: torch.Tensor | None = None  # [b] bool
    block_steps: int = 0
    pending: list[int] | None = None  # last finished block, keys not yet written clean
    n_blocks: int = 0  # turn budget in blocks
    boundary: torch.Tensor | None = None  # token shift: [V] logits denoising the block's first


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
        self.text_of = TextDecoder(tokenizer)
        # Token shift (Fast-dLLM v2): position i is denoised by the logits of position i - 1.
        self.shift = bool(getattr(model.config, "token_shift", False))
        self.chat = ChatPrompt.for_model(model, tokenizer)

    def start(self, request: GenerationRequest) -> DiffusionState:
        ids = self.encode_request(request)
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
        arena = self.kv_arena()
        running = arena.arrange([s for s in live if s.row is not None])
        joining = [s for s in live if s.row is None]
        parts: list[tuple[list[DiffusionState], torch.Tensor]] = []  # (states, logits [g, b, V])
        if running:
            with Timer(running):
                parts.append((running, self._denoise(running)))
        lengths = [s.block_start + self.block for s in joining]
        for group in prefill_groups(lengths, self.prefill_waste):
            members = [joining[i] for i in group]
            with Timer(members):
                parts.append((members, self._prefill(members)))
        events = []
        for members, logits in parts:
            with Timer(members):
                self._commit(members, logits)
        # Only now may sequences finish: freeing a row moves another one.
        for members, _ in parts:
            with Timer(members):
                events += [self._after_pass(s) for s in members]
        return events

    def _device(self) -> torch.device:
        return self.model.embed.weight.device

    def _denoise(self, running: list[DiffusionState]) -> torch.Tensor:
        """One denoising pass of every running sequence's active block (arena rows 0..n-1).
        A block finished last pass rides along as an extra row that writes its clean keys."""
        b, device = self.block, self._device()
        pend = [i for i, s in enumerate(running) if s.pending is not None]
        rows = [s.block_tokens.tolist() for s in running] + [running[i].pending for i in pend]
        starts = [s.block_start for s in running] + [running[i].block_start - b for i in pend]
        n = len(running)
        logits = self.arena_pass(
            ArenaPass(
                torch.tensor(rows, device=device),
                torch.tensor(starts, device=device),
                max(starts) + b,
                extra_rows=torch.tensor(pend, device=device) if pend else None,
                n_logits=None if self.shift else n,
            )
        )
        for s in running:
            s.pending = None
        if not self.shift:
            return logits  # [n, b, V]
        # A just-finished block's last position denoises the first position of the next one
        # (a copy: a graph's logits are overwritten by its next pass).
        for j, i in enumerate(pend):
            running[i].boundary = logits[n + j, -1].clone()
        boundary = torch.stack([s.boundary for s in running])  # [n, V]
        return torch.cat([boundary[:, None], logits[:n, :-1]], dim=1)  # [n, b, V]

    def _prefill(self, members: list[DiffusionState]) -> torch.Tensor:
        """Context + first masked block of each joining sequence, right-padded by whole blocks,
        into fresh arena rows; logits of each row's masked block [g, b, V]."""
        b, device = self.block, self._device()
        arena = self.kv_arena()
        first = arena.rows
        for s in members:
            arena.add(s, s.block_start + s.n_blocks * b)
        ks, vs = arena.view(first, arena.rows)
        rows = [[self.pad_id] * s.pad + s.prompt_ids + s.block_tokens.tolist() for s in members]
        lag = 1 if self.shift else 0  # token shift: logits one position to the left
        at = torch.tensor([range(len(r) - b - lag, len(r) - lag) for r in rows], device=device)
        ids = torch.tensor(right_padded(rows, self.pad_id), device=device)
        logits = self.model.prefill(ids, ks, vs, logits_at=at)
        if self.shift:
            for row, s in enumerate(members):
                s.boundary = logits[row, 0]
        return logits

    def _commit(self, members: list[DiffusionState], logits: torch.Tensor) -> None:
        """One fused confidence/commit call for these sequences, one copy back to the host."""
        device = logits.device
        tokens = torch.stack([s.block_tokens for s in members]).to(device)  # [g, b]
        masked = torch.stack([s.block_masked for s in members]).to(device)  # [g, b]
        tau = torch.tensor([float(s.request.tau) for s in members], device=device)
        was_masked = masked.clone()
        ordered = [s.request.commit_order == "left_to_right" for s in members]
        if not any(ordered):
            kernels.confidence_commit(logits, tokens, masked, tau)
        else:
            rows = torch.tensor(ordered, device=device)
            for pick, commit in ((rows, left_to_right_commit), (~rows, kernels.confidence_commit)):
                if pick.any():
                    t, m = tokens[pick], masked[pick]
                    commit(logits[pick], t, m, tau[pick])
                    tokens[pick], masked[pick] = t, m
        hold = torch.tensor([s.request.hold_repeats for s in members], device=device)
        if hold.any():
            # Rows whose requests do not hold repeats pass "nothing was masked": none is held.
            hold_adjacent_repeats(tokens, was_masked & hold[:, None], masked, self.mask_id)
        tokens, masked = tokens.cpu(), masked.cpu()
        for row, s in enumerate(members):
            s.block_tokens, s.block_masked = tokens[row], masked[row]
            s.forward_passes += 1
            s.refinement_passes += 1
            s.block_steps += 1

    def _after_pass(self, s: DiffusionState) -> ProgressEvent:
        req, b = s.request, self.block
        masked = s.block_masked.tolist()
        block = s.block_tokens.tolist()
        first_mask = masked.index(True) if True in masked else b
        prefix = s.generated + block[:first_mask]  # the settled start of the turn
        has_eos = self.eos_id in prefix
        if has_eos:
            prefix = prefix[: prefix.index(self.eos_id)]
        text = self.text_of(prefix)
        end = find_turn_end(text, req.action_first, req.stop_at_action_close, req.action_in_prompt)
        if end is not None:
            reason = "turn_closed" if req.action_first else "action_closed"
            self._finish(s, _cut(self.text_of, prefix, end), reason)
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
        settled = s.final_text if s.done else text  # not done: prefix is unchanged
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
        parts, run = [self.text_of(s.generated)], []
        for tok, m in zip(s.block_tokens.tolist(), s.block_masked.tolist(), strict=True):
            if m:
                parts.append((self.text_of(run) if run else "") + MASK_GLYPH)
                run = []
            else:
                run.append(tok)
        parts.append(self.text_of(run) if run else "")
        return "".join(parts)

    def _finish(self, s: DiffusionState, tokens: list[int], reason: str) -> None:
        s.generated = list(tokens)
        s.final_text = self.text_of(s.generated)
        s.done, s.stop_reason = True, reason
        self.release(s)

    def release(self, s: SequenceState) -> None:
        if isinstance(s, DiffusionState):
            s.boundary = None
        self.kv_arena().free(s)


def _cut(text_of: Callable[[list[int]], str], ids: list[int], end: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text reaches ``end`` characters."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(text_of(ids[:mid])) >= end:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]
