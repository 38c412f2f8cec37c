"""Load a backend (model, tokenizer, sampler) from a shipped name or a local checkpoint directory.

  load_backend("ar")                 -> the shipped AR checkpoint (dllmflow/checkpoints/ar)
  load_backend("diffusion")          -> the shipped block-diffusion checkpoint
  load_backend("smollm2-135m/ar")    -> the real pair's AR half (adapter over the imported base;
                                        "smollm2-135m/diffusion" is its block-diffusion half)
  load_backend("/path/to/ckpt")      -> whatever config.json says: our AR or diffusion model,
                                        a family families.py knows (Llama, Qwen2, SDAR,
                                        Fast-dLLM v2, LLaDA, Dream), or any Hugging Face
                                        causal LM (AutoModelForCausalLM)
Every backend comes with a sampler of the same step-level interface (sampling/base.py).
``slot`` ("ar" / "diffusion": where the backend will serve) refuses a checkpoint of the other
kind, e.g. a causal LM put in the diffusion slot.
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


def dtype_from_name(name: str) -> torch.dtype | None:
    """A dtype setting (ServingSettings.dtype, bench --dtype) as load_backend takes it: None
    ("auto") lets the loader choose."""
    if name == "auto":
        return None
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype must be auto, float32 or bfloat16, got {name!r}")
    return dtypes[name]


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A shipped name ("ar", "diffusion") or an existing directory with a config.json."""
    name = str(path_or_name)
    path = CHECKPOINT_DIR / name if name in SHIPPED else Path(name).expanduser()
    if not (path / "config.json").is_file():
        hint = f"; shipped names: {', '.join(SHIPPED)}" if name not in SHIPPED else ""
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing){hint}")
    return path


def _check_own_slot(path: Path, kind: str, slot: str | None) -> None:
    if slot is not None and kind != slot:
        other = "an autoregressive" if kind == "ar" else "a block-diffusion"
        raise ValueError(f"{path}: {other} checkpoint cannot serve in the {slot} slot")


def load_backend(
    path_or_name: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    slot: str | None = None,
    trust_remote_code: bool | None = None,
) -> Backend:
    """dtype: float32 by default; the real pair and the adapted Hugging Face families run in
    bfloat16 on a GPU. trust_remote_code: None reads the setting (DLLMFLOW_TRUST_REMOTE_CODE)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if slot not in (None, "ar", "diffusion"):
        raise ValueError(f"slot must be 'ar' or 'diffusion', got {slot!r}")
    path = resolve_checkpoint(path_or_name)
    cfg = json.loads((path / "config.json").read_text())
    model_type = cfg.get("model_type", "")
    if model_type == "dllmflow-llama":
        from .real_pair import load_pair_model
        from .sampling.ar import ARSampler
        from .sampling.diffusion import DiffusionSampler

        on_gpu = str(device).startswith("cuda")
        dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
        _check_own_slot(path, cfg.get("kind", "ar"), slot)
        model, tok, _base = load_pair_model(path, device=device, dtype=dtype)
        sampler_cls = ARSampler if model.config.kind == "ar" else DiffusionSampler
        return Backend(model, tok, sampler_cls(model, tok))
    if model_type not in ("dllmflow-ar", "dllmflow-diffusion"):
        return _load_hf(path, cfg, device, dtype, slot, trust_remote_code)
    _check_own_slot(path, "ar" if model_type == "dllmflow-ar" else "diffusion", slot)
    dtype = dtype or torch.float32
    if model_type == "dllmflow-ar":
        from .modeling_ar import ARForCausalLM
        from .sampling.ar import ARSampler
        from .tokenizer import load_tokenizer

        model = ARForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
        tok = load_tokenizer(path)
        return Backend(model, tok, ARSampler(model, tok))
    from .modeling_diffusion import BlockDiffusionLM
    from .sampling.diffusion import DiffusionSampler
    from .tokenizer import load_tokenizer

    model = BlockDiffusionLM.from_pretrained(str(path), dtype=dtype).to(device)
    tok = load_tokenizer(path)
    return Backend(model, tok, DiffusionSampler(model, tok))


def _hf_tokenizer(path: Path, mask_id: int | None, trust_remote_code: bool):
    """The checkpoint's tokenizer with a pad token (its eos if it names none) and, for a
    diffusion model, its mask token named when the vocabulary has it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no eos token, so a turn could never end")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if mask_id is not None and tok.mask_token_id != mask_id and mask_id < len(tok):
        tok.mask_token = tok.convert_ids_to_tokens(mask_id)
    return tok


