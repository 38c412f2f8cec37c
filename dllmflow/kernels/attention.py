"""Block-causal attention for block diffusion: training/prefill over whole sequences, and decode
of the active block over the KV cache.

Training mask: query i sees key j iff j // block_size <= i // block_size (bidirectional inside a
block, causal across blocks). Decode: the active block's queries see every cached key below
kv_lens[b] (the active block's own keys are already written at the end of that range).
"""

from __future__ import annotations

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


def check_qkv(q: object, k: object, v: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = require_tensor("q", q, 4)
    k = require_tensor("k", k, 4)
    v = require_tensor("v", v, 4)
    require_dtype("q", q, FLOAT_DTYPES)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    require_same_device({"q": q, "k": k, "v": v})
    b, h, _, d = q.shape
    if k.shape[0] != b or k.shape[1] != h or k.shape[3] != d:
        raise ValueError(f"k must have shape [B={b}, H={h}, S, D={d}], got {tuple(k.shape)}")
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


def block_causal_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, scale: float
) -> torch.Tensor:
    mask = block_causal_mask(q.shape[2], block_size, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def block_decode_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lens: torch.Tensor, scale: float
) -> torch.Tensor:
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


def block_causal_attention_triton(q, k, v, block_size: int, scale: float) -> torch.Tensor:
    # Placeholder until the fused kernel lands.
    return block_causal_attention_reference(q, k, v, block_size, scale)


def block_decode_attention_triton(q, k, v, kv_lens, scale: float) -> torch.Tensor:
    # Placeholder until the fused kernel lands.
    return block_decode_attention_reference(q, k, v, kv_lens, scale)
