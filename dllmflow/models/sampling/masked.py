"""Full-attention masked diffusion (LLaDA, Dream): the whole canvas through the model each pass.

These models attend bidirectionally over the prompt and every generated position, so nothing can
be cached: a pass runs the checkpoint's own forward (``model(input_ids=...).logits``) over
[prompt | turn so far | active block | masks for the rest of the turn budget]. The schedule is
the semi-autoregressive one LLaDA's and Fast-dLLM's loops use: the turn is cut into blocks
(32 positions) decoded left to right, and inside the active block confidence-gated commits
(``kernels.confidence_commit``: every masked position whose max probability reaches tau, at
least one a pass) fill the masks. Positions after the active block stay masked in the canvas,
as in LLaDA's sampler. Dream predicts position i from the logits of position i - 1 (its logit
shift; position 0 keeps its own), LLaDA in place.

Stops, budgets, events and results are the block sampler's (it is a subclass): only the forward
differs. Sequences whose canvases have the same length share one forward (no padding, so no
attention mask is needed); others run separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import GenerationRequest, ProgressEvent, SequenceState, TextDecoder, Timer
from .diffusion import DiffusionSampler, DiffusionState

DEFAULT_BLOCK = 32


class MaskedDiffusionSampler(DiffusionSampler):
    """For a full-attention masked-diffusion model whose forward returns ``.logits`` [B, N, V]."""

    kind = "masked-diffusion"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        mask_id: int,
        token_shift: bool,
        max_position: int,
        block_size: int = DEFAULT_BLOCK,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block = int(block_size)
        self.max_position = int(max_position)
        self.prompt_slack = self.block  # the turn budget is rounded up to whole blocks
        self.mask_id = int(mask_id)
        self.eos_id = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_id)
        self.text_of = TextDecoder(tokenizer)
        self.shift = bool(token_shift)
        self.chat = None

    def start(self, request: GenerationRequest) -> DiffusionState:
        ids = self.encode_request(request)
        state = DiffusionState(request=request, prompt_ids=ids)
        state.block_start = len(ids)  # no padding: nothing needs block alignment
        state.n_blocks = -(-request.max_new_tokens // self.block)
        self._new_block(state)
        return state

    def canvas(self, s: DiffusionState) -> list[int]:
        """[prompt | turn so far | active block | masks up to the turn budget]."""
        rest = s.n_blocks * self.block - len(s.generated) - self.block
        return s.prompt_ids + s.generated + s.block_tokens.tolist() + [self.mask_id] * rest

    @property
    def prefill_waste(self) -> float:
        return 0.0

    @torch.no_grad()
    def step(self, states: Sequence[SequenceState]) -> list[ProgressEvent]:
        live = [s for s in states if not s.done]
        assert all(isinstance(s, DiffusionState) for s in live)
        by_length: dict[int, list[DiffusionState]] = {}
        for s in live:
            by_length.setdefault(len(self.canvas(s)), []).append(s)
        device = next(self.model.parameters()).device
        parts: list[tuple[list[DiffusionState], torch.Tensor]] = []
        for members in by_length.values():
            with Timer(members):
                ids = torch.tensor([self.canvas(s) for s in members], device=device)
                logits = self.model(input_ids=ids).logits  # [g, N, V]
                lag = 1 if self.shift else 0
                at = torch.tensor(
                    [range(s.block_start - lag, s.block_start - lag + self.block) for s in members],
                    device=device,
                ).clamp(min=0)  # Dream's shift: position 0 keeps its own logits
                parts.append(
                    (members, logits.gather(1, at[..., None].expand(-1, -1, logits.shape[-1])))
                )
        for members, logits in parts:
            with Timer(members):
                self._commit(members, logits)
        events = []
        for members, _ in parts:
            with Timer(members):
                events += [self._after_pass(s) for s in members]
        for s in live:
            s.pending = None  # nothing is cached: a finished block needs no key write
        return events
