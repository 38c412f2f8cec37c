"""load_backend: shipped checkpoints, our own checkpoint directories and plain HF causal LMs all
come back behind the same sampler interface."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dllmflow.agent.actions import parse_turn
from dllmflow.agent.policy import ModelPolicy
from dllmflow.models.loader import load_backend
from dllmflow.models.sampling import GenerationRequest
from dllmflow.models.sampling.ar import ARSampler
from dllmflow.models.sampling.diffusion import DiffusionSampler
from dllmflow.models.sampling.hf import HFCausalSampler
from dllmflow.models.tokenizer import encode
from dllmflow.world.generator import read_questions

PROMPT = "Role: planner\nQuestion: Who founded Kixford Press?\nTurn 1 planner:\n"


@pytest.fixture(params=["llama", "mistral"])
def hf_llama_dir(request, tmp_path, tokenizer):
    """A Llama checkpoint (adapted onto our batched AR sampler) or a Mistral one (a family
    without an adapter: transformers' own model, one sequence a step)."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(3)
    config_cls, model_cls = (
        (LlamaConfig, LlamaForCausalLM)
        if request.param == "llama"
        else (MistralConfig, MistralForCausalLM)
    )
    cfg = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = model_cls(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(20)  # peaked logits: no near-ties in greedy
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_local_hf_checkpoint_goes_through_the_same_interface(hf_llama_dir, tokenizer):
    model, _tok, sampler = load_backend(hf_llama_dir)
    llama = model.config.model_type != "mistral"
    assert isinstance(sampler, ARSampler if llama else HFCausalSampler)
    result = sampler.generate(GenerationRequest(prompt=PROMPT, max_new_tokens=12))
    ids = encode(tokenizer, PROMPT)
    ref = []
    with torch.no_grad():
        for _ in range(12):
            nxt = int(model(torch.tensor([ids + ref])).logits[0, -1].argmax())
            if nxt == tokenizer.eos_token_id:
                break
            ref.append(nxt)
    assert result.token_ids == ref
    assert result.forward_passes == len(ref) + (result.stop_reason == "eos")
    reqs = [GenerationRequest(prompt=PROMPT + "x" * i, max_new_tokens=6 + i) for i in range(3)]
    singles = [sampler.generate(r).token_ids for r in reqs]
    assert [r.token_ids for r in sampler.generate_batch(reqs)] == singles


def test_own_checkpoint_directories(tmp_path, tiny_ar, tiny_diffusion, tokenizer):
    for name, model, kind in (("a", tiny_ar, ARSampler), ("d", tiny_diffusion, DiffusionSampler)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        backend = load_backend(tmp_path / name)
        assert isinstance(backend.sampler, kind)
        req = GenerationRequest(prompt=PROMPT, max_new_tokens=16)
        fresh = kind(model, tokenizer).generate(req)
        assert backend.sampler.generate(req).token_ids == fresh.token_ids


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_backend(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["ar", "diffusion"])
def test_shipped_checkpoints_write_valid_planner_turns(name):
    """The committed weights load and act: valid planner turns on unseen demo questions."""
    backend = load_backend(name)
    assert backend.model.config.n_layer == 6 and backend.model.config.n_embd == 256
    policy = ModelPolicy(backend.sampler)
    from dllmflow.world.generator import demo_paths

    questions = read_questions(demo_paths()[1])[:3]
    for q in questions:
        result = policy.generate("planner", q, [])
        parsed = parse_turn(result.text)
        assert parsed.valid, result.text
        assert parsed.action.tool == "search"
        assert parsed.action.args["query"] == q["hops"][0]["entity"]


def test_the_planner_may_commit_in_its_own_order():
    backend = load_backend("diffusion")
    policy = ModelPolicy(backend.sampler, planner_commit_order="left_to_right")
    question = {"question": "Who founded Ficam Laboratories?"}
    assert policy.request("planner", question, []).commit_order == "left_to_right"
    assert policy.request("seeker", question, []).commit_order == "confidence"
    assert ModelPolicy(backend.sampler).request("planner", question, []).commit_order == (
        "confidence"
    )
