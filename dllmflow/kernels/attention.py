"""Block-causal attention for block diffusion: training/prefill over whole sequences, and decode
of the active block over the KV cache.

Training mask: query i sees key j iff j // block_size <= i // block_size (bidirectional inside a
block, causal across blocks). Decode: the active block's queries see every cached key below
kv_lens[b] (the active block's own keys are already written at the end of that range).

Grouped-query attention: k and v may have fewer heads than q (Hkv dividing H); query head h reads
K/V head h // (H // Hkv). The Triton kernels give one program a tile of rows drawn from a whole
query group (all G = H // Hkv heads that share a K/V head), so each K/V tile is loaded once for
the group instead of once per query head. With G = 1 (multi-head attention) they run exactly the
code they ran before grouped queries were supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .checks import (
    FLOAT_DTYPES,
    require_dtype,
    require_same_device,
    require_shape,
    require_tensor,
    resolve_scale,
)
from .dispatch import (
    arrival_counters,
    ceil_div,
    interpret_mode,
    lazy_kernel,
    multiprocessor_count,
    next_pow2,
)


def check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = require_tensor("q", q, 4)
    k = require_tensor("k", k, 4)
    v = require_tensor("v", v, 4)
    require_dtype("q", q, FLOAT_DTYPES)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    require_same_device({"q": q, "k": k, "v": v})
    b, h, _, d = q.shape
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"k must have shape [B={b}, Hkv, S, D={d}], got {tuple(k.shape)}")
    if k.shape[1] == 0 or h % k.shape[1] != 0:
        raise ValueError(
            f"k has {k.shape[1]} heads, which must divide q's {h} heads (grouped-query attention: "
            f"n_heads % n_kv_heads == 0); q has shape {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    require_shape("v", v, tuple(k.shape), "same as k")
    if d == 0 or d > 256:
        raise ValueError(f"head dim D must be in 1..256, got {d}")
    return q, k, v


def block_causal_mask(t: int, block_size: int, device: torch.device) -> torch.Tensor:
    """[T, T] bool, True where query i may attend key j."""
    blk = torch.arange(t, device=device) // block_size
    return blk[None, :] <= blk[:, None]


def decode_mask(kv_lens: torch.Tensor, s: int) -> torch.Tensor:
    """[B, 1, 1, S] bool, True where the key is inside the cache."""
    return (torch.arange(s, device=kv_lens.device)[None, :] < kv_lens[:, None])[:, None, None, :]


def group_size(q: torch.Tensor, k: torch.Tensor) -> int:
    """Query heads per K/V head (1 for multi-head attention)."""
    return q.shape[1] // k.shape[1]


def expand_kv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V with each head repeated for its query group: [B, Hkv, S, D] -> [B, H, S, D]."""
    g = group_size(q, k)
    if g == 1:
        return k, v
    return k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)