def _load_hf(
    path: Path,
    cfg: dict[str, Any],
    device: str,
    dtype: torch.dtype | None,
    slot: str | None,
    trust_remote_code: bool | None,
) -> Backend:
    """A Hugging Face checkpoint: a known family (families.py) or any causal LM."""
    from .families import (
        adapter_problem,
        build_adapter,
        check_slot,
        default_dtype,
        describe,
        detect_family,
        mask_token_id,
    )

    family = detect_family(cfg)
    check_slot(path, cfg, family, slot)  # type: ignore[arg-type]
    if trust_remote_code is None:
        from dllmflow.config import get_settings

        trust_remote_code = get_settings().trust_remote_code
    if family is not None and family.served_by == "adapter":
        problem = adapter_problem(cfg, family)
        if problem is None:
            from .sampling.ar import ARSampler
            from .sampling.diffusion import DiffusionSampler

            model = build_adapter(path, cfg, family)
            model = model.to(device=device, dtype=dtype or default_dtype(device)).eval()
            mask = model.config.mask_token_id if family.slot == "diffusion" else None
            tok = _hf_tokenizer(path, mask, trust_remote_code)
            sampler_cls = ARSampler if family.slot == "ar" else DiffusionSampler
            return Backend(model, tok, sampler_cls(model, tok))
        if family.slot == "diffusion":
            raise ValueError(
                f"{path}: this {family.name} checkpoint uses {problem}, which dllmflow's "
                "block-diffusion network does not implement, so it cannot be served"
            )
        # A causal LM the adapter cannot reproduce: transformers' own model, one at a time.
    if family is not None and family.served_by == "remote-code":
        if not trust_remote_code:
            raise ValueError(
                f"{path}: {describe(cfg)} is a {family.name} full-attention diffusion LM, which "
                "dllmflow serves only through the modeling code the checkpoint ships; that code "
                "runs in this process, so it is off unless you opt in: set "
                "DLLMFLOW_TRUST_REMOTE_CODE=1 if you trust this checkpoint (its code needs "
                f"transformers {family.remote_transformers.split(':')[0]})"
            )
        from transformers import AutoModel

        from .sampling.masked import MaskedDiffusionSampler

        model = AutoModel.from_pretrained(
            str(path), trust_remote_code=True, dtype=dtype or default_dtype(device)
        )
        model = model.to(device).eval()
        mask = mask_token_id(model.config, family)
        tok = _hf_tokenizer(path, mask, True)
        max_position = getattr(model.config, "max_sequence_length", None) or getattr(
            model.config, "max_position_embeddings", 4096
        )
        sampler = MaskedDiffusionSampler(
            model, tok, mask_id=mask, token_shift=family.token_shift, max_position=max_position
        )
        return Backend(model, tok, sampler)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .sampling.hf import HFCausalSampler

    dtype = dtype or torch.float32
    model_type = cfg.get("model_type", "")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, trust_remote_code=trust_remote_code
        ).to(device)
    except ValueError as exc:
        raise ValueError(
            f"{path}: model type {model_type!r} is not a causal LM transformers can load "
            f"({exc}); diffusion checkpoints other than dllmflow's and those of the families "
            "in dllmflow/models/families.py are not supported"
        ) from None
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return Backend(model, tok, HFCausalSampler(model, tok))
