"""Hugging Face model families through load_backend: Llama / Qwen2 causal LMs on the batched AR
sampler, SDAR / Fast-dLLM v2 block diffusion on the block sampler, LLaDA / Dream through their
own (remote) code on the masked-diffusion sampler, and the refusals. Every model is a small
random-weight stand-in built here (tests/models/standins.py), nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from dllmflow.models.families import detect_family
from dllmflow.models.loader import load_backend
from dllmflow.models.sampling import GenerationRequest
from dllmflow.models.sampling.ar import ARSampler
from dllmflow.models.sampling.diffusion import DiffusionSampler
from dllmflow.models.sampling.hf import HFCausalSampler
from dllmflow.models.sampling.masked import MaskedDiffusionSampler
from dllmflow.models.tokenizer import encode

from .standins import block_causal, save_block_family, save_masked_family
from .test_sampling import PROMPTS, commit_confident

# -- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "family"),
    [
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, "llama"),
        ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}, "qwen2"),
        ({"architectures": ["SDARForCausalLM"], "model_type": "sdar"}, "sdar"),
        ({"architectures": ["Fast_dLLM_QwenForCausalLM"]}, "fast-dllm-v2"),
        ({"architectures": ["LLaDAModelLM"], "model_type": "llada"}, "llada"),
        ({"architectures": ["DreamModel"], "model_type": "Dream"}, "dream"),
        # no architectures: the class auto_map names, then model_type
        ({"auto_map": {"AutoModel": "modeling_llada.LLaDAModelLM"}}, "llada"),
        (
            {"auto_map": {"AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"}},
            "fast-dllm-v2",
        ),
        ({"model_type": "Dream"}, "dream"),
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, None),
    ],
)
def test_family_from_architectures_auto_map_or_model_type(cfg, family):
    found = detect_family(cfg)
    assert (found.name if found else None) == family


# -- AR families on the batched sampler (Llama, Qwen2) ---------------------------------------


def _save_hf(path, tokenizer, family: str, **extra):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(6)
    if family == "qwen2":
        # Qwen2 shape: q/k/v biases, its rope theta, an output head of its own
        cfg = Qwen2Config(
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            tie_word_embeddings=False,
            **common,
            **extra,
        )
        model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (
                    layer.self_attn.q_proj,
                    layer.self_attn.k_proj,
                    layer.self_attn.v_proj,
                ):
                    proj.bias.normal_(std=0.5)  # biases that matter
    else:
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=True, **common, **extra))
    with torch.no_grad():  # peaked logits: no near-ties in greedy
        model.model.embed_tokens.weight.mul_(20)
        if not cfg.tie_word_embeddings if family == "qwen2" else False:
            model.lm_head.weight.mul_(50)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def _hf_greedy(model, ids, n, eos):
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == eos:
                break
            out.append(nxt)
    return out


def _requests(n=4, max_new=10):
    return [
        GenerationRequest(prompt=PROMPTS[i % 3] + "x" * i, max_new_tokens=max_new + 3 * i)
        for i in range(n)
    ]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_ar_family_decodes_batched_on_our_sampler_token_identical(tmp_path, tokenizer, family):
    hf = _save_hf(tmp_path, tokenizer, family)
    backend = load_backend(tmp_path, slot="ar")
    assert isinstance(backend.sampler, ARSampler)
    assert backend.model.config.family == family
    assert backend.model.config.qkv_bias == (family == "qwen2")
    assert backend.model.config.tied_head == (family == "llama")
    assert backend.model.config.rope_theta == (1e6 if family == "qwen2" else 1e4)
    ids = torch.randint(3, len(tokenizer), (2, 19))
    with torch.no_grad():
        torch.testing.assert_close(backend.model(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)
    reqs = _requests()
    singles = [backend.sampler.generate(r) for r in reqs]
    for r, one in zip(reqs, singles, strict=True):  # transformers' own greedy, recomputed
        want = _hf_greedy(hf, encode(tokenizer, r.prompt), r.max_new_tokens, tokenizer.eos_token_id)
        assert one.token_ids == want
    batched = backend.sampler.generate_batch(_requests(), max_batch=3)
    assert [b.token_ids for b in batched] == [s.token_ids for s in singles]
    assert [b.forward_passes for b in batched] == [s.forward_passes for s in singles]


def test_qwen2_through_the_continuous_batching_scheduler(tmp_path, tokenizer):
    from dllmflow.workers.serving.scheduler import BatchScheduler

    _save_hf(tmp_path, tokenizer, "qwen2")
    backend = load_backend(tmp_path, slot="ar")
    reqs = _requests(6)
    alone = [backend.sampler.generate(r).token_ids for r in reqs]
    scheduler = BatchScheduler(backend.sampler, max_batch=4, name="test-qwen2")
    try:
        tickets = [scheduler.submit(r) for r in _requests(6)]
        served = [t.result(timeout_s=120) for t in tickets]
    finally:
        scheduler.stop()
    assert [s.result.token_ids for s in served] == alone
    assert max(s.mean_batch for s in served) > 1  # they really ran together


def test_ar_family_the_adapter_cannot_reproduce_falls_back_to_transformers(tmp_path, tokenizer):
    _save_hf(
        tmp_path,
        tokenizer,
        "llama",
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128,
        },
    )
    assert isinstance(load_backend(tmp_path, slot="ar").sampler, HFCausalSampler)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_causal_lm_in_the_diffusion_slot_is_refused(tmp_path, tokenizer, family):
    _save_hf(tmp_path, tokenizer, family)
    with pytest.raises(ValueError, match=r"causal \(left-to-right\) LM, not a diffusion LM"):
        load_backend(tmp_path, slot="diffusion")


def test_any_causal_lm_in_the_diffusion_slot_is_refused(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*not a diffusion LM"):
        load_backend(tmp_path, slot="diffusion")


def test_our_own_checkpoints_are_refused_in_the_other_slot(tmp_path, tiny_ar, tokenizer):
    tiny_ar.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="autoregressive checkpoint cannot serve in the diffusion"):
        load_backend(tmp_path, slot="diffusion")


# -- block-diffusion families on the block sampler (SDAR, Fast-dLLM v2) -----------------------


def block_reference(net, prompt_ids, n_blocks, block, tau, pad_id, mask_id, shift):
    """The family's semantics written out: the whole [left pad | prompt | turn | block] through
    the stand-in's own dense forward under a block-causal mask each pass (no cache); SDAR
    predicts a masked position from its own logits, Fast-dLLM v2 from the position before."""
    seq = [pad_id] * ((-len(prompt_ids)) % block) + list(prompt_ids)
    out, passes = [], 0
    for _ in range(n_blocks):
        tokens = torch.full((1, block), mask_id)
        masked = torch.ones(1, block, dtype=torch.bool)
        while masked.any():
            x = torch.tensor([seq + out + tokens[0].tolist()])
            with torch.no_grad():
                logits = net(x, block_causal(x.shape[1], block))
            start = x.shape[1] - block
            logits = logits[:, start - 1 : -1] if shift else logits[:, start:]
            commit_confident(logits, tokens, masked, tau)
            passes += 1
        out += tokens[0].tolist()
    return out, passes


@pytest.mark.parametrize("family", ["sdar", "fast-dllm-v2"])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_block_family_on_the_block_sampler_equals_its_dense_semantics(
    tmp_path, tokenizer, family, tau
):
    net = save_block_family(tmp_path, family, tokenizer)
    backend = load_backend(tmp_path, slot="diffusion")
    sampler = backend.sampler
    assert isinstance(sampler, DiffusionSampler)
    shift = family == "fast-dllm-v2"
    assert sampler.shift is shift
    assert sampler.block == (4 if family == "sdar" else 8)  # SDAR block_size, Fast-dLLM bd_size
    cfg = backend.model.config
    assert (cfg.qk_norm, cfg.qkv_bias, cfg.tied_head) == (family == "sdar", shift, False)
    # The adapted network computes what the family's does (weights, norms, biases, mask row).
    ids = torch.randint(3, len(tokenizer), (2, 3 * sampler.block))
    ids[:, -sampler.block :] = tokenizer.mask_token_id
    with torch.no_grad():
        want_logits = net(ids, block_causal(ids.shape[1], sampler.block))
        torch.testing.assert_close(backend.model(ids).logits, want_logits, atol=1e-4, rtol=1e-4)
    n = 2 * sampler.block
    for prompt in PROMPTS[:2]:
        req = GenerationRequest(
            prompt=prompt, max_new_tokens=n, tau=tau, stop_at_action_close=False
        )
        got = sampler.generate(req)
        want, passes = block_reference(
            net,
            encode(tokenizer, prompt),
            2,
            sampler.block,
            tau,
            tokenizer.pad_token_id,
            tokenizer.mask_token_id,
            shift,
        )
        assert got.stop_reason == "budget_exhausted"
        assert got.token_ids == want
        assert got.refinement_passes == passes
    reqs = [
        GenerationRequest(prompt=p, max_new_tokens=n, tau=tau, stop_at_action_close=False)
        for p in PROMPTS
    ]
    singles = [sampler.generate(r).token_ids for r in reqs]
    assert [r.token_ids for r in sampler.generate_batch(reqs, max_batch=3)] == singles


def test_block_family_using_what_the_network_lacks_is_refused(tmp_path, tokenizer):
    import json

    save_block_family(tmp_path, "sdar", tokenizer)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="sdar checkpoint uses rope scaling 'yarn'"):
        load_backend(tmp_path, slot="diffusion")


# -- full-attention masked diffusion through remote code (LLaDA, Dream) ----------------------


@pytest.fixture()
def no_remote_code(monkeypatch):
    from dllmflow.config import get_settings

    monkeypatch.delenv("DLLMFLOW_TRUST_REMOTE_CODE", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_masked_family_needs_the_trust_remote_code_opt_in(
    tmp_path, tokenizer, family, monkeypatch, no_remote_code
):
    from dllmflow.config import get_settings

    save_masked_family(tmp_path, family, tokenizer)
    assert get_settings().trust_remote_code is False
    with pytest.raises(ValueError, match="DLLMFLOW_TRUST_REMOTE_CODE=1") as err:
        load_backend(tmp_path, slot="diffusion")
    assert "full-attention diffusion LM" in str(err.value)
    monkeypatch.setenv("DLLMFLOW_TRUST_REMOTE_CODE", "1")
    get_settings.cache_clear()
    assert isinstance(load_backend(tmp_path, slot="diffusion").sampler, MaskedDiffusionSampler)


def masked_reference(model, prompt_ids, n_blocks, block, tau, mask_id, shift):
    """LLaDA-style semi-autoregressive refinement written out: the whole canvas each pass,
    later blocks still masked; Dream's logits shifted right by one (position 0 keeps its own);
    the sampler's default repeat hold applied."""
    out, passes = [], 0
    for _ in range(n_blocks):
        tokens = torch.full((1, block), mask_id)
        masked = torch.ones(1, block, dtype=torch.bool)
        while masked.any():
            rest = [mask_id] * ((n_blocks - 1) * block - len(out))
            canvas = list(prompt_ids) + out + tokens[0].tolist() + rest
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([canvas])).logits
            if shift:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            p = len(prompt_ids) + len(out)
            commit_confident(logits[:, p : p + block], tokens, masked, tau, hold_repeats=True)
            passes += 1
        out += tokens[0].tolist()
    return out, passes


