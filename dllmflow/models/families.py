"""Which model family a Hugging Face checkpoint directory holds, and how dllmflow serves it.

The family comes from the checkpoint's config.json: the class names in ``architectures``, then
those in ``auto_map`` (remote-code checkpoints name their own modules there), then
``model_type``.

  family         slot       served by
  llama          ar         adapter: our Llama network (modeling_llama.py) + ARSampler
  qwen2          ar         the same adapter with q/k/v biases (Qwen2, Qwen2.5)
  sdar           diffusion  the adapter in Qwen3 shape (q/k norms, head_dim) + DiffusionSampler;
                            predicts in place (a masked position from its own logits)
  fast-dllm-v2   diffusion  the adapter in Qwen2 shape + DiffusionSampler with token shift
                            (a masked position from the logits of the position before it)
  llada          diffusion  the checkpoint's own code (trust_remote_code) + MaskedDiffusionSampler
                            (full attention, whole canvas each pass; mask id 126336)
  dream          diffusion  the same, with Dream's logit shift (mask id 151666)

"Adapter" means the checkpoint's weights load into dllmflow's own network, so the batched
samplers, the KV arena and the Triton kernels serve it and the checkpoint's Python code never
runs. Any other causal LM that transformers can load is served in the AR slot one sequence at a
time (``HFCausalSampler``), and so is a Llama / Qwen2 checkpoint using something the adapter
does not implement (rope scaling, sliding windows, ...); a causal LM in the diffusion slot is
refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

Slot = Literal["ar", "diffusion"]


@dataclass(frozen=True)
class Family:
    name: str
    slot: Slot
    served_by: Literal["adapter", "remote-code"]
    classes: tuple[str, ...]  # model class names in `architectures` / `auto_map`
    model_types: tuple[str, ...]
    switches: dict[str, Any] = field(default_factory=dict)  # LlamaPairConfig switches (adapter)
    mask_token_id: int | None = None  # used when config.json names none
    token_shift: bool = False  # position i is denoised by the logits of position i - 1
    block_size: int | None = None  # used when config.json names none
    block_key: str | None = None  # the config.json key that holds the block size
    # Which transformers versions the family's own (remote) code needs, and where that is from.
    remote_transformers: str = ""


FAMILIES: tuple[Family, ...] = (
    Family(
        "llama",
        "ar",
        "adapter",
        ("LlamaForCausalLM",),
        ("llama",),
        remote_transformers="in transformers itself; no remote code",
    ),
    Family(
        "qwen2",
        "ar",
        "adapter",
        ("Qwen2ForCausalLM",),
        ("qwen2",),
        switches={"qkv_bias": True},
        remote_transformers="in transformers itself; no remote code",
    ),
    Family(
        "sdar",
        "diffusion",
        "adapter",
        ("SDARForCausalLM",),
        ("sdar",),
        switches={"qk_norm": True, "token_shift": False},
        mask_token_id=151669,
        block_size=4,
        block_key="block_size",
        remote_transformers=(
            "4.52.4: the SDAR-1.7B-Chat config.json records transformers_version 4.52.4 and its "
            "modeling_sdar.py says it is modified from transformers v4.52.4's Qwen3 modeling; "
            "other versions not checked"
        ),
    ),
    Family(
        "fast-dllm-v2",
        "diffusion",
        "adapter",
        ("Fast_dLLM_QwenForCausalLM",),
        ("Fast_dLLM_Qwen",),
        switches={"qkv_bias": True, "token_shift": True},
        mask_token_id=151665,
        token_shift=True,
        block_size=32,
        block_key="bd_size",
        remote_transformers=(
            "unknown exactly: its modeling.py imports GradientCheckpointingLayer, auto_docstring, "
            "can_return_tuple and reads config.layer_types, which only transformers 4.5x and "
            "later have; no pinned version found in its model card"
        ),
    ),
    Family(
        "llada",
        "diffusion",
        "remote-code",
        ("LLaDAModelLM",),
        ("llada",),
        mask_token_id=126336,
        remote_transformers=(
            "4.38.2: the LLaDA README's setup pins transformers==4.38.2 (with torch 2.6.0 in one "
            "copy of it); newer versions not checked"
        ),
    ),
    Family(
        "dream",
        "diffusion",
        "remote-code",
        ("DreamModel",),
        ("Dream", "dream"),
        mask_token_id=151666,
        token_shift=True,
        remote_transformers=(
            "4.46.2: the Dream README asks for transformers==4.46.2 and torch==2.5.1 and says "
            "other versions have not been fully tested"
        ),
    ),
)


def read_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())


def detect_family(cfg: dict[str, Any]) -> Family | None:
    """The family of a config.json dict, or None for one this module does not know."""
    by_class = {c: f for f in FAMILIES for c in f.classes}
    for name in cfg.get("architectures") or []:
        if name in by_class:
            return by_class[name]
    for ref in (cfg.get("auto_map") or {}).values():
        refs = ref if isinstance(ref, list) else [ref]
        for r in refs:
            if isinstance(r, str) and r.rsplit(".", 1)[-1] in by_class:
                return by_class[r.rsplit(".", 1)[-1]]
    model_type = cfg.get("model_type")
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def describe(cfg: dict[str, Any]) -> str:
    arch = ", ".join(cfg.get("architectures") or []) or "no architectures"
    return f"{arch} (model_type {cfg.get('model_type')!r})"


def check_slot(path: Path, cfg: dict[str, Any], family: Family | None, slot: Slot | None) -> None:
    """Refuse a checkpoint in the wrong slot, naming what it is and what the slot takes."""
    if slot is None:
        return
    kind: Slot = family.slot if family is not None else "ar"
    if kind == slot:
        return
    diffusion = ", ".join(f.name for f in FAMILIES if f.slot == "diffusion")
    if slot == "diffusion":
        raise ValueError(
            f"{path}: {describe(cfg)} is a causal (left-to-right) LM, not a diffusion LM; the "
            f"diffusion slot takes dllmflow's block-diffusion checkpoints or one of: {diffusion}. "
            "Serve it in the AR slot instead (DLLMFLOW_AR_CHECKPOINT)"
        )
    raise ValueError(
        f"{path}: {describe(cfg)} is a {family.name} diffusion LM; the AR slot takes causal LMs. "
        "Serve it in the diffusion slot instead (DLLMFLOW_DIFFUSION_CHECKPOINT)"
    )


def adapter_problem(cfg: dict[str, Any], family: Family) -> str | None:
    """Why the adapter cannot reproduce this checkpoint's network exactly, or None."""
    rope = cfg.get("rope_scaling") or {}
    params = cfg.get("rope_parameters") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or params.get("rope_type") or "default"
    if rope_type != "default":
        return f"rope scaling {rope_type!r} (the adapter implements plain rotary only)"
    if cfg.get("use_sliding_window") or "sliding_attention" in (cfg.get("layer_types") or []):
        return "sliding-window attention"
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        return f"hidden_act {act!r} (the adapter's MLP is SwiGLU with silu)"
    if cfg.get("mlp_bias"):
        return "biases in the MLP"
    if family.name == "qwen2" and cfg.get("attention_bias") is False:
        return "a Qwen2 config without q/k/v biases"
    return None


