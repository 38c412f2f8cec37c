"""The block-diffusion half of the matched pair: a mask-token denoiser with block-causal attention.

Same tokenizer, depth and width as the AR model (modeling_ar.py). A sequence is cut into blocks
of ``block_size`` tokens; attention is bidirectional inside a block and causal across blocks.
Generation appends a block of <|mask|> tokens and denoises it over a few passes (the sampler
commits confident positions), with the committed blocks' keys/values kept in a KV cache.

Attention paths:
  * prefill (context + first masked block): ``kernels.block_causal_attention``;
  * decoding a block against the cache: ``kernels.block_decode_attention`` (via
    layers.cached_attention), one call per block of queries;
  * training: torch SDPA with an explicit boolean mask (``span_aware_mask`` /
    ``block_causal_mask``) because the span-aware layout is not a plain block-causal pattern.

The context is left-padded with <|pad|> to a whole number of blocks, in training and inference
alike, so the turn always starts on a block boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .layers import Block, RMSNorm, cached_attention, init_weights, mark_residual, rotary
from .sampling.arena import arena_forward, rows_at


class DiffusionConfig(PretrainedConfig):
    model_type = "dllmflow-diffusion"

    def __init__(
        self,
        vocab_size: int = 4096,
        n_layer: int = 6,
        n_head: int = 4,
        n_embd: int = 256,
        mlp_ratio: int = 4,
        max_position: int = 1024,
        rope_theta: float = 10_000.0,
        block_size: int = 16,
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
        self.block_size = block_size
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)


def block_causal_mask(t: int, block_size: int, device: torch.device | None = None) -> torch.Tensor:
    """[T, T] bool: query i may attend key j iff block(j) <= block(i)."""
    blk = torch.arange(t, device=device) // block_size
    return blk[None, :] <= blk[:, None]


def span_aware_mask(
    stream: torch.Tensor,  # [B, N] 0 = clean token, k >= 1 = k-th noisy copy of a turn token
    block: torch.Tensor,  # [B, N] block index (a noisy token has its clean twin's block)
    valid: torch.Tensor,  # [B, N] False for batch padding
) -> torch.Tensor:
    """[B, 1, N, N] bool for the span-aware training layout [clean sequence | noisy turn blocks
    (| a second, complementary noisy copy)].

    clean query -> clean keys of its own and earlier blocks (block-causal, as in prefill);
    noisy query -> clean keys of EARLIER blocks + keys of its OWN block in its OWN copy only.
    So a noisy action block sees a clean context and clean earlier turn blocks, exactly what it
    sees at inference, and nothing leaks from other noisy blocks or the other copy (which holds
    the tokens this one masks). Padding rows see themselves.
    """
    sq, sk = stream[:, :, None], stream[:, None, :]
    bq, bk = block[:, :, None], block[:, None, :]
    clean_q = (sq == 0) & (sk == 0) & (bk <= bq)
    noisy_q = (sq >= 1) & (((sk == 0) & (bk < bq)) | ((sk == sq) & (bk == bq)))
    allowed = (clean_q | noisy_q) & valid[:, None, :] & valid[:, :, None]
    eye = torch.eye(stream.shape[1], dtype=torch.bool, device=stream.device)[None]
    return (allowed | eye)[:, None]


class BlockDiffusionLM(PreTrainedModel):
    config_class = DiffusionConfig
    base_model_prefix = "dllmflow_diffusion"

    def __init__(self, config: DiffusionConfig) -> None:
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

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype):
        return rotary(positions, self.head_dim, self.config.rope_theta, dtype)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.ln_f(h), self.embed.weight)  # tied output head, [B, N, V]

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, N]
        attn_mask: torch.Tensor | None = None,  # [B, 1, N, N] bool, True = may attend
        position_ids: torch.Tensor | None = None,  # [B, N]; a noisy copy repeats its positions
        causal: bool = False,  # plain causal attention (the auxiliary AR objective)
        **_: object,
    ) -> MaskedLMOutput:
        """Logits for every position. Default attention: block-causal over the whole input."""
        b, n = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(n, device=input_ids.device).expand(b, n)
        x = self.embed(input_ids)
        cos, sin = self._rope(position_ids, x.dtype)
        if attn_mask is None and not causal:
            attn_mask = block_causal_mask(n, self.block_size, input_ids.device)

        def attend(q, k, v):
            if causal:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

        for block in self.blocks:
            x = block(x, cos, sin, attend)
        return MaskedLMOutput(logits=self._logits(x))

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
        """Block-causal pass over [B, T] (T a multiple of block_size), filling the caches' first
        T slots. With the first masked block appended to the context this is also that block's
        first denoising pass. Rows may be right-padded by whole blocks (no block sees a later
        one). Returns logits [B, T, V], or [B, K, V] at the positions ``logits_at`` [B, K]."""
        from dllmflow import kernels

        b, t = input_ids.shape
        if t % self.block_size:
            raise ValueError(f"prefill length {t} is not a multiple of block_size")
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.embed(input_ids)
        cos, sin = self._rope(positions, x.dtype)
        for layer, block in enumerate(self.blocks):

            def attend(q, k, v, layer=layer):
                cache_k[layer][:, :, :t] = k
                cache_v[layer][:, :, :t] = v
                return kernels.block_causal_attention(q, k, v, self.block_size)

            x = block(x, cos, sin, attend)
        return self._logits(rows_at(x, logits_at))

    @torch.no_grad()
    def forward_cached(
        self,
        input_ids: torch.Tensor,  # [B, L], L a multiple of block_size; row b at starts[b] + ...
        cache_k: list[torch.Tensor],
        cache_v: list[torch.Tensor],
        starts: torch.Tensor,  # [B] block-aligned cache offsets
    ) -> torch.Tensor:
        """Blocks against the cache: each block sees the cache before it and itself. Passing
        [just-committed block | next masked block] writes the clean keys of the first and runs
        the first denoising pass of the second in one forward. Returns logits [B, L, V]."""
        _b, length = input_ids.shape
        positions = starts[:, None] + torch.arange(length, device=input_ids.device)
        x = self.embed(input_ids)
        cos, sin = self._rope(positions, x.dtype)
        for layer, block in enumerate(self.blocks):

            def attend(q, k, v, layer=layer):
                return cached_attention(
                    q, k, v, cache_k[layer], cache_v[layer], starts, self.block_size
                )

            x = block(x, cos, sin, attend)
        return self._logits(x)

    @torch.no_grad()
    def forward_arena(
        self,
        input_ids: torch.Tensor,  # [R, L], L a multiple of block_size
        cache_k: list[torch.Tensor],  # whole arena layers [rows, H, capacity, D]
        cache_v: list[torch.Tensor],
        starts: torch.Tensor,  # [R] block-aligned
        span: int,  # max(starts) + L
        extra_rows: torch.Tensor | None = None,
        n_logits: int | None = None,
    ) -> torch.Tensor:
        """``forward_cached`` over a batched KV arena (sampling/arena.py): input row r < R - E
        is arena row r, the last E rows are ``extra_rows`` (a just-committed block whose clean
        keys go in beside its sequence's next block). Logits [n_logits or R, L, V]."""
        return arena_forward(
            self, input_ids, cache_k, cache_v, starts, span, self.block_size, extra_rows, n_logits
        )


AutoConfig.register(DiffusionConfig.model_type, DiffusionConfig, exist_ok=True)
