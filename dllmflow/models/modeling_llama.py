"""The real pair's networks: a Llama-family decoder (SmolLM2) as our AR model and as a
Fast-dLLM-v2-style block-diffusion model, behind the same inference interface as the tiny pair.

The same two classes are the adapter through which other checkpoints of the family reach the
batched samplers (``families.py``): switches in the config cover what differs between them,
nothing else is copied per family --
  * ``qkv_bias`` (Qwen2, Qwen2.5, Fast-dLLM v2): biases on the q/k/v projections;
  * ``o_bias``: a bias on the output projection too (Qwen3's ``attention_bias``);
  * ``qk_norm`` (Qwen3, SDAR): an RMSNorm over each head of q and k before the rotary;
  * ``head_dim`` when it is not the width over the query heads (Qwen3 / SDAR: 128);
  * ``tied_head`` False: a separate output matrix (``lm_head``) instead of the embedding.

Both reuse the tiny pair's inference code (``modeling_ar`` / ``modeling_diffusion``: prefill,
cached forward, KV arena) by swapping in a Llama block: separate q/k/v projections with
grouped-query attention, SwiGLU MLP, RMSNorm and half-split rotary embeddings (the Hugging Face
Llama convention, so the imported weights load unchanged). The inference paths (prefill, cached
forward, KV arena) keep only the K/V heads in the cache and let the grouped-query kernels read
each one once for its query group; the dense forward (and the trainers' own attention
functions) get K/V repeated to the query heads, as plain SDPA expects.

The diffusion model differs from the AR one in three ways, all from Fast-dLLM v2:
  * attention is bidirectional inside a block and causal across blocks (as in the tiny model);
  * token shift: the logits that denoise position i come from position i - 1, so the AR
    model's next-token head is reused as is (``config.token_shift``);
  * a mask token whose input embedding is a trained vector (``mask_embedding``); the tied
    output head keeps the base vocabulary's rows, so the mask is never predicted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from .layers import RMSNorm, rotary
from .modeling_ar import ARForCausalLM
from .modeling_diffusion import BlockDiffusionLM


class LlamaPairConfig(PretrainedConfig):
    """One config for both halves; ``kind`` says which ("ar" or "diffusion")."""

    model_type = "dllmflow-llama"

    def __init__(
        self,
        kind: str = "ar",
        base: str = "smollm2-135m",
        vocab_size: int = 49152,
        n_layer: int = 30,
        n_head: int = 9,
        n_kv_head: int = 3,
        n_embd: int = 576,
        intermediate_size: int = 1536,
        max_position: int = 8192,
        rope_theta: float = 100_000.0,
        rms_eps: float = 1e-5,
        block_size: int = 16,
        token_shift: bool = True,
        chat_format: bool = True,
        pad_token_id: int = 0,
        mask_token_id: int = 16,
        eos_token_id: int = 2,
        lora_rank: int = 0,
        lora_alpha: float = 0.0,
        context_tokens: int = 896,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        o_bias: bool = False,
        qk_norm: bool = False,
        tied_head: bool = True,
        family: str = "llama",
        **kwargs,
    ) -> None:
        if kind not in ("ar", "diffusion"):
            raise ValueError(f"kind must be 'ar' or 'diffusion', got {kind!r}")
        if (head_dim is None and n_embd % n_head) or n_head % n_kv_head:
            raise ValueError(
                f"n_embd={n_embd}, n_head={n_head}, n_kv_head={n_kv_head}: heads must divide "
                "the width (unless head_dim is given) and K/V heads must divide the query heads"
            )
        self.kind, self.base = kind, base
        self.vocab_size, self.n_layer, self.n_head, self.n_kv_head = (
            vocab_size,
            n_layer,
            n_head,
            n_kv_head,
        )
        self.n_embd, self.intermediate_size = n_embd, intermediate_size
        self.max_position, self.rope_theta, self.rms_eps = max_position, rope_theta, rms_eps
        self.block_size, self.token_shift, self.chat_format = block_size, token_shift, chat_format
        self.mask_token_id = mask_token_id
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        self.context_tokens = context_tokens  # the rendered-context budget it was trained with
        self.head_dim = head_dim  # None: n_embd // n_head
        self.qkv_bias, self.o_bias, self.qk_norm = qkv_bias, o_bias, qk_norm
        self.tied_head, self.family = tied_head, family
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)

    @classmethod
    def from_hf_llama(cls, hf: dict, kind: str, **overrides) -> LlamaPairConfig:
        """From a Hugging Face LlamaConfig's config.json dict (also Qwen2 / Qwen3 shaped ones:
        their family switches come in ``overrides``)."""
        eos = hf.get("eos_token_id", 2)
        overrides.setdefault("eos_token_id", eos[0] if isinstance(eos, list) else eos)
        d = hf.get("head_dim")
        if d is not None and d * hf["num_attention_heads"] != hf["hidden_size"]:
            overrides.setdefault("head_dim", int(d))
        return cls(
            kind=kind,
            vocab_size=hf["vocab_size"],
            n_layer=hf["num_hidden_layers"],
            n_head=hf["num_attention_heads"],
            n_kv_head=hf.get("num_key_value_heads", hf["num_attention_heads"]),
            n_embd=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            max_position=hf.get("max_position_embeddings", 8192),
            rope_theta=float(
                hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 1e4)
            ),
            rms_eps=hf.get("rms_norm_eps", 1e-5),
            **overrides,
        )


def hf_weight_names(cfg: LlamaPairConfig) -> dict[str, str]:
    """Our parameter name -> the Hugging Face Llama / Qwen2 / Qwen3 checkpoint's name, for every
    weight a checkpoint supplies (loading reads it one way, the export writes it the other)."""
    src: dict[str, str] = {"embed.weight": "model.embed_tokens.weight"}
    src["ln_f.weight"] = "model.norm.weight"
    for i in range(cfg.n_layer):
        pre, ours = f"model.layers.{i}.", f"blocks.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            src[f"{ours}{name}.weight"] = f"{pre}self_attn.{name}.weight"
            if (cfg.qkv_bias and name != "o_proj") or (cfg.o_bias and name == "o_proj"):
                src[f"{ours}{name}.bias"] = f"{pre}self_attn.{name}.bias"
        if cfg.qk_norm:
            for name in ("q_norm", "k_norm"):
                src[f"{ours}{name}.weight"] = f"{pre}self_attn.{name}.weight"
        for name in ("gate_proj", "up_proj", "down_proj"):
            src[f"{ours}{name}.weight"] = f"{pre}mlp.{name}.weight"
        for name in ("input_layernorm", "post_attention_layernorm"):
            src[f"{ours}{name}.weight"] = f"{pre}{name}.weight"
    if not cfg.tied_head:
        src["lm_head.weight"] = "lm_head.weight"
    return src


# True while one of the cached inference paths runs in this thread: attention then takes K/V at
# their own head count (the kernels are grouped-query aware) instead of repeated per query head.
_GROUPED_KV: ContextVar[bool] = ContextVar("grouped_kv", default=False)


def rotate_half_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary on [B, H, T, D] pairing dimension i with i + D/2 (HF Llama); cos/sin [B,1,T,D/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class LlamaBlock(nn.Module):
    """Pre-norm Llama block; the attention pattern is supplied by the caller (layers.Block's
    contract: ``attend(q, k, v)`` with [B, H, T, D] tensors, K/V repeated to H heads; inside
    ``_LlamaMixin``'s cached paths K/V come at their own Hkv heads instead)."""

    def __init__(self, cfg: LlamaPairConfig) -> None:
        super().__init__()
        d = cfg.head_dim or cfg.n_embd // cfg.n_head
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, d
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * d, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * d, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * d, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_head * d, cfg.n_embd, bias=cfg.o_bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # Qwen3 / SDAR: RMSNorm over each head's dims, before the rotary
            self.q_norm = RMSNorm(d, cfg.rms_eps)
            self.k_norm = RMSNorm(d, cfg.rms_eps)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend
    ) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.n_head, self.head_dim)
        k = self.k_proj(h).view(b, t, self.n_kv_head, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rotate_half_rotary(q, cos, sin), rotate_half_rotary(k, cos, sin)
        group = self.n_head // self.n_kv_head
        if group > 1 and not _GROUPED_KV.get():  # each K/V head serves `group` query heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = attend(q, k, v).transpose(1, 2).reshape(b, t, self.n_head * self.head_dim)
        x = x + self.o_proj(y)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class MaskableEmbedding(nn.Embedding):
    """Token embedding whose mask-token row is a separate trained vector; ``weight`` stays the
    base vocabulary (it is also the tied output head)."""

    def __init__(self, vocab: int, dim: int, mask_id: int) -> None:
        super().__init__(vocab, dim)
        self.mask_id = mask_id
        self.mask_embedding = nn.Parameter(torch.zeros(dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = super().forward(ids)
        is_mask = (ids == self.mask_id)[..., None]
        return torch.where(is_mask, self.mask_embedding.to(x.dtype), x)


def _build_llama(model: nn.Module, cfg: LlamaPairConfig, embed: nn.Embedding) -> None:
    model.embed = embed
    model.blocks = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layer))
    model.ln_f = RMSNorm(cfg.n_embd, cfg.rms_eps)
    if not cfg.tied_head:
        model.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)


