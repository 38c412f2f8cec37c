"""Small random-weight stand-ins for the diffusion families, written for these tests from the
families' documented semantics (no hub downloads, none of their code):

* ``BlockDecoder``: a Qwen2 / Qwen3-shaped decoder with Hugging Face weight names
  (``model.layers.N.self_attn.q_proj`` ...), q/k/v biases (Qwen2, Fast-dLLM v2) or per-head
  q/k RMSNorms (Qwen3, SDAR), rotate-half rotary, GQA by repeating K/V, and a dense forward under
  a caller's boolean attention mask. Saved with an SDAR or a Fast-dLLM v2 config.json.
* ``MASKED_SOURCE``: the text of a remote-code module (config + model classes named like LLaDA's
  ``LLaDAModelLM`` and Dream's ``DreamModel``): full bidirectional attention, forward(input_ids)
  -> ``.logits``, an output bias so ids outside the test tokenizer are never predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn


class _Norm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Attention(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        d, h, kv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
        self.d, self.h, self.kv = d, h, kv
        qkv_bias = c.get("qkv_bias", False)
        self.q_proj = nn.Linear(c["hidden_size"], h * d, bias=qkv_bias)
        self.k_proj = nn.Linear(c["hidden_size"], kv * d, bias=qkv_bias)
        self.v_proj = nn.Linear(c["hidden_size"], kv * d, bias=qkv_bias)
        self.o_proj = nn.Linear(h * d, c["hidden_size"], bias=False)
        self.qk_norm = c.get("qk_norm", False)
        if self.qk_norm:
            self.q_norm = _Norm(d, c["rms_norm_eps"])
            self.k_norm = _Norm(d, c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.d)
        k = self.k_proj(x).view(b, t, self.kv, self.d)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        rep = self.h // self.kv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.h * self.d))


class _Layer(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        width, inner = c["hidden_size"], c["intermediate_size"]
        self.input_layernorm = _Norm(width, c["rms_norm_eps"])
        self.self_attn = _Attention(c)
        self.post_attention_layernorm = _Norm(width, c["rms_norm_eps"])
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(width, inner, bias=False)
        self.mlp.up_proj = nn.Linear(width, inner, bias=False)
        self.mlp.down_proj = nn.Linear(inner, width, bias=False)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class BlockDecoder(nn.Module):
    """The reference network; ``forward(ids, mask)`` with mask [T, T] bool (True: may attend)."""

    def __init__(self, c: dict) -> None:
        super().__init__()
        self.c = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.model.layers = nn.ModuleList(_Layer(c) for _ in range(c["num_hidden_layers"]))
        self.model.norm = _Norm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        d, theta = self.c["head_dim"], self.c["rope_theta"]
        inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
        ang = torch.arange(ids.shape[1]).float()[:, None] * inv
        ang = torch.cat((ang, ang), dim=-1)
        cos, sin = ang.cos(), ang.sin()
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))


def block_causal(t: int, block: int) -> torch.Tensor:
    blk = torch.arange(t) // block
    return blk[None, :] <= blk[:, None]


SDAR_CONFIG = {
    "architectures": ["SDARForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_sdar.SDARConfig",
        "AutoModel": "modeling_sdar.SDARModel",
        "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
    },
    "model_type": "sdar",
    "attention_bias": False,
    "block_size": 4,
    "hidden_act": "silu",
    "rope_scaling": None,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
}

FAST_DLLM_V2_CONFIG = {
    "architectures": ["Fast_dLLM_QwenForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
        "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
    },
    "model_type": "Fast_dLLM_Qwen",
    "bd_size": 8,
    "hidden_act": "silu",
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
}


def save_block_family(path: Path, family: str, tokenizer, seed: int = 0) -> BlockDecoder:
    """A random SDAR- or Fast-dLLM-v2-shaped checkpoint directory; returns its network."""
    base = SDAR_CONFIG if family == "sdar" else FAST_DLLM_V2_CONFIG
    c = dict(base)
    c.update(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # SDAR: head_dim 32 is not 64 / 4, as in SDAR (and Qwen3) checkpoints
        head_dim=32 if family == "sdar" else 16,
        max_position_embeddings=1024,
        mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    flags = {"qk_norm": family == "sdar", "qkv_bias": family != "sdar"}
    torch.manual_seed(seed)
    net = BlockDecoder({**c, **flags}).eval()
    with torch.no_grad():
        net.model.embed_tokens.weight.mul_(20)  # peaked distributions, no greedy near-ties
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # so the checks see the norms' weights
            if name.endswith("bias"):
                p.normal_(std=0.5)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(c, indent=1))
    tokenizer.save_pretrained(path)
    return net


MASKED_SOURCE = """
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class StandinLLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, vocab_size=64, d_model=16, n_layers=1, allowed=64, **kw):
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.allowed = allowed
        super().__init__(**kw)


class StandinDreamConfig(StandinLLaDAConfig):
    model_type = "Dream"


class _Full(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + self.out(F.scaled_dot_product_attention(q, k, v))  # bidirectional
        return x + self.ff(x)


class _Base(PreTrainedModel):
    config_class = StandinLLaDAConfig

    def __init__(self, config):
        super().__init__(config)
        d = config.d_model
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(4096, d)
        self.layers = nn.ModuleList(_Full(d) for _ in range(config.n_layers))
        self.head = nn.Linear(d, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, attention_mask=None, **kw):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        for layer in self.layers:
            x = layer(x)
        logits = self.head(x)
        if self.config.allowed < logits.shape[-1]:  # ids the test tokenizer cannot decode
            logits[..., self.config.allowed :] = -1e4
        return MaskedLMOutput(logits=logits)


class LLaDAModelLM(_Base):
    config_class = StandinLLaDAConfig


class DreamModel(_Base):
    config_class = StandinDreamConfig
"""


def save_masked_family(path: Path, family: str, tokenizer, seed: int = 0) -> None:
    """A random LLaDA- or Dream-shaped remote-code checkpoint directory (its own module)."""
    import importlib.util

    path.mkdir(parents=True, exist_ok=True)
    (path / "standin_masked.py").write_text(MASKED_SOURCE)
    spec = importlib.util.spec_from_file_location(
        f"standin_{family}_{seed}", path / "standin_masked.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    llada = family == "llada"
    # The families' real vocabularies, so their real mask ids (126336, 151666) are in range.
    vocab = 126464 if llada else 151936
    cfg_cls = module.StandinLLaDAConfig if llada else module.StandinDreamConfig
    cfg = cfg_cls(
        vocab_size=vocab,
        d_model=16,
        n_layers=2,
        allowed=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = (module.LLaDAModelLM if llada else module.DreamModel)(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.5)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors"
    )
    arch = "LLaDAModelLM" if llada else "DreamModel"
    conf = cfg.to_dict()
    conf["architectures"] = [arch]
    conf["auto_map"] = {
        "AutoConfig": f"standin_masked.{cfg_cls.__name__}",
        "AutoModel": f"standin_masked.{arch}",
    }
    (path / "config.json").write_text(json.dumps(conf, indent=1))
    tokenizer.save_pretrained(path)
    return model
