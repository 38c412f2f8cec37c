"""Both models: save/from_pretrained round trips, KV-cache paths match the dense forward,
and the attention masks match a dense loop reference."""

from __future__ import annotations

import torch

from dllmflow.models.modeling_ar import ARForCausalLM
from dllmflow.models.modeling_diffusion import (
    BlockDiffusionLM,
    block_causal_mask,
    span_aware_mask,
)


def test_ar_round_trip(tiny_ar, tmp_path):
    tiny_ar.save_pretrained(tmp_path)
    loaded = ARForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(7, tiny_ar.config.vocab_size, (2, 20))
    assert torch.equal(tiny_ar(x).logits, loaded(x).logits)
    assert loaded.config.to_dict()["n_embd"] == tiny_ar.config.n_embd


def test_diffusion_round_trip_in_bf16(tiny_diffusion, tmp_path):
    tiny_diffusion.to(torch.bfloat16).save_pretrained(tmp_path)
    loaded = BlockDiffusionLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert loaded.config.block_size == 8
    for name, p in tiny_diffusion.state_dict().items():
        assert torch.equal(p.float(), loaded.state_dict()[name]), name


def test_ar_cache_matches_dense_forward(tiny_ar):
    x = torch.randint(7, tiny_ar.config.vocab_size, (2, 30))
    dense = tiny_ar(x).logits
    ks, vs = tiny_ar.new_cache(2, 40)
    pre = tiny_ar.prefill(x[:, :20], ks, vs)
    steps = [
        tiny_ar.forward_cached(x[:, i : i + 1], ks, vs, torch.tensor([i, i])) for i in range(20, 30)
    ]
    torch.testing.assert_close(pre, dense[:, :20], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(steps, 1), dense[:, 20:], atol=1e-4, rtol=1e-4)


def test_diffusion_cache_matches_dense_forward(tiny_diffusion):
    b = tiny_diffusion.block_size
    x = torch.randint(7, tiny_diffusion.config.vocab_size, (1, 5 * b))
    dense = tiny_diffusion(x).logits  # block-causal over everything
    ks, vs = tiny_diffusion.new_cache(1, 5 * b)
    pre = tiny_diffusion.prefill(x[:, : 2 * b], ks, vs)
    one = tiny_diffusion.forward_cached(x[:, 2 * b : 3 * b], ks, vs, torch.tensor([2 * b]))
    two = tiny_diffusion.forward_cached(x[:, 3 * b :], ks, vs, torch.tensor([3 * b]))
    torch.testing.assert_close(pre, dense[:, : 2 * b], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one, dense[:, 2 * b : 3 * b], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(two, dense[:, 3 * b :], atol=1e-4, rtol=1e-4)


def test_block_causal_mask_matches_loop():
    t, bs = 13, 4
    mask = block_causal_mask(t, bs)
    for i in range(t):
        for j in range(t):
            assert bool(mask[i, j]) == (j // bs <= i // bs)


def test_span_aware_mask_matches_loop():
    # Row 0: 3 clean blocks (block 2 is the turn) + its noisy copy; row 1 shorter, padded;
    # row 2: two turn blocks with two noisy copies (complementary masks).
    rows = [
        ([0] * 6 + [1] * 2, [0, 0, 1, 1, 2, 2, 2, 2]),
        ([0] * 4 + [1] * 2, [0, 0, 1, 1, 1, 1]),
        ([0] * 6 + [1] * 4 + [2] * 4, [0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]),
    ]
    n = 14
    stream = torch.zeros(len(rows), n, dtype=torch.long)
    block = torch.full((len(rows), n), 99, dtype=torch.long)
    valid = torch.zeros(len(rows), n, dtype=torch.bool)
    for r, (st, bk) in enumerate(rows):
        stream[r, : len(st)] = torch.tensor(st)
        block[r, : len(bk)] = torch.tensor(bk)
        valid[r, : len(st)] = True
    mask = span_aware_mask(stream, block, valid)
    assert mask.shape == (3, 1, n, n)
    for r in range(3):
        for i in range(n):
            for j in range(n):
                if i == j:
                    want = True
                elif not (valid[r, i] and valid[r, j]):
                    want = False
                elif stream[r, i] == 0:
                    want = stream[r, j] == 0 and block[r, j] <= block[r, i]
                elif stream[r, j] == 0:
                    want = block[r, j] < block[r, i]
                else:  # another noisy token: same block of the same copy only
                    want = stream[r, j] == stream[r, i] and block[r, j] == block[r, i]
                assert bool(mask[r, 0, i, j]) == bool(want), (r, i, j)


def test_span_aware_training_equals_cached_inference(tiny_diffusion):
    """A noisy turn block under the span-aware mask gets the same logits as decoding that block
    against a cache of the clean prefix: training sees what inference sees."""
    b = tiny_diffusion.block_size
    v = tiny_diffusion.config.vocab_size
    clean = torch.randint(7, v, (1, 4 * b))
    noisy_block = clean[:, 2 * b : 3 * b].clone()
    noisy_block[:, ::2] = tiny_diffusion.config.mask_token_id
    # Training layout: [clean 4 blocks | noisy copy of block 2].
    seq = torch.cat([clean, noisy_block], 1)
    stream = torch.cat([torch.zeros(4 * b), torch.ones(b)]).long()[None]
    pos = torch.cat([torch.arange(4 * b), torch.arange(2 * b, 3 * b)])[None]
    mask = span_aware_mask(stream, pos // b, torch.ones_like(stream, dtype=torch.bool))
    train_logits = tiny_diffusion(seq, attn_mask=mask, position_ids=pos).logits[:, 4 * b :]
    ks, vs = tiny_diffusion.new_cache(1, 4 * b)
    tiny_diffusion.prefill(clean[:, : 2 * b], ks, vs)
    infer = tiny_diffusion.forward_cached(noisy_block, ks, vs, torch.tensor([2 * b]))
    torch.testing.assert_close(train_logits, infer, atol=1e-4, rtol=1e-4)