class _LlamaMixin:
    config: LlamaPairConfig

    @property
    def head_dim(self) -> int:
        return self.config.head_dim or self.config.n_embd // self.config.n_head

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        head = self.embed.weight if self.config.tied_head else self.lm_head.weight
        return F.linear(self.ln_f(h), head)  # [B, T, V]

    # -- inference with grouped K/V: caches hold n_kv_head heads ---------------------------------
    def new_cache(self, batch: int, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Empty per-layer key/value caches [B, Hkv, capacity, D]."""
        p = self.embed.weight
        shape = (batch, self.config.n_kv_head, capacity, self.head_dim)
        ks = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.blocks]
        vs = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.blocks]
        return ks, vs

    @contextmanager
    def _grouped_kv(self) -> Iterator[None]:
        token = _GROUPED_KV.set(True)
        try:
            yield
        finally:
            _GROUPED_KV.reset(token)

    def prefill(self, *args, **kwargs) -> torch.Tensor:
        with self._grouped_kv():
            return super().prefill(*args, **kwargs)  # type: ignore[misc]

    def forward_cached(self, *args, **kwargs) -> torch.Tensor:
        with self._grouped_kv():
            return super().forward_cached(*args, **kwargs)  # type: ignore[misc]

    def forward_arena(self, *args, **kwargs) -> torch.Tensor:
        with self._grouped_kv():
            return super().forward_arena(*args, **kwargs)  # type: ignore[misc]

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype):
        return rotary(positions, self.head_dim, self.config.rope_theta, dtype)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def load_hf_weights(
        self, state: dict[str, torch.Tensor], mask_from_vocab: bool = False
    ) -> None:
        """Copy a Hugging Face Llama / Qwen2 / Qwen3-shaped state dict (``model.layers.N.
        self_attn.q_proj.weight`` ...) into this model; every tensor of the checkpoint must be
        used and every one of ours filled. ``mask_from_vocab``: the mask token is a trained row
        of the checkpoint's own vocabulary (a diffusion checkpoint), so the mask vector is that
        row; otherwise it starts at the mean token embedding (to be trained)."""
        cfg = self.config
        src = hf_weight_names(cfg)
        absent = sorted(v for v in src.values() if v not in state)
        if absent:
            raise ValueError(f"weights do not match: the checkpoint lacks {absent[:6]}")
        ours = {k: state[v] for k, v in src.items()}
        lm_head = state.get("lm_head.weight")
        if cfg.tied_head and lm_head is not None and not torch.equal(lm_head, ours["embed.weight"]):
            raise ValueError("the base model's output head is not tied to its embedding")
        unused = sorted(
            k
            for k in set(state) - set(src.values()) - {"lm_head.weight"}
            if not k.endswith("rotary_emb.inv_freq")
        )
        if unused:
            raise ValueError(f"weights do not match: this network has no place for {unused[:6]}")
        missing, unexpected = self.load_state_dict(ours, strict=False)
        missing = [m for m in missing if not m.endswith("mask_embedding") and "lora_" not in m]
        if missing or unexpected:
            raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")
        if isinstance(self.embed, MaskableEmbedding):
            embed = ours["embed.weight"].float()
            mask = embed[cfg.mask_token_id] if mask_from_vocab else embed.mean(0)
            with torch.no_grad():
                self.embed.mask_embedding.copy_(mask)


class LlamaARForCausalLM(_LlamaMixin, ARForCausalLM):
    config_class = LlamaPairConfig
    base_model_prefix = "dllmflow_llama_ar"

    def __init__(self, config: LlamaPairConfig) -> None:
        super(ARForCausalLM, self).__init__(config)  # PreTrainedModel, not the tiny layers
        _build_llama(self, config, nn.Embedding(config.vocab_size, config.n_embd))
        self.post_init()


class LlamaBlockDiffusionLM(_LlamaMixin, BlockDiffusionLM):
    config_class = LlamaPairConfig
    base_model_prefix = "dllmflow_llama_diffusion"

    def __init__(self, config: LlamaPairConfig) -> None:
        super(BlockDiffusionLM, self).__init__(config)
        embed = MaskableEmbedding(config.vocab_size, config.n_embd, config.mask_token_id)
        _build_llama(self, config, embed)
        self.post_init()


def read_state_dict(ckpt_dir: str | Path) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a directory's ``*.safetensors`` shards."""
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(Path(ckpt_dir).glob("*.safetensors")):
        state.update({k: v.float() for k, v in load_file(str(shard)).items()})
    if not state:
        raise FileNotFoundError(f"{ckpt_dir}: no *.safetensors weights")
    return state


def base_state_dict(base_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json dict, fp32 state dict) of an imported Hugging Face Llama directory."""
    base_dir = Path(base_dir)
    hf = json.loads((base_dir / "config.json").read_text())
    if hf.get("model_type") != "llama":
        raise ValueError(f"{base_dir}: model_type {hf.get('model_type')!r}, expected 'llama'")
    return hf, read_state_dict(base_dir)


def build_from_state(
    hf: dict, state: dict[str, torch.Tensor], kind: str, mask_from_vocab: bool = False, **overrides
):
    """A Llama-family model (``kind`` "ar" or "diffusion") from a config.json dict and its
    weights; an output head that differs from the embedding makes an untied model."""
    lm_head = state.get("lm_head.weight")
    tied = lm_head is None or torch.equal(lm_head, state["model.embed_tokens.weight"])
    overrides.setdefault("tied_head", tied)
    cfg = LlamaPairConfig.from_hf_llama(hf, kind, **overrides)
    cls = LlamaARForCausalLM if kind == "ar" else LlamaBlockDiffusionLM
    model = cls(cfg)
    model.load_hf_weights(state, mask_from_vocab=mask_from_vocab)
    return model


def build_from_base(base_dir: str | Path, kind: str, **overrides):
    """A Llama-pair model (``kind`` "ar" or "diffusion") with the base model's weights."""
    hf, state = base_state_dict(base_dir)
    return build_from_state(hf, state, kind, **overrides)


AutoConfig.register(LlamaPairConfig.model_type, LlamaPairConfig, exist_ok=True)
