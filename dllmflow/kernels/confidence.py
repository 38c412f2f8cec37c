"""Fused confidence + commit for confidence-gated block-diffusion decoding.

For each masked position: p = max softmax probability of its logits, id = argmax. A row commits
every masked position with p >= tau; a row with masked positions where none passes commits its
single most confident one, so each step makes progress.
"""

from __future__ import annotations

import torch

from .checks import FLOAT_DTYPES, require_dtype, require_same_device, require_shape, require_tensor


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


def confidence_commit_triton(
    logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, tau: torch.Tensor
) -> torch.Tensor:
    # Placeholder until the fused kernel lands: same semantics through the reference.
    return confidence_commit_reference(logits, tokens, masked, tau)
