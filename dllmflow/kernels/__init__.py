"""Triton kernels for block-diffusion decoding, each beside its torch reference.

The public functions validate their arguments (ValueError naming the bad one) and dispatch:
Triton on CUDA tensors, the torch reference elsewhere (see dispatch.py for DLLMFLOW_KERNELS).
"""

from __future__ import annotations

import torch

from . import attention as _attention
from . import confidence as _confidence
from .dispatch import choose_backend

__all__ = [
    "block_causal_attention",
    "block_decode_attention",
    "choose_backend",
    "confidence_commit",
]


def confidence_commit(
    logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, tau: float | torch.Tensor
) -> torch.Tensor:
    """Commit confident masked positions in place; returns the committed [B, L] bool mask.

    logits [B, L, V] fp32/fp16/bf16; tokens [B, L] int64 (argmax ids written where committed);
    masked [B, L] bool (True = still masked; cleared where committed); tau a float or [B] tensor.
    Per row: p = max softmax probability (fp32), commit masked positions with p >= tau; if none
    passes, commit the most confident masked position (lowest position, lowest id on ties).
    """
    tau_rows = _confidence.check_confidence_args(logits, tokens, masked, tau)
    if choose_backend(logits, tokens, masked) == "triton":
        return _confidence.confidence_commit_triton(logits, tokens, masked, tau_rows)
    return _confidence.confidence_commit_reference(logits, tokens, masked, tau_rows)


def block_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, scale: float | None = None
) -> torch.Tensor:
    """q [B, H, T, D], k, v [B, Hkv, T, D]; query i attends key j iff j // block_size <= i //
    block_size. Hkv must divide H (grouped-query attention: query head h reads K/V head
    h // (H // Hkv); Hkv = H is multi-head attention).

    Returns [B, H, T, D]. Differentiable: the Triton path recomputes through the reference for
    the backward pass.
    """
    q, k, v, sc = _attention.check_block_causal_args(q, k, v, block_size, scale)
    if choose_backend(q, k, v) == "triton":
        return _attention.block_causal_attention_triton(q, k, v, block_size, sc)
    return _attention.block_causal_attention_reference(q, k, v, block_size, sc)


def block_decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """q [B, H, Lb, D] (active block) over cache k, v [B, Hkv, S, D]; keys >= kv_lens[b] ignored.

    Hkv must divide H, as for block_causal_attention (grouped-query attention).
    kv_lens [B] int32/int64 with Lb <= kv_lens[b] <= S (the active block's keys already written).
    Returns [B, H, Lb, D].
    """
    q, k, v, kv_lens, sc = _attention.check_decode_args(q, k, v, kv_lens, scale)
    if choose_backend(q, k, v, kv_lens) == "triton":
        return _attention.block_decode_attention_triton(q, k, v, kv_lens, sc)
    return _attention.block_decode_attention_reference(q, k, v, kv_lens, sc)
