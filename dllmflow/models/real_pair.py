"""The real pair: LoRA adapters shipped in dllmflow/checkpoints/smollm2-135m/{ar,diffusion} over
the base model that ``dllmflow models import`` dequantizes into the state dir.

A pair directory holds ``config.json`` (a ``LlamaPairConfig``: kind, base name, block size,
token shift, special ids, LoRA rank/alpha, the context budget it was trained with) and
``adapter.safetensors``. Loading builds the base network, merges the adapter into its weights
once, and names the tokenizer's pad and mask tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

MASK_TOKEN = "<empty_output>"  # a SmolLM2 special token no text uses: the diffusion mask
PAD_TOKEN = "<|endoftext|>"
ADAPTER_FILE = "adapter.safetensors"


def load_pair_tokenizer(base_dir: str | Path):
    """The base tokenizer with the pair's pad and mask tokens named."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    vocab = tok.get_vocab()
    missing = [t for t in (MASK_TOKEN, PAD_TOKEN) if t not in vocab]
    if missing:
        raise ValueError(f"{base_dir}: the tokenizer has no {' or '.join(missing)} token")
    tok.mask_token, tok.pad_token = MASK_TOKEN, PAD_TOKEN
    return tok


def load_pair_model(path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model, tokenizer, base dir) of one half of the real pair."""
    from dllmflow.config import get_settings

    from .base_import import base_model_dir
    from .lora import load_adapter, merge_adapter
    from .modeling_llama import build_from_base

    path = Path(path)
    cfg: dict[str, Any] = json.loads((path / "config.json").read_text())
    base_dir = base_model_dir(get_settings(), cfg.get("base", "smollm2-135m"))
    keep = (
        "block_size",
        "token_shift",
        "chat_format",
        "mask_token_id",
        "pad_token_id",
        "eos_token_id",
        "lora_rank",
        "lora_alpha",
        "context_tokens",
    )
    model = build_from_base(base_dir, cfg["kind"], **{k: cfg[k] for k in keep if k in cfg})
    merge_adapter(model, load_adapter(path / ADAPTER_FILE), float(cfg["lora_alpha"]))
    tok = load_pair_tokenizer(base_dir)
    # The turn-ending token is the one the adapter was trained to emit.
    tok.eos_token = tok.convert_ids_to_tokens(int(model.config.eos_token_id))
    return model.to(device=device, dtype=dtype).eval(), tok, base_dir
