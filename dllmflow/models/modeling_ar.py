"""The autoregressive half of the matched pair: a small causal decoder (GPT-style, rotary).

Same tokenizer, depth and width as the block-diffusion model (modeling_diffusion.py); only the
attention pattern and the objective differ. Training uses torch SDPA with a causal mask;
inference calls the shared kernels (dllmflow.kernels): prefill is block-causal attention with
block size 1 (= causal), decoding attends the KV cache with ``block_decode_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .layers import Block, RMSNorm, cached_attention, init_weights, mark_residual, rotary
from .sampling.arena import arena_forward, rows_at


class ARConfig(PretrainedConfig):
    model_type = "dllmflow-ar"

    def __init__(
        self,
        vocab_size: int = 4096,
        n_layer: int = 6,
        n_head: int = 4,
        n_embd: int = 256,
        mlp_ratio: int = 4,
        max_position: int = 1024,
        rope_theta: float = 10_000.0,
        pad_token_id: int = 0,
        mask_token_id: int = 1,
        eos_token_id: int = 2,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.mlp_ratio = mlp_ratio
        self.max_position = max_position
        self.rope_theta = rope_theta
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)


class ARForCausalLM(PreTrainedModel):
    config_class = ARConfig
    base_model_prefix = "dllmflow_ar"

    def __init__(self, config: ARConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(
            Block(config.n_embd, config.n_head, config.mlp_ratio) for _ in range(config.n_layer)
        )
        for block in self.blocks:
            mark_residual(block)
        self.ln_f = RMSNorm(config.n_embd)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.n_layer)

    @property
    def head_dim(self) -> int:
        return self.config.n_embd // self.config.n_head

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype):
        return rotary(positions, self.head_dim, self.config.rope_theta, dtype)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.ln_f(h), self.embed.weight)  # tied output head, [B, T, V]

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        labels: torch.Tensor | None = None,  # [B, T], -100 = no loss; shifted inside
        position_ids: torch.Tensor | None = None,
        **_: object,
    ) -> CausalLMOutput:
        b, t = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.embed(input_ids)
        cos, sin = self._rope(position_ids, x.dtype)

        def attend(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        for block in self.blocks:
            x = block(x, cos, sin, attend)
        logits = self._logits(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return CausalLMOutput(loss=loss, logits=logits)

    # -- inference (KV cache; attention through dllmflow.kernels) --------------------------------

    def new_cache(self, batch: int, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Empty per-layer key/value caches [B, H, capacity, D]."""
        p = self.embed.weight
        shape = (batch, self.config.n_head, capacity, self.head_dim)
        ks = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.blocks]
        vs = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.blocks]
        return ks, vs

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,
        cache_k: list[torch.Tensor],
        cache_v: list[torch.Tensor],
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the prompt [B, T] and fill the caches' first T slots. Rows of different lengths
        may be right-padded (a causal query never sees the padding after it). Returns logits
        [B, T, V], or [B, K, V] at the positions ``logits_at`` [B, K] when given."""
        from dllmflow import kernels

        b, t = input_ids.shape
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.embed(input_ids)
        cos, sin = self._rope(positions, x.dtype)
        for layer, block in enumerate(self.blocks):

            def attend(q, k, v, layer=layer):
                cache_k[layer][:, :, :t] = k
                cache_v[layer][:, :, :t] = v
                return kernels.block_causal_attention(q, k, v, 1)  # block size 1 = causal

            x = block(x, cos, sin, attend)
        return self._logits(rows_at(x, logits_at))

    @torch.no_grad()
    def forward_cached(
        self,
        input_ids: torch.Tensor,  # [B, L] new tokens, row b at positions starts[b] + 0..L-1
        cache_k: list[torch.Tensor],
        cache_v: list[torch.Tensor],
        starts: torch.Tensor,  # [B]
    ) -> torch.Tensor:
        """Decode L new tokens per row against the cache (causal among them); logits [B, L, V]."""
        _b, length = input_ids.shape
        positions = starts[:, None] + torch.arange(length, device=input_ids.device)
        x = self.embed(input_ids)
        cos, sin = self._rope(positions, x.dtype)
        for layer, block in enumerate(self.blocks):

            def attend(q, k, v, layer=layer):
                return cached_attention(q, k, v, cache_k[layer], cache_v[layer], starts, 1)

            x = block(x, cos, sin, attend)
        return self._logits(x)

    @torch.no_grad()
    def forward_arena(
        self,
        input_ids: torch.Tensor,  # [R, L]
        cache_k: list[torch.Tensor],  # whole arena layers [rows, H, capacity, D]
        cache_v: list[torch.Tensor],
        starts: torch.Tensor,  # [R]
        span: int,  # max(starts) + L
        extra_rows: torch.Tensor | None = None,
        n_logits: int | None = None,
    ) -> torch.Tensor:
        """``forward_cached`` over a batched KV arena (sampling/arena.py): input row r < R - E
        is arena row r, the last E rows are ``extra_rows``. Logits [n_logits or R, L, V]."""

        return arena_forward(
            self, input_ids, cache_k, cache_v, starts, span, 1, extra_rows, n_logits
        )


AutoConfig.register(ARConfig.model_type, ARConfig, exist_ok=True)
AutoModelForCausalLM.register(ARConfig, ARForCausalLM, exist_ok=True)