def block_causal_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, scale: float
) -> torch.Tensor:
    k, v = expand_kv(q, k, v)
    mask = block_causal_mask(q.shape[2], block_size, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def block_decode_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lens: torch.Tensor, scale: float
) -> torch.Tensor:
    k, v = expand_kv(q, k, v)
    mask = decode_mask(kv_lens, k.shape[2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def check_block_causal_args(q: object, k: object, v: object, block_size: object, scale: object):
    q, k, v = check_qkv(q, k, v)
    if k.shape[2] != q.shape[2]:
        raise ValueError(
            f"k must have as many positions as q (T={q.shape[2]}) for block-causal attention, "
            f"got {k.shape[2]}"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return q, k, v, resolve_scale(scale, q.shape[3])


def check_decode_args(q: object, k: object, v: object, kv_lens: object, scale: object):
    q, k, v = check_qkv(q, k, v)
    kv_lens = require_tensor("kv_lens", kv_lens, 1)
    require_dtype("kv_lens", kv_lens, (torch.int32, torch.int64))
    require_shape("kv_lens", kv_lens, (q.shape[0],), "one cache length per batch row")
    require_same_device({"q": q, "kv_lens": kv_lens})
    if q.shape[2] > k.shape[2]:
        raise ValueError(
            f"the active block (q has {q.shape[2]} positions) must fit in the cache "
            f"(k has S={k.shape[2]})"
        )
    return q, k, v, kv_lens, resolve_scale(scale, q.shape[3])


# ---------------------------------------------------------------------------------------------
# Triton: flash-attention style forward. One program owns a tile of queries of one (batch, head)
# and streams key/value tiles through an online softmax in fp32 (exp2 domain); scores never reach
# memory. Decode splits the cache over several programs (flash-decoding) when batch x heads alone
# cannot fill the GPU; the last split program to finish for a query tile (an arrival counter)
# merges the tile's splits by their log-sum-exp, so decode is one launch.

_LOG2E = 1.4426950408889634

if TYPE_CHECKING:
    import triton.language as tl


@lazy_kernel
def _attend_tiles(
    acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, d_ok,
    lo, hi, n_keys, block_size, qk_scale,
    MASK: tl.constexpr, BLOCK_CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    """Fold keys [lo, hi) into (acc [M, D], m_i [M], l_i [M]). MASK: apply the key bound n_keys
    and, with BLOCK_CAUSAL, the block-causal rule; without MASK every key is visible."""
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        kv_ok = (cols[:, None] < n_keys) & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :], mask=kv_ok, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=kv_ok, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale  # [M, N]
        if MASK:
            ok = cols[None, :] < n_keys
            if BLOCK_CAUSAL:
                ok = ok & ((cols[None, :] // block_size) <= (offs_m[:, None] // block_size))
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@lazy_kernel
def _block_causal_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,
    H, T, D, block_size, qk_scale,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, GROUP: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_M rows of one (batch, K/V head). H is the number of K/V heads. With
    GROUP > 1 the rows are (position, query head) pairs, position-major: row r is position
    r // GROUP of query head h * GROUP + r % GROUP, so a tile spans BLOCK_M / GROUP positions of
    every head in the group and each K/V tile it loads serves the whole group."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    # The multi-head case (GROUP == 1) keeps the operation order it had before grouped queries,
    # so it compiles to the same machine code.
    if GROUP == 1:
        pos = offs_m
        q_base = q_ptr + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
        k_base = k_ptr + b.to(tl.int64) * skb + h.to(tl.int64) * skh
        v_base = v_ptr + b.to(tl.int64) * svb + h.to(tl.int64) * svh
        q_ok = (offs_m[:, None] < T) & d_ok[None, :]
        q = tl.load(q_base + offs_m[:, None] * sqt + offs_d[None, :], mask=q_ok, other=0.0)
    else:
        pos = offs_m // GROUP  # this row's position; its head is h * GROUP + offs_m % GROUP
        k_base = k_ptr + b.to(tl.int64) * skb + h.to(tl.int64) * skh
        v_base = v_ptr + b.to(tl.int64) * svb + h.to(tl.int64) * svh
        q_ok = (pos[:, None] < T) & d_ok[None, :]
        q_ptrs = _group_ptrs(q_ptr, b, h, offs_m, offs_d, sqb, sqh, sqt, GROUP)
        q = tl.load(q_ptrs, mask=q_ok, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    # Keys below the first query's block end are visible to the whole tile: no mask there.
    # Between that and the last query's block end, apply the block-causal rule per element.
    if GROUP == 1:
        q_first = m0
        q_last = tl.minimum(m0 + BLOCK_M, T) - 1
    else:
        q_first = m0 // GROUP
        q_last = (tl.minimum(m0 + BLOCK_M, T * GROUP) - 1) // GROUP
    all_see = tl.minimum(T, (q_first // block_size + 1) * block_size)
    full_end = (all_see // BLOCK_N) * BLOCK_N
    hi = tl.minimum(T, (q_last // block_size + 1) * block_size)
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, skt, svt, pos, offs_d, d_ok,
        0, full_end, T, block_size, qk_scale,
        MASK=False, BLOCK_CAUSAL=True, BLOCK_N=BLOCK_N, INPUT_PRECISION=INPUT_PRECISION,
        DOT_FP32=DOT_FP32,
    )  # fmt: skip
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, skt, svt, pos, offs_d, d_ok,
        full_end, hi, T, block_size, qk_scale,
        MASK=True, BLOCK_CAUSAL=True, BLOCK_N=BLOCK_N, INPUT_PRECISION=INPUT_PRECISION,
        DOT_FP32=DOT_FP32,
    )  # fmt: skip
    out = acc / l_i[:, None]
    if GROUP == 1:
        o_base = o_ptr + b.to(tl.int64) * sob + h.to(tl.int64) * soh
        tl.store(o_base + offs_m[:, None] * sot + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=q_ok)  # fmt: skip
    else:
        o_ptrs = _group_ptrs(o_ptr, b, h, offs_m, offs_d, sob, soh, sot, GROUP)
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=q_ok)


@lazy_kernel
def _group_ptrs(ptr, b, h, offs_m, offs_d, s_b, s_h, s_t, GROUP: tl.constexpr):
    """[M, D] addresses of rows offs_m of the query group of (batch b, K/V head h) in a
    [B, H, T, D] tensor: row r is position r // GROUP of head h * GROUP + r % GROUP."""
    base = ptr + b.to(tl.int64) * s_b + (h * GROUP).to(tl.int64) * s_h
    rows = (offs_m % GROUP) * s_h + (offs_m // GROUP) * s_t
    return base + rows[:, None] + offs_d[None, :]


@lazy_kernel
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, kv_lens_ptr, o_ptr, part_o_ptr, part_lse_ptr, arrived_ptr,
    H, Lb, D, chunk, n_split, qk_scale,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, GROUP: tl.constexpr,
    SPLIT: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_M of the Lb * GROUP rows of one (batch, K/V head) over one split of the
    cache. H is the number of K/V heads; rows are (position, query head) pairs, position-major as
    in _block_causal_kernel. Every row sees the same keys, so a group shares each K/V tile."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    split = tl.program_id(2)
    b = bh // H
    h = bh % H
    kv_len = tl.load(kv_lens_ptr + b).to(tl.int32)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    # As in _block_causal_kernel, GROUP == 1 keeps its former operation order.
    if GROUP == 1:
        rows = Lb
        q_ok = (offs_m[:, None] < Lb) & d_ok[None, :]
        q_base = q_ptr + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
        k_base = k_ptr + b.to(tl.int64) * skb + h.to(tl.int64) * skh
        v_base = v_ptr + b.to(tl.int64) * svb + h.to(tl.int64) * svh
        q = tl.load(q_base + offs_m[:, None] * sqt + offs_d[None, :], mask=q_ok, other=0.0)
    else:
        rows = Lb * GROUP
        q_ok = (offs_m[:, None] < rows) & d_ok[None, :]
        k_base = k_ptr + b.to(tl.int64) * skb + h.to(tl.int64) * skh
        v_base = v_ptr + b.to(tl.int64) * svb + h.to(tl.int64) * svh
        q_ptrs = _group_ptrs(q_ptr, b, h, offs_m, offs_d, sqb, sqh, sqt, GROUP)
        q = tl.load(q_ptrs, mask=q_ok, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    lo = split * chunk
    hi = tl.minimum(lo + chunk, kv_len)
    full_end = tl.maximum(lo, lo + ((hi - lo) // BLOCK_N) * BLOCK_N)
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, skt, svt, offs_m, offs_d, d_ok,
        lo, full_end, kv_len, 1, qk_scale,
        MASK=False, BLOCK_CAUSAL=False, BLOCK_N=BLOCK_N, INPUT_PRECISION=INPUT_PRECISION,
        DOT_FP32=DOT_FP32,
    )  # fmt: skip
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, skt, svt, offs_m, offs_d, d_ok,
        full_end, hi, hi, 1, qk_scale,
        MASK=True, BLOCK_CAUSAL=False, BLOCK_N=BLOCK_N, INPUT_PRECISION=INPUT_PRECISION,
        DOT_FP32=DOT_FP32,
    )  # fmt: skip
    if SPLIT:
        # Normalized partial output and its log2-sum-exp2; an empty split gets lse = -inf.
        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
        row = (bh * n_split + split) * rows + offs_m  # part_o [B*H, n_split, rows, D]
        tl.store(part_o_ptr + row[:, None] * D + offs_d[None, :], out, mask=q_ok)
        tl.store(part_lse_ptr + row, lse, mask=offs_m < rows)
        # Stores before the release half of the arrival; the last arrival reads through L2.
        tl.debug_barrier()
        tile = bh * tl.num_programs(0) + pid_m
        arrived = tl.atomic_add(arrived_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == n_split - 1:
            _merge_splits(
                part_o_ptr, part_lse_ptr, o_ptr, b, h, bh, offs_m, offs_d, q_ok, rows, D, n_split,
                sob, soh, sot, BLOCK_M, BLOCK_D, GROUP,
            )  # fmt: skip
            tl.store(arrived_ptr + tile, 0)  # every split has arrived: ready for reuse
    else:
        out = acc / l_i[:, None]
        if GROUP == 1:
            o_base = o_ptr + b.to(tl.int64) * sob + h.to(tl.int64) * soh
            tl.store(o_base + offs_m[:, None] * sot + offs_d[None, :],
                     out.to(o_ptr.dtype.element_ty), mask=q_ok)  # fmt: skip
        else:
            o_ptrs = _group_ptrs(o_ptr, b, h, offs_m, offs_d, sob, soh, sot, GROUP)
            tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=q_ok)


@lazy_kernel
def _merge_splits(
    part_o_ptr, part_lse_ptr, o_ptr, b, h, bh, offs_m, offs_d, q_ok, rows, D, n_split, sob, soh,
    sot, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, GROUP: tl.constexpr,
):  # fmt: skip
    """Combine a query tile's normalized split outputs, weighted by exp2(lse), in one sweep."""
    top = tl.full([BLOCK_M], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for split in range(n_split):
        row = (bh * n_split + split) * rows + offs_m
        lse = tl.load(
            part_lse_ptr + row, mask=offs_m < rows, other=float("-inf"), cache_modifier=".cg"
        )
        o = tl.load(part_o_ptr + row[:, None] * D + offs_d[None, :], mask=q_ok, other=0.0,
                    cache_modifier=".cg")  # fmt: skip
        new_top = tl.maximum(top, lse)
        ref = tl.where(new_top == float("-inf"), 0.0, new_top)  # nothing yet: weights 0, not NaN
        alpha = tl.exp2(top - ref)
        w = tl.exp2(lse - ref)
        total = total * alpha + w
        acc = acc * alpha[:, None] + o * w[:, None]
        top = new_top
    out = acc / total[:, None]
    if GROUP == 1:
        o_base = o_ptr + b.to(tl.int64) * sob + h.to(tl.int64) * soh
        tl.store(o_base + offs_m[:, None] * sot + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=q_ok)  # fmt: skip
    else:
        o_ptrs = _group_ptrs(o_ptr, b, h, offs_m, offs_d, sob, soh, sot, GROUP)
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=q_ok)


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs keep full-precision dots (tf32 would miss the reference by ~1e-3).
    return "ieee" if dtype == torch.float32 else "tf32"


def _dot_fp32(dtype: torch.dtype) -> bool:
    # Triton's CPU interpreter gets bf16 dots wrong; there the operands go up to fp32 first.
    return dtype == torch.bfloat16 and interpret_mode()


def _last_dim_contiguous(*xs: torch.Tensor) -> list[torch.Tensor]:
    return [x if x.stride(-1) == 1 else x.contiguous() for x in xs]


def block_causal_forward_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_size: int,
    scale: float,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Forward only; q [B, H, T, D], k, v [B, Hkv, T, D] (Hkv divides H) -> [B, H, T, D].
    Keyword args override tuning; block_m counts rows of a query group (positions x heads)."""
    q, k, v = _last_dim_contiguous(q, k, v)
    b, _, t, d = q.shape
    h_kv, group = k.shape[1], group_size(q, k)
    out = torch.empty_like(q)
    if out.numel() == 0:
        return out
    block_d = max(16, next_pow2(d))
    # 64 x 64 tiles at 4 warps were the fastest of the configurations timed on an H200
    # (bench/results/kernels_run1_quick.json), ahead of 128 x 64 at 8 warps.
    block_m = block_m or (64 if q.is_cuda else 16)
    block_n = block_n or (64 if q.is_cuda else 16)
    num_warps = num_warps or (8 if block_m >= 128 else 4)
    num_stages = num_stages or (3 if q.is_cuda else 1)
    grid = (ceil_div(t * group, block_m), b * h_kv)
    _block_causal_kernel[grid](
        q, k, v, out, h_kv, t, d, block_size, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, GROUP=group,
        INPUT_PRECISION=_precision(q.dtype), DOT_FP32=_dot_fp32(q.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out


class _BlockCausalAttention(torch.autograd.Function):
    """Triton forward; the backward recomputes through the reference (SDPA with a mask)."""

    @staticmethod
    def forward(ctx, q, k, v, block_size: int, scale: float):  # type: ignore[override]
        ctx.save_for_backward(q, k, v)
        ctx.block_size, ctx.scale = block_size, scale
        return block_causal_forward_triton(q, k, v, block_size, scale)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v = (x.detach().requires_grad_() for x in ctx.saved_tensors)
        with torch.enable_grad():
            out = block_causal_attention_reference(q, k, v, ctx.block_size, ctx.scale)
            dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out)
        return dq, dk, dv, None, None


def block_causal_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, scale: float
) -> torch.Tensor:
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _BlockCausalAttention.apply(q, k, v, block_size, scale)
    return block_causal_forward_triton(q, k, v, block_size, scale)


def decode_splits(programs: int, sms: int) -> int:
    """Cache splits per (batch, K/V head, row tile) program of block decode (flash-decoding).

    Split until about one program per SM is busy; fewer, longer splits won the H100 sweep
    (`bench/kernels.py --tune decode`): batch 1 with 32 heads runs best at 4 splits (13.8 us
    for a 1K cache vs 17.8 us at 8), batch 4 unsplit. Between one and two programs per SM the
    second wave would run part-empty, so the cache is split in two: on an H200, SmolLM2's
    layout at batch 32 over a 4K cache (192 programs on 132 SMs) takes 40.0 us split in two
    against 50.2 us unsplit (`--tune decode-gqa`)."""
    if programs <= sms:
        return max(1, sms // programs)
    return 2 if programs < 2 * sms else 1


def block_decode_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float,
    *,
    n_split: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """q [B, H, Lb, D], k, v [B, Hkv, S, D] (Hkv divides H), kv_lens [B] -> [B, H, Lb, D].

    Forward only. A program covers block_m of the Lb x (H // Hkv) rows of one K/V head's query
    group, so with grouped queries each K/V tile is read once per group (per block_m rows)."""
    q, k, v = _last_dim_contiguous(q, k, v)
    b, _, lb, d = q.shape
    h_kv, group = k.shape[1], group_size(q, k)
    rows = lb * group
    s_len = k.shape[2]
    out = torch.empty_like(q)
    if out.numel() == 0:
        return out
    block_d = max(16, next_pow2(d))
    block_m = block_m or min(64, max(16, next_pow2(rows)))
    num_warps = num_warps or 4
    num_stages = num_stages or (3 if q.is_cuda else 1)
    m_tiles = ceil_div(rows, block_m)
    programs, sms = b * h_kv * m_tiles, multiprocessor_count(q.device)
    if n_split is None:
        n_split = decode_splits(programs, sms)
    if block_n is None:
        # With one or two unsplit programs per SM, each must keep HBM busy nearly alone:
        # 128-key tiles beat 64 at batch 4 x 32 heads by up to 1% on an H100 and 8-21% on an H200.
        # With more (batch 16) 64 is as fast (H200) or faster (H100: 99.8 vs 102.9 us, 1K).
        # 3 stages of 128-key K and V tiles take 192 KB of shared memory at D = 128, 16-bit.
        # Split D = 128 rows with at most two programs per SM gain too: Qwen2.5-7B's layout at
        # batch 4 over a 4K cache, 2 splits, 31.8 us against 37.0 with 64 (H200).
        few = programs * n_split <= 2 * sms
        wide = few and (n_split == 1 or block_d == 128) and block_d * q.element_size() <= 256
        block_n = 16 if not q.is_cuda else 128 if wide else 64
    tiles = ceil_div(s_len, block_n)
    n_split = min(tiles, n_split)
    chunk = ceil_div(tiles, max(1, n_split)) * block_n
    n_split = ceil_div(s_len, chunk)
    split = n_split > 1
    if split:
        part_o = torch.empty((b * h_kv, n_split, rows, d), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((b * h_kv, n_split, rows), dtype=torch.float32, device=q.device)
        arrived = arrival_counters(q.device, b * h_kv * m_tiles)
    else:
        part_o = part_lse = arrived = out  # unused
    _decode_kernel[(m_tiles, b * h_kv, n_split)](
        q, k, v, kv_lens, out, part_o, part_lse, arrived, h_kv, lb, d, chunk, n_split,
        scale * _LOG2E, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
        out.stride(2), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, GROUP=group, SPLIT=split,
        INPUT_PRECISION=_precision(q.dtype),
        DOT_FP32=_dot_fp32(q.dtype), num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out
