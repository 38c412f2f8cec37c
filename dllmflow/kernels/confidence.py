"""Fused confidence + commit for confidence-gated block-diffusion decoding.

For each masked position: p = max softmax probability of its logits, id = argmax. A row commits
every masked position with p >= tau; a row with masked positions where none passes commits its
single most confident one, so each step makes progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .checks import FLOAT_DTYPES, require_dtype, require_same_device, require_shape, require_tensor
from .dispatch import arrival_counters, ceil_div, lazy_kernel, multiprocessor_count, next_pow2


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


def left_to_right_commit(
    logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, tau: torch.Tensor
) -> torch.Tensor:
    """Like ``confidence_commit_reference``, but a row commits only its leftmost masked position
    and the confident masked positions that follow it without an unconfident mask between."""
    conf, ids = torch.softmax(logits.float(), dim=-1).max(dim=-1)  # [B, L]
    leftmost = masked & (masked.cumsum(dim=1) == 1)
    ok = ~masked | (conf >= tau[:, None]) | leftmost  # settled positions don't break the run
    commit = masked & ok.cumprod(dim=1).bool()
    tokens[commit] = ids[commit]
    masked &= ~commit
    return commit


def hold_adjacent_repeats(
    tokens: torch.Tensor, was_masked: torch.Tensor, masked: torch.Tensor, mask_id: int
) -> torch.Tensor:
    """Undo, in place, the commits of one pass that repeat the token committed in the same pass
    just to their left; returns the [B, L] bool mask of positions put back under the mask.

    Positions committed in one pass are chosen independently, so two neighbours that are each
    unsure where a word sits both write it (``found found``, ``Shaiz or or``). Held back, the
    second one is decided next pass with its neighbour known. A run's first commit is never
    held, so each pass still makes progress; a repeat the model means survives its next pass."""
    fresh = was_masked & ~masked
    held = torch.zeros_like(masked)
    held[:, 1:] = fresh[:, 1:] & fresh[:, :-1] & (tokens[:, 1:] == tokens[:, :-1])
    masked |= held
    tokens[held] = mask_id
    return held


# ---------------------------------------------------------------------------------------------
# Triton: one launch. Each program reads one masked position's logits once (split over the
# vocabulary when positions are few: split-K) and leaves a partial (max, sum of exp(x - max),
# argmax). The last program to finish for a batch row - found with an arrival counter - merges
# that row's partials and applies the gate. A second launch for the merge would cost a few
# microseconds, which is a fifth of the whole call at 256 positions x 152K.

if TYPE_CHECKING:
    import triton.language as tl

# Launch defaults from `bench/kernels.py --tune commit` on an H100 (the "tuning" section of
# bench/results/kernels_h100.json): 8 warps and one 16-byte load per thread per iteration came
# within a few percent of the best configuration from 1x32 to 64x32 positions. The kernel needs
# 31 registers a thread, so 8 such programs (64 warps) fit on an SM at once; filling it rather
# than launching 6 a SM shortens the tail where the slowest programs finish alone (0.5 us of 31
# at 256 positions x 152K).
NUM_WARPS = 8
PROGRAMS_PER_SM = 8

# Kernel bodies are built lazily (dispatch.LazyKernel); int32 max is written out as 2147483647.


@lazy_kernel
def _partials_kernel(
    logits_ptr,  # [B, L, V], last dim contiguous
    masked_ptr,  # [B, L] bool
    part_m_ptr,  # [R, n_split] fp32: max logit of the split
    part_s_ptr,  # [R, n_split] fp32: sum exp(x - max) over the split
    part_i_ptr,  # [R, n_split] int32: lowest index of the max
    arrived_ptr,  # [B] int32: programs of the row that stored their partial; left at 0
    tau_ptr,  # [B] fp32
    tokens_ptr,  # [B, L] int64, argmax written where committed
    committed_ptr,  # [B, L] bool, every entry written
    L,
    V,
    n_split,
    stride_lb,
    stride_ll,
    stride_mb,
    stride_ml,
    stride_tb,
    stride_tl,
    stride_cb,
    stride_cl,
    BLOCK_V: tl.constexpr,
    VEC: tl.constexpr,  # entries per 16-byte load: one group, reduced inside its thread
    NUM_STAGES: tl.constexpr,  # loads kept in flight by software pipelining
    BLOCK_L: tl.constexpr,
    BLOCK_S: tl.constexpr,
    ONE_TILE: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    b = row // L
    pos = row % L
    # Split s reads tiles s, s + n_split, ...: a position's programs sweep its logits side by
    # side, which an H100 serves 1-2% faster than each program taking a contiguous chunk.
    start = split * BLOCK_V
    step = n_split * BLOCK_V
    base = logits_ptr + b.to(tl.int64) * stride_lb + pos.to(tl.int64) * stride_ll
    group_start = tl.arange(0, BLOCK_V // VEC) * VEC  # [G]
    offs = group_start[:, None] + tl.arange(0, VEC)[None, :]  # [G, VEC]
    # The first tile's load goes out before the mask flag is back, so the flag's latency does
    # not delay the stream; a committed position discards it and reads nothing more.
    idx0 = start + offs
    first = tl.load(base + idx0, mask=idx0 < V, other=float("-inf"), eviction_policy="evict_first")
    is_masked = tl.load(masked_ptr + b * stride_mb + pos * stride_ml)
    first = tl.where(is_masked, first.to(tl.float32), float("-inf"))
    end = tl.where(is_masked, V, start)
    # Online softmax per group of VEC adjacent entries: the group's max and its lowest index
    # are taken inside one thread, so the loop costs about one exp and a handful of ALU ops per
    # entry (the kernel must keep up with HBM), and nothing is read twice.
    m_g = tl.full([BLOCK_V // VEC], float("-inf"), tl.float32)
    s_g = tl.zeros([BLOCK_V // VEC], tl.float32)
    i_g = tl.full([BLOCK_V // VEC], 2147483647, tl.int32)
    # Register double buffering: the next tile's load is in flight while this one is folded.
    tile, tile_off = first, start
    for off in tl.range(start + step, end, step, num_stages=NUM_STAGES):
        idx = off + offs
        # Logits are read once: evict them first so the partials stay in L2 for the merge.
        ahead = tl.load(
            base + idx, mask=idx < end, other=float("-inf"), eviction_policy="evict_first"
        )
        m_g, s_g, i_g = _fold_tile(tile, tile_off, group_start, m_g, s_g, i_g)
        tile, tile_off = ahead.to(tl.float32), off
    m_g, s_g, i_g = _fold_tile(tile, tile_off, group_start, m_g, s_g, i_g)
    LOG2E: tl.constexpr = 1.4426950408889634
    m = tl.max(m_g, axis=0)
    w = tl.where(m_g == float("-inf"), 0.0, tl.exp2((m_g - m) * LOG2E))
    s = tl.sum(s_g * w, axis=0)
    i = tl.min(tl.where(m_g == m, i_g, 2147483647), axis=0)
    out = row * n_split + split
    tl.store(part_m_ptr + out, m)
    tl.store(part_s_ptr + out, s)
    tl.store(part_i_ptr + out, i)
    # Every thread's stores precede the release half of the arrival; the acquire half makes the
    # other programs' partials visible to the last arrival, which reads them through L2 (.cg).
    tl.debug_barrier()
    arrived = tl.atomic_add(arrived_ptr + b, 1, sem="acq_rel", scope="gpu")
    if arrived == L * n_split - 1:
        _merge_and_commit(
            b, part_m_ptr, part_s_ptr, part_i_ptr, tau_ptr, masked_ptr, tokens_ptr,
            committed_ptr, L, n_split, stride_mb, stride_ml, stride_tb, stride_tl, stride_cb,
            stride_cl, BLOCK_L, BLOCK_S, ONE_TILE,
        )  # fmt: skip
        tl.store(arrived_ptr + b, 0)  # every program of the row has arrived: ready for reuse


@lazy_kernel
def _fold_tile(x, off, group_start, m_g, s_g, i_g):
    """Fold one [G, VEC] tile of fp32 logits (tile start `off`) into the per-group running
    max, sum of exp(x - max) and lowest index of the max."""
    LOG2E: tl.constexpr = 1.4426950408889634
    x_max, x_at = tl.max(x, axis=1, return_indices=True, return_indices_tie_break_left=True)
    m_new = tl.maximum(m_g, x_max)
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: weights 0, not NaN
    e = tl.exp2((x - m_ref[:, None]) * LOG2E)  # exactly 1 at the max
    s_g = s_g * tl.exp2((m_g - m_ref) * LOG2E) + tl.sum(e, axis=1)
    i_g = tl.where(x_max > m_g, off + group_start + x_at, i_g)  # strict: earlier tiles win ties
    return m_new, s_g, i_g


@lazy_kernel
def _merge_and_commit(
    b,
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
    ONE_TILE: tl.constexpr,  # L <= BLOCK_L: merge the partials once and keep them in registers
):
    tau = tl.load(tau_ptr + b)
    args = (b, part_m_ptr, part_s_ptr, part_i_ptr, masked_ptr, L, n_split, stride_mb, stride_ml)
    # Pass 1 finds whether any position passes and the most confident masked one (masked
    # confidences are > 0, unmasked ones -1); pass 2 writes the commits.
    any_pass = tl.full([], 0, tl.int32)
    best_val = tl.full([], -2.0, tl.float32)
    best_pos = tl.full([], 0, tl.int32)
    if ONE_TILE:
        pos, msk, conf, ids = _merged_tile(*args, 0, BLOCK_L, BLOCK_S)
        any_pass, best_val, best_pos = _gate_stats(
            pos, msk, conf, tau, any_pass, best_val, best_pos
        )
        _write_commits(
            b, pos, msk, conf, ids, tau, any_pass, best_val, best_pos, L, masked_ptr, tokens_ptr,
            committed_ptr, stride_mb, stride_ml, stride_tb, stride_tl, stride_cb, stride_cl,
        )  # fmt: skip
    else:
        for l0 in range(0, L, BLOCK_L):
            pos, msk, conf, ids = _merged_tile(*args, l0, BLOCK_L, BLOCK_S)
            any_pass, best_val, best_pos = _gate_stats(
                pos, msk, conf, tau, any_pass, best_val, best_pos
            )
        for l0 in range(0, L, BLOCK_L):
            pos, msk, conf, ids = _merged_tile(*args, l0, BLOCK_L, BLOCK_S)
            _write_commits(
                b, pos, msk, conf, ids, tau, any_pass, best_val, best_pos, L, masked_ptr,
                tokens_ptr, committed_ptr, stride_mb, stride_ml, stride_tb, stride_tl, stride_cb,
                stride_cl,
            )  # fmt: skip


@lazy_kernel
def _merged_tile(
    b,
    part_m_ptr,
    part_s_ptr,
    part_i_ptr,
    masked_ptr,
    L,
    n_split,
    stride_mb,
    stride_ml,
    l0,
    BLOCK_L: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Positions l0.. of row b: mask, confidence (-1 where unmasked) and argmax id."""
    pos = l0 + tl.arange(0, BLOCK_L)
    offs_s = tl.arange(0, BLOCK_S)
    in_row = pos < L
    msk = tl.load(masked_ptr + b * stride_mb + pos * stride_ml, mask=in_row, other=0) != 0
    idx = (b * L + pos)[:, None] * n_split + offs_s[None, :]  # [BLOCK_L, BLOCK_S]
    ok = in_row[:, None] & (offs_s[None, :] < n_split)
    m = tl.load(part_m_ptr + idx, mask=ok, other=float("-inf"), cache_modifier=".cg")
    s = tl.load(part_s_ptr + idx, mask=ok, other=0.0, cache_modifier=".cg")
    i = tl.load(part_i_ptr + idx, mask=ok, other=2147483647, cache_modifier=".cg")
    mm = tl.max(m, axis=1)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - mm[:, None]))
    total = tl.sum(s * w, axis=1)
    conf = tl.where(msk, 1.0 / total, -1.0)  # max softmax probability = exp(0) / total
    ids = tl.min(tl.where(m == mm[:, None], i, 2147483647), axis=1)
    return pos, msk, conf, ids


