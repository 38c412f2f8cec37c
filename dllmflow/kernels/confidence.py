"""Fused confidence + commit for confidence-gated block-diffusion decoding.

For each masked position: p = max softmax probability of its logits, id = argmax. A row commits
every masked position with p >= tau; a row with masked positions where none passes commits its
single most confident one, so each step makes progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .checks import FLOAT_DTYPES, require_dtype, require_same_device, require_shape, require_tensor
from .dispatch import ceil_div, lazy_kernel, multiprocessor_count, next_pow2


def check_confidence_args(
    logits: object, tokens: object, masked: object, tau: object
) -> torch.Tensor:
    """Validate the arguments; returns tau as a [B] float32 tensor on the logits' device."""
    logits = require_tensor("logits", logits, 3)
    require_dtype("logits", logits, FLOAT_DTYPES)
    b, n, v = logits.shape
    if v == 0:
        raise ValueError("logits has an empty vocabulary dimension (V = 0)")
    if v >= 2**31:
        raise ValueError(f"logits vocabulary size {v} must be below 2**31")
    tokens = require_tensor("tokens", tokens, 2)
    require_dtype("tokens", tokens, (torch.int64,))
    require_shape("tokens", tokens, (b, n), "[B, L] of logits")
    masked = require_tensor("masked", masked, 2)
    require_dtype("masked", masked, (torch.bool,))
    require_shape("masked", masked, (b, n), "[B, L] of logits")
    require_same_device({"logits": logits, "tokens": tokens, "masked": masked})
    if isinstance(tau, torch.Tensor):
        require_tensor("tau", tau, 1)
        require_dtype("tau", tau, (torch.float32, torch.float64, torch.float16, torch.bfloat16))
        require_shape("tau", tau, (b,), "one threshold per row of logits")
        require_same_device({"logits": logits, "tau": tau})
        return tau.to(torch.float32)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or tau != tau:
        raise ValueError(f"tau must be a float or a [B] tensor, got {tau!r}")
    return torch.full((b,), float(tau), dtype=torch.float32, device=logits.device)


def confidence_commit_reference(
    logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, tau: torch.Tensor
) -> torch.Tensor:
    """The plain torch version: softmax in fp32, then max. tau is [B] float32."""
    probs = torch.softmax(logits.float(), dim=-1)  # [B, L, V], materialized
    conf, ids = probs.max(dim=-1)  # [B, L]; lowest index on ties
    conf = torch.where(masked, conf, -1.0)  # unmasked positions never commit
    commit = masked & (conf >= tau[:, None])
    # Rows with masked positions but no pass commit their most confident one (lowest position).
    best = conf.argmax(dim=1)  # [B]
    stuck = masked.any(dim=1) & ~commit.any(dim=1)
    commit[stuck, best[stuck]] = True
    tokens[commit] = ids[commit]
    masked &= ~commit
    return commit


# ---------------------------------------------------------------------------------------------
# Triton: pass 1 reads each masked row's logits once, split over the vocabulary when rows are
# few (split-K), leaving per-split partials (max, sum of exp(x - max), argmax). Pass 2 is one
# tiny program per batch row that merges the partials and applies the gate.

if TYPE_CHECKING:
    import triton.language as tl

# Kernel bodies are built lazily (dispatch.LazyKernel); int32 max is written out as 2147483647.


