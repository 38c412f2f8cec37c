"""The Llama-family pair networks against transformers' own Llama on small random configs."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dllmflow.models.modeling_llama import LlamaPairConfig, build_from_base


def _hf_llama(tmp_path, **kw) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kw.pop("kv_heads", 2),
        max_position_embeddings=256,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        **kw,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_ar_logits_match_transformers(tmp_path, kv_heads):
    hf = _hf_llama(tmp_path, kv_heads=kv_heads)
    ours = build_from_base(tmp_path, "ar").eval()
    ids = torch.randint(0, 96, (2, 23))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_ar_cached_decode_matches_full_forward(tmp_path):
    _hf_llama(tmp_path)
    model = build_from_base(tmp_path, "ar").eval()
    ids = torch.randint(0, 96, (1, 20))
    ks, vs = model.new_cache(1, 32)
    assert ks[0].shape == (1, 2, 32, 16)  # only the K/V heads are cached (GQA: 4 query, 2 K/V)
    with torch.no_grad():
        full = model(ids).logits
        model.prefill(ids[:, :12], ks, vs)
        step = model.forward_cached(ids[:, 12:13], ks, vs, torch.tensor([12]))
    torch.testing.assert_close(step[:, 0], full[:, 12], atol=1e-4, rtol=1e-4)


def test_diffusion_mask_embedding_and_block_attention(tmp_path):
    _hf_llama(tmp_path)
    model = build_from_base(tmp_path, "diffusion", block_size=4, mask_token_id=5).eval()
    assert model.config.token_shift
    ids = torch.randint(6, 96, (1, 12))
    masked = ids.clone()
    masked[0, 8:] = 5
    with torch.no_grad():
        a = model(ids).logits
        b = model(masked).logits
        model.embed.mask_embedding.add_(1.0)
        c = model(masked).logits
    # Blocks 0-1 never see block 2 (causal across blocks); the masked block sees the vector.
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(b[:, 8:], c[:, 8:])
    torch.testing.assert_close(b[:, :8], c[:, :8])


def test_config_rejects_heads_that_do_not_divide():
    with pytest.raises(ValueError, match="K/V heads must divide"):
        LlamaPairConfig(n_head=9, n_kv_head=2)