@lazy_kernel
def _gate_stats(pos, msk, conf, tau, any_pass, best_val, best_pos):
    passed = (msk & (conf >= tau)).to(tl.int32)
    any_pass = tl.maximum(any_pass, tl.max(passed, axis=0))
    cmax = tl.max(conf, axis=0)
    cpos = tl.min(tl.where(conf == cmax, pos, 2147483647), axis=0)
    better = cmax > best_val  # strict: the lower position keeps a tie
    return any_pass, tl.where(better, cmax, best_val), tl.where(better, cpos, best_pos)


@lazy_kernel
def _write_commits(
    b,
    pos,
    msk,
    conf,
    ids,
    tau,
    any_pass,
    best_val,
    best_pos,
    L,
    masked_ptr,
    tokens_ptr,
    committed_ptr,
    stride_mb,
    stride_ml,
    stride_tb,
    stride_tl,
    stride_cb,
    stride_cl,
):
    # Force the most confident masked position when masked ones exist but none passed.
    forced_pos = tl.where((any_pass == 0) & (best_val >= 0.0), best_pos, -1)
    commit = msk & ((conf >= tau) | (pos == forced_pos))
    in_row = pos < L
    tl.store(tokens_ptr + b * stride_tb + pos * stride_tl, ids.to(tl.int64), mask=commit)
    tl.store(masked_ptr + b * stride_mb + pos * stride_ml, msk & ~commit, mask=in_row)
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
    num_stages: int = 1,
    block_l: int | None = None,
) -> torch.Tensor:
    """The fused kernel; tau is [B] float32. The keyword arguments override the tuning."""
    b, n, v = logits.shape
    committed = torch.empty((b, n), dtype=torch.bool, device=logits.device)
    if b * n == 0:
        return committed
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    rows = b * n
    if block_v is None:
        # One 16-byte load per thread per iteration; smaller for small vocabularies.
        block_v = min(NUM_WARPS * 32 * 16 // logits.element_size(), next_pow2(v))
    vec = min(block_v, 16 // logits.element_size())
    tiles = ceil_div(v, block_v)
    if n_split is None:
        # About PROGRAMS_PER_SM programs per SM, all resident at once: few rows are split over
        # the vocabulary (split-K), many rows are not split at all.
        target = PROGRAMS_PER_SM * multiprocessor_count(logits.device)
        n_split = min(tiles, max(1, round(target / rows)))
    n_split = ceil_div(tiles, ceil_div(tiles, max(1, n_split)))  # equal tile counts, +-1
    part_m = torch.empty((rows, n_split), dtype=torch.float32, device=logits.device)
    part_s = torch.empty_like(part_m)
    part_i = torch.empty((rows, n_split), dtype=torch.int32, device=logits.device)
    arrived = arrival_counters(logits.device, b)
    block_s = next_pow2(n_split)
    if block_l is None:
        block_l = max(1, min(next_pow2(n), 4096 // block_s))
    _partials_kernel[(rows, n_split)](
        logits, masked, part_m, part_s, part_i, arrived, tau, tokens, committed, n, v, n_split,
        logits.stride(0), logits.stride(1), masked.stride(0), masked.stride(1),
        tokens.stride(0), tokens.stride(1), committed.stride(0), committed.stride(1),
        BLOCK_V=block_v, VEC=vec, NUM_STAGES=num_stages, BLOCK_L=block_l, BLOCK_S=block_s,
        ONE_TILE=block_l >= n, num_warps=num_warps or NUM_WARPS,
    )  # fmt: skip
    return committed