@lazy_kernel
def _partials_kernel(
    logits_ptr,  # [B, L, V], last dim contiguous
    masked_ptr,  # [B, L] bool
    part_m_ptr,  # [R, n_split] fp32: max logit of the split
    part_s_ptr,  # [R, n_split] fp32: sum exp(x - max) over the split
    part_i_ptr,  # [R, n_split] int32: lowest index of the max
    L,
    V,
    chunk,  # vocabulary entries per split, a multiple of BLOCK_V
    n_split,
    stride_lb,
    stride_ll,
    stride_mb,
    stride_ml,
    BLOCK_V: tl.constexpr,
    VEC: tl.constexpr,  # entries per 16-byte load: one group, reduced inside its thread
):
    LOG2E: tl.constexpr = 1.4426950408889634
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // L
    pos = row % L
    is_masked = tl.load(masked_ptr + b * stride_mb + pos * stride_ml)
    start = split * chunk
    end = tl.minimum(start + chunk, V)
    end = tl.where(is_masked, end, start)  # committed positions read no logits
    base = logits_ptr + b.to(tl.int64) * stride_lb + pos.to(tl.int64) * stride_ll
    offs = tl.arange(0, BLOCK_V // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]  # [G, VEC]
    # Online softmax per group of VEC adjacent entries: the group max is taken inside one
    # thread, so the loop costs about one exp and a handful of ALU ops per entry (the kernel
    # must keep up with HBM). A group remembers only the tile of its first max; the argmax
    # index is recovered after the loop by re-reading that one group.
    m_g = tl.full([BLOCK_V // VEC], float("-inf"), tl.float32)
    s_g = tl.zeros([BLOCK_V // VEC], tl.float32)
    t_g = tl.full([BLOCK_V // VEC], 0, tl.int32)
    for off in range(start, end, BLOCK_V):
        idx = off + offs
        x = tl.load(base + idx, mask=idx < end, other=float("-inf")).to(tl.float32)
        x_max = tl.max(x, axis=1)
        m_new = tl.maximum(m_g, x_max)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: weights 0, not NaN
        e = tl.exp2((x - m_ref[:, None]) * LOG2E)  # exactly 1 at the max
        s_g = s_g * tl.exp2((m_g - m_ref) * LOG2E) + tl.sum(e, axis=1)
        t_g = tl.where(x_max > m_g, off, t_g)  # strict: the earliest tile keeps a tie
        m_g = m_new
    m = tl.max(m_g, axis=0)
    w = tl.where(m_g == float("-inf"), 0.0, tl.exp2((m_g - m) * LOG2E))
    s = tl.sum(s_g * w, axis=0)
    # Re-read only the groups holding the max (normally one 16-byte load, likely in L2).
    idx = t_g[:, None] + offs
    holds_max = (m_g == m)[:, None] & (idx < end)
    x = tl.load(base + idx, mask=holds_max, other=float("-inf")).to(tl.float32)
    i = tl.min(tl.min(tl.where(holds_max & (x == m), idx, 2147483647), axis=1), axis=0)
    out = row * n_split + split
    tl.store(part_m_ptr + out, m)
    tl.store(part_s_ptr + out, s)
    tl.store(part_i_ptr + out, i)


@lazy_kernel
def _commit_kernel(
    part_m_ptr,
    part_s_ptr,
    part_i_ptr,
    tau_ptr,  # [B] fp32
    masked_ptr,  # [B, L] bool, cleared where committed
    tokens_ptr,  # [B, L] int64, argmax written where committed
    committed_ptr,  # [B, L] bool, every entry written
    L,
    n_split,
    stride_mb,
    stride_ml,
    stride_tb,
    stride_tl,
    stride_cb,
    stride_cl,
    BLOCK_L: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    tau = tl.load(tau_ptr + b)
    offs_l = tl.arange(0, BLOCK_L)
    offs_s = tl.arange(0, BLOCK_S)
    any_pass = tl.full([], 0, tl.int32)
    best_val = tl.full([], -2.0, tl.float32)  # masked confidences are > 0, unmasked -1
    best_pos = tl.full([], 0, tl.int32)
    # Sweep 0 finds whether any position passes and the most confident masked one; sweep 1
    # writes the commits. Both merge the (tiny) partials again rather than keep them around.
    for sweep in tl.static_range(2):
        for l0 in range(0, L, BLOCK_L):
            pos = l0 + offs_l
            in_row = pos < L
            mask_at = masked_ptr + b * stride_mb + pos * stride_ml
            msk = tl.load(mask_at, mask=in_row, other=0) != 0
            idx = (b * L + pos)[:, None] * n_split + offs_s[None, :]  # [BLOCK_L, BLOCK_S]
            ok = in_row[:, None] & (offs_s[None, :] < n_split)
            m = tl.load(part_m_ptr + idx, mask=ok, other=float("-inf"))
            s = tl.load(part_s_ptr + idx, mask=ok, other=0.0)
            i = tl.load(part_i_ptr + idx, mask=ok, other=2147483647)
            mm = tl.max(m, axis=1)
            w = tl.where(m == float("-inf"), 0.0, tl.exp(m - mm[:, None]))
            total = tl.sum(s * w, axis=1)
            conf = tl.where(msk, 1.0 / total, -1.0)  # max softmax probability = exp(0) / total
            if sweep == 0:
                passed = (msk & (conf >= tau)).to(tl.int32)
                any_pass = tl.maximum(any_pass, tl.max(passed, axis=0))
                cmax = tl.max(conf, axis=0)
                cpos = tl.min(tl.where(conf == cmax, pos, 2147483647), axis=0)
                better = cmax > best_val  # strict: the lower position keeps a tie
                best_pos = tl.where(better, cpos, best_pos)
                best_val = tl.where(better, cmax, best_val)
            else:
                ids = tl.min(tl.where(m == mm[:, None], i, 2147483647), axis=1)
                # Force the most confident masked position when masked ones exist but none passed.
                force = (any_pass == 0) & (best_val >= 0.0)
                forced_pos = tl.where(force, best_pos, -1)
                commit = msk & ((conf >= tau) | (pos == forced_pos))
                tok_at = tokens_ptr + b * stride_tb + pos * stride_tl
                tl.store(tok_at, ids.to(tl.int64), mask=commit)
                tl.store(mask_at, msk & ~commit, mask=in_row)
                tl.store(committed_ptr + b * stride_cb + pos * stride_cl, commit, mask=in_row)


def confidence_commit_triton(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    masked: torch.Tensor,
    tau: torch.Tensor,
    *,
    block_v: int | None = None,
    n_split: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """The fused kernels; tau is [B] float32. block_v / n_split / num_warps override tuning."""
    b, n, v = logits.shape
    committed = torch.empty((b, n), dtype=torch.bool, device=logits.device)
    if b * n == 0:
        return committed
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    rows = b * n
    if block_v is None:
        # Two 16-byte loads per thread per iteration at 8 warps; smaller for small vocabularies.
        block_v = min(4096 if logits.element_size() == 2 else 2048, next_pow2(v))
    vec = min(block_v, 16 // logits.element_size())
    if num_warps is None:
        num_warps = 8 if block_v >= 2048 else 4
    tiles = ceil_div(v, block_v)
    if n_split is None:
        # Enough programs to keep every SM streaming: few rows get split over the vocabulary.
        target = 8 * multiprocessor_count(logits.device)
        n_split = min(tiles, max(1, ceil_div(target, rows)))
    chunk = ceil_div(tiles, max(1, n_split)) * block_v
    n_split = ceil_div(v, chunk)
    part_m = torch.empty((rows, n_split), dtype=torch.float32, device=logits.device)
    part_s = torch.empty_like(part_m)
    part_i = torch.empty((rows, n_split), dtype=torch.int32, device=logits.device)
    _partials_kernel[(rows, n_split)](
        logits, masked, part_m, part_s, part_i, n, v, chunk, n_split,
        logits.stride(0), logits.stride(1), masked.stride(0), masked.stride(1),
        BLOCK_V=block_v, VEC=vec, num_warps=num_warps,
    )  # fmt: skip
    block_s = next_pow2(n_split)
    block_l = max(1, min(next_pow2(n), 4096 // block_s))
    _commit_kernel[(b,)](
        part_m, part_s, part_i, tau, masked, tokens, committed, n, n_split,
        masked.stride(0), masked.stride(1), tokens.stride(0), tokens.stride(1),
        committed.stride(0), committed.stride(1),
        BLOCK_L=block_l, BLOCK_S=block_s, num_warps=4,
    )  # fmt: skip
    return committed
