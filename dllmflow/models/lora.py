"""Low-rank adapters: train a few million parameters over a frozen base, ship only those.

The real pair is the imported base plus one adapter each (``adapter.safetensors``: the LoRA
factors and any extra trained tensors such as the diffusion mask embedding). Serving merges the
adapter into the base weights once at load (W += scale * B @ A), so decoding costs nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """``base(x) + scale * (x @ A^T) @ B^T``; B starts at zero so training starts at the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def weight(self) -> torch.Tensor:  # code that reads .weight (dtype/device) still works
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * (
            self.scale
        )


def attach_lora(
    model: nn.Module, rank: int, alpha: float, targets: Iterable[str] = LORA_TARGETS
) -> list[str]:
    """Freeze ``model`` and wrap every nn.Linear named in ``targets``; returns wrapped paths."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    targets = tuple(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for path, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{path}.{name}" if path else name)
    if not wrapped:
        raise ValueError(f"no linear layer named one of {targets}")
    return wrapped


def adapter_state(model: nn.Module, extra: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The LoRA factors (``<path>.lora_a`` / ``.lora_b``) and the named extra parameters."""
    params = dict(model.named_parameters())
    state = {k: v.detach().cpu() for k, v in params.items() if ".lora_" in k}
    for name in extra:
        state[name] = params[name].detach().cpu()
    return state


def save_adapter(model: nn.Module, path: str | Path, extra: Iterable[str] = (), **meta) -> None:
    save_adapter_state(adapter_state(model, extra), path, **meta)


def save_adapter_state(state: dict[str, torch.Tensor], path: str | Path, **meta) -> None:
    """Write ``state`` in bf16 through a temporary file, so a crash leaves no half adapter."""
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    tmp.replace(path)


def merge_adapter(model: nn.Module, state: dict[str, torch.Tensor], alpha: float) -> int:
    """Add an adapter into a plain (unwrapped) model in place; returns tensors applied.

    ``<path>.lora_a`` [r, in] / ``<path>.lora_b`` [out, r] become ``<path>.weight +=
    alpha / r * B @ A``; any other key must name a parameter of ``model`` and replaces it.
    """
    params = dict(model.named_parameters())
    applied = 0
    with torch.no_grad():
        for key, a in state.items():
            if key.endswith(".lora_b"):
                continue
            if key.endswith(".lora_a"):
                path = key[: -len(".lora_a")]
                b = state[path + ".lora_b"]
                weight = params.get(path + ".weight")
                if weight is None:
                    raise ValueError(f"adapter names {path}, which the model does not have")
                delta = (b.float() @ a.float()) * (alpha / a.shape[0])
                weight.add_(delta.to(weight.dtype))
                applied += 2
            else:
                key_in_model = key.replace(".base.", ".")
                if key_in_model not in params:
                    raise ValueError(f"adapter tensor {key} matches no model parameter")
                params[key_in_model].copy_(a.to(params[key_in_model].dtype))
                applied += 1
    return applied


def stack_adapters(
    below: dict[str, torch.Tensor], above: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One adapter equal to ``below`` plus ``above``, trained at the same scale alpha / rank.

    B1 @ A1 + B2 @ A2 == [B1 B2] @ [A1; A2]: the factors concatenate along the rank, so the
    sum ships as one adapter of rank r1 + r2 at the same scale (alpha = scale * (r1 + r2)).
    Extra tensors (the mask embedding) come from ``above``, which trained on from ``below``'s.
    """
    lora_keys = {k for k in below if ".lora_" in k}
    if lora_keys != {k for k in above if ".lora_" in k}:
        missing = sorted(lora_keys ^ {k for k in above if ".lora_" in k})
        raise ValueError(f"the adapters wrap different layers: {missing[:3]}")
    out = {}
    for key, tensor in above.items():
        if key.endswith(".lora_a"):
            out[key] = torch.cat([below[key].to(tensor.dtype), tensor], dim=0)
        elif key.endswith(".lora_b"):
            out[key] = torch.cat([below[key].to(tensor.dtype), tensor], dim=1)
        else:
            out[key] = tensor
    return out


def load_adapter(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter at {path}")
    # LoRA keys were saved from wrapped modules ("...q_proj.lora_a"); their paths name the
    # plain model's modules too, so they merge without renaming.
    return load_file(str(path))