def adapter_switches(cfg: dict[str, Any], family: Family) -> dict[str, Any]:
    """LlamaPairConfig overrides for a checkpoint of an adapter family."""
    out: dict[str, Any] = {"family": family.name, "chat_format": False, **family.switches}
    if family.name == "llama":  # Llama's attention_bias puts a bias on all four projections
        out["qkv_bias"] = out["o_bias"] = bool(cfg.get("attention_bias", False))
    if family.name == "sdar":  # Qwen3: attention_bias covers q, k, v and o
        out["qkv_bias"] = out["o_bias"] = bool(cfg.get("attention_bias", False))
    out["context_tokens"] = int(cfg.get("max_position_embeddings", 8192))
    if family.slot == "diffusion":
        out["block_size"] = int(cfg.get(family.block_key or "") or family.block_size)
        out["mask_token_id"] = int(cfg.get("mask_token_id", family.mask_token_id))
    pad = cfg.get("pad_token_id")
    if pad is not None:
        out["pad_token_id"] = int(pad)
    return out


def build_adapter(path: Path, cfg: dict[str, Any], family: Family):
    """The checkpoint's weights in dllmflow's Llama-family network (AR or block diffusion)."""
    from .modeling_llama import build_from_state, read_state_dict

    state = read_state_dict(path)
    if not any(k.startswith("model.") for k in state):
        raise ValueError(f"{path}: no model.* tensors; not a {family.name} checkpoint layout")
    return build_from_state(
        cfg,
        state,
        family.slot,
        mask_from_vocab=family.slot == "diffusion",
        **adapter_switches(cfg, family),
    )


def mask_token_id(cfg: Any, family: Family) -> int:
    """The mask id a remote-code diffusion model uses: its config's, else the family's."""
    value = getattr(cfg, "mask_token_id", None)
    return int(value if value is not None else family.mask_token_id)


def default_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
