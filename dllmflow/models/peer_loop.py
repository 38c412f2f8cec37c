"""A peer decode loop: Fast-dLLM v2's own block-diffusion generation loop, on our network.

The baseline our DiffusionSampler is timed against (bench/peer_loop.py). It follows the
single-sequence ``generate`` of the Fast-dLLM v2 checkpoints' ``modeling.py``
(``Fast_dLLM_QwenForCausalLM.generate``, Efficient-Large-Model/Fast_dLLM_v2_7B, read in the
copy at Xenearkr/Fast-dLLM ``v2/base_models/Fast_dLLM_v2_7B/modeling.py``) and the batched
``batch_sample`` of NVlabs/Fast-dLLM ``v2/generation_functions.py`` (read in the same fork), both
with ``use_block_cache=False`` (their evaluation default). Written from reading them, none of
their code. Its structure, kept as theirs:

  * one sequence at a time; the prompt's whole blocks go through one forward that fills the
    KV cache; a prompt tail shorter than a block shares the first generated block (its
    positions are never masked);
  * each denoising pass re-runs the whole current block against the cache of finished blocks
    and writes nothing that outlives the pass; logits are token-shifted (position i is denoised
    by the logits of position i - 1);
  * the block is decoded sub-block by sub-block (``sub_block_size``); a pass commits, inside
    the current sub-block only, every masked position whose top probability clears the
    threshold, and at least the most confident one (lowest position on ties);
  * a finished block costs one more forward, over the clean block, that writes its keys into
    the cache; the logits of its last position denoise the next block's first position;
  * it stops once the stop token is settled (no mask before it), or at the token budget.

Two commit schedules (``schedule``):

  ``"dllmflow"`` (default; the one the bench compares at): our DiffusionSampler's rule, so both
    loops commit the same tokens in the same passes: p >= threshold (theirs: >), softmax in
    fp32, and the next block's first position stays masked and is committed by the threshold
    rule from the clean pass's logits, like every other position. With ``sub_block_size`` equal
    to the block (our sampler has no sub-blocks) and hold-repeats off in our requests, the
    tokens and the denoising passes are our sampler's; the peer loop then runs one forward more
    per block than ours (the clean pass; ours writes a finished block's keys in the same forward
    as the next block's first denoising pass) plus the prefill (ours denoises the first block in
    the prefill's forward).
  ``"fast-dllm-v2"``: theirs as published: p > threshold, softmax in the logits' dtype, and the
    next block's first token is the argmax of the clean pass's (or the prefill's) last logits,
    committed at once without a threshold.

Differences from theirs, all in the peer loop's favour or without effect on what is computed:
the cache is our network's preallocated one (``forward_cached`` writes the block's keys in place;
theirs concatenates the cache with the block's keys in every layer on every pass); the prefill
computes the logits of its last position only (theirs: every position); no clean pass runs after
the block that reaches the budget (theirs runs one and appends a token past the budget); a prompt
of exactly one block is prefilled (theirs prefills only prompts longer than a block). ``pad_id``
left-pads the prompt to whole blocks as our sampler does, so both loops see the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

Schedule = Literal["dllmflow", "fast-dllm-v2"]


class PeerOutput(NamedTuple):
    tokens: list[int]  # the generated tokens, before the stop token, at most max_new_tokens
    passes: int  # every forward: prefill, denoising passes, clean cache-writing passes
    refinement_passes: int  # denoising passes (our sampler's ``refinement_passes``)


@torch.no_grad()
def peer_block_generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    block_size: int | None = None,
    sub_block_size: int | None = None,
    threshold: float = 0.9,
    mask_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    schedule: Schedule = "dllmflow",
) -> PeerOutput:
    """Decode ``max_new_tokens`` after ``prompt_ids`` with the peer's loop on ``model`` (a
    ``BlockDiffusionLM`` with token shift, e.g. ``LlamaBlockDiffusionLM``). ``eos_id`` None
    decodes the whole budget; ``pad_id`` left-pads the prompt to whole blocks (our layout)."""
    cfg = model.config
    b = int(block_size or cfg.block_size)
    if b != int(cfg.block_size):  # the network's attention mask is built for its own block
        raise ValueError(f"block_size {b} differs from the model's {cfg.block_size}")
    sub = int(sub_block_size or b)
    if b % sub:
        raise ValueError(f"sub_block_size {sub} does not divide block_size {b}")
    if not getattr(cfg, "token_shift", False):
        raise ValueError("the peer loop is Fast-dLLM v2's: the model must use token shift")
    if not prompt_ids:
        raise ValueError("the peer loop needs a prompt")
    mask = int(cfg.mask_token_id if mask_id is None else mask_id)
    ours = schedule == "dllmflow"
    device = model.embed.weight.device

    ctx = list(prompt_ids)
    if pad_id is not None:
        ctx = [pad_id] * ((-len(ctx)) % b) + ctx
    whole = len(ctx) // b * b
    tail = ctx[whole:]  # prompt positions inside the first generated block
    n_blocks = -(-(len(tail) + max_new_tokens) // b)
    ks, vs = model.new_cache(1, whole + n_blocks * b)
    passes = refinement = 0
    boundary: torch.Tensor | None = None  # [V] logits of the last cached position
    if whole:
        ids = torch.tensor([ctx[:whole]], device=device)
        at = torch.tensor([[whole - 1]], device=device)
        boundary = model.prefill(ids, ks, vs, logits_at=at)[0, 0]
        passes += 1

    out: list[int] = []
    start = torch.tensor([whole], device=device)
    for _ in range(n_blocks):
        block = torch.full((b,), mask, dtype=torch.long, device=device)
        first = len(tail)  # the block's first generated position
        if tail:
            block[:first] = torch.tensor(tail, device=device)
            tail = []
        elif not ours:  # theirs: the next token straight from the cache-writing pass
            block[0] = boundary.argmax()
        stopped = _settled_stop(out, block, first, mask, eos_id)
        for s0 in range(0, b, sub):
            while stopped is None and bool((block[s0 : s0 + sub] == mask).any()):
                logits = model.forward_cached(block[None], ks, vs, start)[0]  # [b, V]
                passes += 1
                refinement += 1
                head = logits[:1] if boundary is None or first else boundary[None]
                shifted = torch.cat([head, logits[:-1]])  # token shift
                _commit(shifted[s0 : s0 + sub], block[s0 : s0 + sub], mask, threshold, ours)
                stopped = _settled_stop(out, block, first, mask, eos_id)
        if stopped is not None:
            return PeerOutput(stopped, passes, refinement)
        out += block[first:].tolist()
        if len(out) >= max_new_tokens:
            break
        # The clean block: its keys go into the cache; its last logits denoise the next block.
        boundary = model.forward_cached(block[None], ks, vs, start)[0, -1]
        passes += 1
        start = start + b
    return PeerOutput(out[:max_new_tokens], passes, refinement)


def _commit(
    logits: torch.Tensor, tokens: torch.Tensor, mask_id: int, threshold: float, ours: bool
) -> None:
    """One pass's commits into ``tokens`` (a view of the sub-block), in place."""
    masked = tokens == mask_id
    probs = torch.softmax(logits.float() if ours else logits, dim=-1)
    conf, ids = probs.max(dim=-1)
    conf = torch.where(masked, conf, torch.full_like(conf, -torch.inf))
    pick = conf >= threshold if ours else conf > threshold
    pick[conf.argmax()] = True  # at least one per pass: the most confident, first on ties
    pick &= masked
    tokens[pick] = ids[pick]


def _settled_stop(
    out: list[int], block: torch.Tensor, first: int, mask_id: int, eos_id: int | None
) -> list[int] | None:
    """The tokens before the stop token once it is settled (no mask before it), else None."""
    if eos_id is None:
        return None
    ids = block.tolist()[first:]
    settled = out + (ids[: ids.index(mask_id)] if mask_id in ids else ids)
    return settled[: settled.index(eos_id)] if eos_id in settled else None
