"""The peer decode loop (Fast-dLLM v2's generation loop, dllmflow/models/peer_loop.py) on our
adapter's network: with our commit schedule it decodes what our DiffusionSampler decodes, in the
same denoising passes; with theirs it decodes what the published rule, written out densely over
the family's own stand-in network, decodes."""

from __future__ import annotations

import pytest
import torch

from dllmflow.models.loader import load_backend
from dllmflow.models.peer_loop import peer_block_generate
from dllmflow.models.sampling import GenerationRequest

from .standins import block_causal, save_block_family
from .test_sampling import PROMPTS


@pytest.fixture(scope="module")
def family(tmp_path_factory, tokenizer):
    """A random Fast-dLLM-v2-shaped checkpoint (Qwen2 shape, bd_size 8) through our loader."""
    path = tmp_path_factory.mktemp("fast-dllm-v2")
    net = save_block_family(path, "fast-dllm-v2", tokenizer)
    backend = load_backend(path, slot="diffusion")
    model = backend.model
    assert backend.sampler.shift and backend.sampler.block == 8
    with torch.no_grad():
        # A sharper head and a zero mask vector, in both networks: the masked positions'
        # confidences then spread around the thresholds below (as saved, every pass of the
        # stand-in commits one token at any of them, so no threshold would be tested).
        for head in (net.lm_head.weight, model.lm_head.weight):
            head.mul_(10)
        net.model.embed_tokens.weight[tokenizer.mask_token_id] = 0
        model.embed.mask_embedding.zero_()
        ids = torch.randint(3, len(tokenizer), (1, 3 * 8))
        ids[:, -8:] = tokenizer.mask_token_id
        want = net(ids, block_causal(ids.shape[1], 8))
        torch.testing.assert_close(model(ids).logits, want, atol=1e-4, rtol=1e-4)
    return net, backend


def _padded(ids: list[int], block: int, pad_id: int) -> list[int]:
    return [pad_id] * ((-len(ids)) % block) + ids


