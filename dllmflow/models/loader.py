"""Load a backend (model, tokenizer, sampler) from a shipped name or a local checkpoint directory.

  load_backend("ar")                 -> the shipped AR checkpoint (dllmflow/checkpoints/ar)
  load_backend("diffusion")          -> the shipped block-diffusion checkpoint
  load_backend("smollm2-135m/ar")    -> the real pair's AR half (adapter over the imported base;
                                        "smollm2-135m/diffusion" is its block-diffusion half)
  load_backend("/path/to/ckpt")      -> whatever config.json says: our AR or diffusion model,
                                        or any Hugging Face causal LM (AutoModelForCausalLM)
Every backend comes with a sampler of the same step-level interface (sampling/base.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .sampling.base import Sampler

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
SHIPPED = ("ar", "diffusion", "smollm2-135m/ar", "smollm2-135m/diffusion")


class Backend(NamedTuple):
    model: Any
    tokenizer: Any
    sampler: Sampler


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A shipped name ("ar", "diffusion") or an existing directory with a config.json."""
    name = str(path_or_name)
    path = CHECKPOINT_DIR / name if name in SHIPPED else Path(name).expanduser()
    if not (path / "config.json").is_file():
        hint = f"; shipped names: {', '.join(SHIPPED)}" if name not in SHIPPED else ""
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing){hint}")
    return path


def load_backend(
    path_or_name: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None
) -> Backend:
    """dtype: float32 by default; the real pair runs in bfloat16 on a GPU."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_checkpoint(path_or_name)
    model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
    if model_type == "dllmflow-llama":
        from .real_pair import load_pair_model
        from .sampling.ar import ARSampler
        from .sampling.diffusion import DiffusionSampler

        on_gpu = str(device).startswith("cuda")
        dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
        model, tok, _base = load_pair_model(path, device=device, dtype=dtype)
        sampler_cls = ARSampler if model.config.kind == "ar" else DiffusionSampler
        return Backend(model, tok, sampler_cls(model, tok))
    dtype = dtype or torch.float32
    if model_type == "dllmflow-ar":
        from .modeling_ar import ARForCausalLM
        from .sampling.ar import ARSampler
        from .tokenizer import load_tokenizer

        model = ARForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
        tok = load_tokenizer(path)
        return Backend(model, tok, ARSampler(model, tok))
    if model_type == "dllmflow-diffusion":
        from .modeling_diffusion import BlockDiffusionLM
        from .sampling.diffusion import DiffusionSampler
        from .tokenizer import load_tokenizer

        model = BlockDiffusionLM.from_pretrained(str(path), dtype=dtype).to(device)
        tok = load_tokenizer(path)
        return Backend(model, tok, DiffusionSampler(model, tok))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .sampling.hf import HFCausalSampler

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
    except ValueError as exc:
        raise ValueError(
            f"{path}: model type {model_type!r} is not a causal LM transformers can load "
            f"({exc}); diffusion checkpoints other than dllmflow's are not supported"
        ) from None
    tok = AutoTokenizer.from_pretrained(str(path))
    return Backend(model, tok, HFCausalSampler(model, tok))
