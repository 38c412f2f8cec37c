"""Transformer pieces shared by the AR and block-diffusion models (same depth, width, tokenizer).

Only the attention pattern differs between the two models, so a block takes the attention
function as an argument: ``attend(q, k, v) -> out`` with q, k, v [B, H, T, D] after rotary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def rotary(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, T, D/2] for integer positions [B, T] (rows may sit at different offsets)."""
    inv = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    )
    ang = positions.float()[..., None] * inv  # [B, T, D/2]
    return ang.cos()[:, None].to(dtype), ang.sin()[:, None].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]  # [B, H, T, D/2] each
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    """Pre-norm transformer block; attention pattern supplied by the caller."""

    def __init__(self, n_embd: int, n_head: int, mlp_ratio: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = RMSNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)
        self.ln2 = RMSNorm(n_embd)
        self.fc = nn.Linear(n_embd, mlp_ratio * n_embd, bias=False)
        self.fc_out = nn.Linear(mlp_ratio * n_embd, n_embd, bias=False)

    def qkv_heads(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, C] -> q, k, v [B, H, T, D] with rotary applied to q and k."""
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend):
        b, t, c = x.shape
        q, k, v = self.qkv_heads(x, cos, sin)
        y = attend(q, k, v).transpose(1, 2).reshape(b, t, c)  # [B, T, C]
        x = x + self.proj(y)
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


def init_weights(module: nn.Module, n_layer: int) -> None:
    """GPT-2 style: N(0, 0.02), residual projections scaled down by depth."""
    if isinstance(module, nn.Linear):
        std = 0.02
        if getattr(module, "_residual", False):
            std /= math.sqrt(2 * n_layer)
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, RMSNorm):
        nn.init.ones_(module.weight)


def mark_residual(block: Block) -> None:
    block.proj._residual = True  # type: ignore[attr-defined]
    block.fc_out._residual = True  # type: ignore[attr-defined]


def write_cache(
    cache: torch.Tensor, new: torch.Tensor, starts: torch.Tensor
) -> None:  # cache [B, H, S, D], new [B, H, L, D], starts [B]
    """Write each row's new keys/values at its own offset (rows sit at different lengths)."""
    length = new.shape[2]
    for row, start in enumerate(starts.tolist()):
        cache[row, :, start : start + length] = new[row]


def cached_attention(
    q: torch.Tensor,  # [B, H, L, D] the new positions' queries
    k: torch.Tensor,  # [B, H, L, D] their keys
    v: torch.Tensor,  # [B, H, L, D] their values
    cache_k: torch.Tensor,  # [B, H, S, D] written in place
    cache_v: torch.Tensor,  # [B, H, S, D]
    starts: torch.Tensor,  # [B] where each row's new positions go in its cache
    sub_block: int,
) -> torch.Tensor:
    """Write the new keys/values into the cache, then let each ``sub_block`` of queries attend
    the cache up to the end of its own sub-block (bidirectional inside a sub-block, causal across):
    sub_block=1 is AR decoding, sub_block=block_size a diffusion block. Returns [B, H, L, D]."""
    from dllmflow import kernels

    write_cache(cache_k, k, starts)
    write_cache(cache_v, v, starts)
    length = q.shape[2]
    outs = []
    for i in range(0, length, sub_block):
        end = min(i + sub_block, length)
        kv_lens = starts + end  # [B]
        outs.append(kernels.block_decode_attention(q[:, :, i:end], cache_k, cache_v, kv_lens))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