@pytest.mark.parametrize("tau", [0.3, 0.5, 0.9])
def test_peer_loop_with_our_schedule_decodes_what_our_sampler_decodes(family, tokenizer, tau):
    _net, backend = family
    sampler, model = backend.sampler, backend.model
    b = sampler.block
    several_per_pass = False
    for prompt in PROMPTS:  # 3 prompt lengths, none a whole number of blocks: our left pad
        req = GenerationRequest(
            prompt=prompt,
            max_new_tokens=3 * b,
            tau=tau,
            hold_repeats=False,  # the peer has no repeat hold
            stop_at_action_close=False,
        )
        ours = sampler.generate(req)
        ids = sampler.encode_request(req)
        peer = peer_block_generate(
            model,
            ids,
            max_new_tokens=3 * b,
            threshold=tau,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
        )
        assert peer.tokens == ours.token_ids
        assert peer.refinement_passes == ours.refinement_passes
        # Theirs pays a prefill and a clean pass per finished block on top of our passes.
        blocks = -(-len(peer.tokens) // b) if ours.stop_reason == "budget_exhausted" else None
        if blocks is not None:
            assert peer.passes == ours.refinement_passes + blocks
        several_per_pass |= ours.refinement_passes < len(ours.token_ids)
        assert len(set(ours.token_ids)) > 1  # not a degenerate run a broken loop could match
    if tau < 0.9:
        assert several_per_pass  # the threshold rule, not only the one-per-pass fallback


def dense_fast_dllm_v2(net, ctx, n_blocks, block, sub, tau, mask_id):
    """Fast-dLLM v2's published rule written out over the family's own network, no cache: the
    whole sequence under a block-causal mask on every forward. A prompt tail opens the first
    block; every other block's first token is the argmax of the position before it; then sub-block
    by sub-block, each pass commits the sub-block's masked positions with p > tau, at least the
    most confident one. Returns (tokens, forwards, denoising forwards) as a cached loop counts
    them: a prefill of the prompt's whole blocks, a clean pass after each finished block."""

    def logits_of(seq):
        x = torch.tensor([seq])
        with torch.no_grad():
            return net(x, block_causal(x.shape[1], block))[0]

    whole = len(ctx) // block * block
    done, tail = list(ctx[:whole]), list(ctx[whole:])
    out, passes, refinement = [], int(whole > 0), 0
    for k in range(n_blocks):
        passes += int(k > 0)
        first = len(tail)
        if tail:
            tokens, tail = tail + [mask_id] * (block - first), []
        else:
            tokens = [int(logits_of(done)[-1].argmax())] + [mask_id] * (block - 1)
        for s0 in range(0, block, sub):
            while mask_id in tokens[s0 : s0 + sub]:
                logits = logits_of(done + tokens)[-block - 1 : -1]  # token shift
                passes, refinement = passes + 1, refinement + 1
                probs = torch.softmax(logits[s0 : s0 + sub], dim=-1)
                masked = [t == mask_id for t in tokens[s0 : s0 + sub]]
                conf = [float(probs[i].max()) if m else -1.0 for i, m in enumerate(masked)]
                best = max(range(sub), key=lambda i: (conf[i], -i))
                for i in range(sub):
                    if masked[i] and (conf[i] > tau or i == best):
                        tokens[s0 + i] = int(probs[i].argmax())
        out += tokens[first:]
        done += tokens
    return out, passes, refinement


@pytest.mark.parametrize(
    ("sub", "tau", "layout"),
    [(4, 0.3, "ours"), (8, 0.5, "theirs"), (2, 0.9, "theirs"), (4, 0.3, "theirs")],
)
def test_peer_loop_with_their_schedule_follows_the_published_rule(
    family, tokenizer, sub, tau, layout
):
    """``layout`` ours: the prompt left-padded to whole blocks (pad_id); theirs: the prompt's
    last partial block opens the first generated block."""
    net, backend = family
    b, mask_id, n = backend.sampler.block, tokenizer.mask_token_id, 2 * backend.sampler.block
    for prompt in PROMPTS[:2]:
        ids = backend.sampler.encode_prompt(prompt, n)
        assert len(ids) % b and len(ids) > b  # a tail, and whole blocks to prefill
        pad = tokenizer.pad_token_id if layout == "ours" else None
        peer = peer_block_generate(
            backend.model,
            ids,
            max_new_tokens=n,
            sub_block_size=sub,
            threshold=tau,
            pad_id=pad,
            schedule="fast-dllm-v2",
        )
        ctx = _padded(ids, b, pad) if pad is not None else ids
        blocks = -(-(len(ctx) % b + n) // b)
        want, passes, refinement = dense_fast_dllm_v2(net, ctx, blocks, b, sub, tau, mask_id)
        assert peer.tokens == want[:n]
        assert (peer.passes, peer.refinement_passes) == (passes, refinement)
        assert len(set(want)) > 1


def test_peer_loop_stops_once_the_stop_token_is_settled(family):
    _net, backend = family
    model, b = backend.model, backend.sampler.block
    ids = backend.sampler.encode_prompt(PROMPTS[0], 2 * b)
    full = peer_block_generate(model, ids, max_new_tokens=2 * b, threshold=0.3)
    assert len(full.tokens) == 2 * b
    stop = full.tokens[b + 2]  # a token of the second block, as if it were the stop token
    cut = peer_block_generate(model, ids, max_new_tokens=2 * b, threshold=0.3, eos_id=stop)
    assert cut.tokens == full.tokens[: full.tokens.index(stop)]
    assert cut.passes <= full.passes


def test_peer_loop_refuses_what_it_cannot_follow(family):
    _net, backend = family
    with pytest.raises(ValueError, match="differs from the model's"):
        peer_block_generate(backend.model, [5, 6], max_new_tokens=8, block_size=16)
    with pytest.raises(ValueError, match="does not divide"):
        peer_block_generate(backend.model, [5, 6], max_new_tokens=8, sub_block_size=3)