@pytest.mark.parametrize(("family", "mask_id"), [("llada", 126336), ("dream", 151666)])
def test_masked_family_sampler_equals_its_refinement_loop(tmp_path, tokenizer, family, mask_id):
    model = save_masked_family(tmp_path, family, tokenizer).eval()
    backend = load_backend(tmp_path, slot="diffusion", trust_remote_code=True)
    sampler = backend.sampler
    assert isinstance(sampler, MaskedDiffusionSampler)
    assert sampler.mask_id == mask_id  # the family's mask id (the config names none)
    assert sampler.shift is (family == "dream")
    sampler.block = 8  # shorter blocks than the default 32 keep the test fast
    for prompt, tau in ((PROMPTS[0], 0.3), (PROMPTS[1], 1.0)):
        req = GenerationRequest(
            prompt=prompt, max_new_tokens=16, tau=tau, stop_at_action_close=False
        )
        got = sampler.generate(req)
        want, passes = masked_reference(
            model, encode(tokenizer, prompt), 2, 8, tau, mask_id, sampler.shift
        )
        assert got.stop_reason == "budget_exhausted"
        assert got.token_ids == want
        assert got.refinement_passes == passes
    reqs = [
        GenerationRequest(prompt=p, max_new_tokens=16, tau=0.3, stop_at_action_close=False)
        for p in (PROMPTS[0], PROMPTS[0], PROMPTS[2])  # two share a canvas length: one forward
    ]
    singles = [sampler.generate(r).token_ids for r in reqs]
    assert [r.token_ids for r in sampler.generate_batch(reqs, max_batch=3)] == singles


def test_trust_remote_code_setting_defaults_off(monkeypatch):
    from dllmflow.config import load_settings

    monkeypatch.delenv("DLLMFLOW_TRUST_REMOTE_CODE", raising=False)
    assert load_settings().trust_remote_code is False
    monkeypatch.setenv("DLLMFLOW_TRUST_REMOTE_CODE", "true")
    assert load_settings().trust_remote_code is True


def test_a_replica_refuses_a_checkpoint_of_the_other_slot():
    """Replicas load with their backend as the slot: the shipped AR checkpoint configured as the
    diffusion checkpoint fails when the replica starts, naming the problem."""
    from dllmflow.workers.serving.replicas import ModelReplica

    with pytest.raises(ValueError, match="autoregressive checkpoint cannot serve in the diffusion"):
        ModelReplica({"backend": "diffusion", "index": 0, "checkpoint": "ar"})
