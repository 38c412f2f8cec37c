"""The real pair's pieces on a small random Llama: LoRA merge, adapter round trip through the
loader, chat framing, and token-shifted block diffusion batched vs one at a time."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dllmflow.models.loader import CHECKPOINT_DIR, load_backend
from dllmflow.models.lora import attach_lora, load_adapter, merge_adapter, save_adapter
from dllmflow.models.modeling_llama import build_from_base
from dllmflow.models.real_pair import MASK_TOKEN, PAD_TOKEN
from dllmflow.models.sampling.ar import ARSampler
from dllmflow.models.sampling.base import ChatPrompt, GenerationRequest
from dllmflow.models.sampling.diffusion import DiffusionSampler

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny Llama saved like an imported base: weights, a chat tokenizer, a manifest."""
    path = tmp_path_factory.mktemp("state") / "models" / "smollm2-135m"
    tok = AutoTokenizer.from_pretrained(str(CHECKPOINT_DIR / "tokenizer"))
    tok.add_special_tokens(
        {"additional_special_tokens": [MASK_TOKEN, PAD_TOKEN, "<|im_start|>", "<|im_end|>"]}
    )
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "manifest.json").write_text(json.dumps({"format": 1}))
    return path


def _pair_kwargs(tok) -> dict:
    return dict(
        block_size=4,
        mask_token_id=tok.convert_tokens_to_ids(MASK_TOKEN),
        pad_token_id=tok.convert_tokens_to_ids(PAD_TOKEN),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        lora_rank=4,
        lora_alpha=8.0,
    )


def _tok(base_dir):
    from dllmflow.models.real_pair import load_pair_tokenizer

    return load_pair_tokenizer(base_dir)


def _trained_adapter(model) -> None:
    """Random LoRA factors and mask vector, as if trained."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_b" in name or "mask_embedding" in name:
                p.normal_(std=0.05)


@pytest.mark.parametrize("kind", ["ar", "diffusion"])
def test_merged_adapter_equals_wrapped_model(base_dir, tmp_path, kind):
    tok = _tok(base_dir)
    wrapped = build_from_base(base_dir, kind, **_pair_kwargs(tok)).eval()
    attach_lora(wrapped, 4, 8.0)
    _trained_adapter(wrapped)
    extra = ["embed.mask_embedding"] if kind == "diffusion" else []
    save_adapter(wrapped, tmp_path / "adapter.safetensors", extra)
    plain = build_from_base(base_dir, kind, **_pair_kwargs(tok)).eval()
    applied = merge_adapter(plain, load_adapter(tmp_path / "adapter.safetensors"), 8.0)
    assert applied == 2 * 7 * 2 + len(extra)  # 7 projections x 2 layers, A and B each
    ids = torch.randint(10, 200, (2, 16))
    ids[:, -4:] = tok.mask_token_id
    with torch.no_grad():
        want, got = wrapped(ids).logits, plain(ids).logits
    # The saved adapter is bf16, so the merged weights differ by its rounding only.
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)
    base = build_from_base(base_dir, kind, **_pair_kwargs(tok)).eval()
    with torch.no_grad():
        assert (base(ids).logits - got).abs().max() > 1e-2  # the adapter changed something


def test_adapter_names_an_unknown_module(base_dir):
    tok = _tok(base_dir)
    model = build_from_base(base_dir, "ar", **_pair_kwargs(tok))
    bad = {"blocks.0.nope.lora_a": torch.zeros(4, 64), "blocks.0.nope.lora_b": torch.zeros(64, 4)}
    with pytest.raises(ValueError, match=r"blocks\.0\.nope"):
        merge_adapter(model, bad, 8.0)


def _save_pair(base_dir, out, kind) -> None:
    tok = _tok(base_dir)
    model = build_from_base(base_dir, kind, **_pair_kwargs(tok))
    attach_lora(model, 4, 8.0)
    _trained_adapter(model)
    out.mkdir(parents=True)
    model.config.save_pretrained(out)
    extra = ["embed.mask_embedding"] if kind == "diffusion" else []
    save_adapter(model, out / "adapter.safetensors", extra)


@pytest.fixture
def pair_dirs(base_dir, tmp_path, monkeypatch):
    from dllmflow.config import get_settings

    monkeypatch.setenv("DLLMFLOW_STATE_DIR", str(base_dir.parent.parent))
    get_settings.cache_clear()
    dirs = {kind: tmp_path / kind for kind in ("ar", "diffusion")}
    for kind, path in dirs.items():
        _save_pair(base_dir, path, kind)
    yield dirs
    get_settings.cache_clear()


def test_loader_round_trip_gives_chat_samplers(pair_dirs):
    ar = load_backend(pair_dirs["ar"])
    diffusion = load_backend(pair_dirs["diffusion"])
    assert isinstance(ar.sampler, ARSampler) and isinstance(diffusion.sampler, DiffusionSampler)
    assert diffusion.sampler.shift and ar.sampler.chat is not None
    ids = ar.sampler.encode_prompt("Question: who?", 16)
    text = ar.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "Question: who?" in text
    assert ar.model.config.max_position == 2048  # the base's positions, not 640


def test_the_serving_dtype_setting_reaches_the_loader(pair_dirs, monkeypatch):
    from pydantic import ValidationError

    from dllmflow.models.loader import dtype_from_name as torch_dtype
    from dllmflow.workers.serving.settings import ServingSettings

    monkeypatch.setenv("DLLMFLOW_DTYPE", "bfloat16")
    assert ServingSettings().dtype == "bfloat16"
    model = load_backend(pair_dirs["ar"], dtype=torch_dtype(ServingSettings().dtype)).model
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(
        load_backend(pair_dirs["ar"], dtype=torch_dtype("auto")).model.parameters()
    ).dtype == (
        torch.float32  # auto on CPU
    )
    monkeypatch.setenv("DLLMFLOW_DTYPE", "float16")
    with pytest.raises(ValidationError, match="dtype"):
        ServingSettings()
    with pytest.raises(ValueError, match="auto, float32 or bfloat16, got 'half'"):
        torch_dtype("half")


def test_a_turn_prefix_follows_the_assistant_header(pair_dirs):
    """A repair's skeleton (or a P-ReAct resume's action) continues the model's own turn: inside
    the user message the model would start a new turn after it (it did: the repaired value
    began with <think> in most diffusion repairs)."""
    for kind in ("ar", "diffusion"):
        sampler = load_backend(pair_dirs[kind]).sampler
        skeleton = '<think>t</think>\n<action>{"tool": "search", "args": {"query": "'
        request = GenerationRequest(prompt="Question: who?", turn_prefix=skeleton)
        text = sampler.tokenizer.decode(sampler.encode_request(request))
        assert text.endswith("<|im_start|>assistant\n" + skeleton)
        assert "Question: who?<|im_end|>" in text
        with pytest.raises(ValueError, match=r"turn prefix of \d+ tokens leaves no room"):
            sampler.encode_prompt("q", 16, "x " * sampler.max_position)


def test_chat_prompt_truncates_the_context_not_the_template(pair_dirs):
    tok = load_backend(pair_dirs["ar"]).tokenizer
    chat = ChatPrompt(tok)
    room = len(chat.prefix_ids) + len(chat.suffix_ids) + 5
    ids = chat.encode("one two three four five six seven eight nine ten", room)
    assert len(ids) == room
    assert ids[: len(chat.prefix_ids)] == chat.prefix_ids
    assert ids[-len(chat.suffix_ids) :] == chat.suffix_ids
    with pytest.raises(ValueError, match="cannot hold the chat template"):
        chat.encode("x", len(chat.prefix_ids))


def test_missing_base_model_says_how_to_import(pair_dirs, tmp_path, monkeypatch):
    from dllmflow.config import get_settings
    from dllmflow.models.base_import import BaseModelError

    monkeypatch.setenv("DLLMFLOW_STATE_DIR", str(tmp_path / "empty"))
    get_settings.cache_clear()
    with pytest.raises(BaseModelError, match="dllmflow models import"):
        load_backend(pair_dirs["ar"])


@pytest.mark.parametrize("kind", ["ar", "diffusion"])
def test_batched_decoding_matches_one_at_a_time(pair_dirs, kind):
    backend = load_backend(pair_dirs[kind])
    prompts = ["Question: a?", "Question: a much longer question about b and c?", "Q: d"]
    requests = [
        GenerationRequest(prompt=p, max_new_tokens=12, tau=0.5, stop_at_action_close=False)
        for p in prompts
    ]
    single = [backend.sampler.generate(r).token_ids for r in requests]
    again = [
        GenerationRequest(prompt=p, max_new_tokens=12, tau=0.5, stop_at_action_close=False)
        for p in prompts
    ]
    batched = [r.token_ids for r in backend.sampler.generate_batch(again, max_batch=3)]
    assert batched == single
    assert all(single)  # every request decoded something


def test_mixed_commit_orders_batch_like_one_at_a_time(pair_dirs):
    backend = load_backend(pair_dirs["diffusion"])
    prompts = ["Question: a?", "Question: a much longer question about b and c?", "Q: d", "e"]

    def requests():
        return [
            GenerationRequest(
                prompt=p,
                max_new_tokens=12,
                tau=0.5,
                stop_at_action_close=False,
                commit_order=("confidence", "left_to_right")[i % 2],
            )
            for i, p in enumerate(prompts)
        ]

    single = [backend.sampler.generate(r) for r in requests()]
    batched = backend.sampler.generate_batch(requests(), max_batch=4)
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    # Committing only from the left never takes fewer passes than committing anywhere.
    same_prompt = [GenerationRequest(prompt=prompts[1], max_new_tokens=12, tau=0.5,
                                     stop_at_action_close=False, commit_order=o)
                   for o in ("confidence", "left_to_right")]  # fmt: skip
    free, ordered = (backend.sampler.generate(r) for r in same_prompt)
    assert ordered.forward_passes >= free.forward_passes


def test_shifted_diffusion_commits_what_the_shifted_logits_say(pair_dirs):
    """First pass of a turn: the committed tokens are the argmax of the logits one position to
    the left (the last context token for the block's first position)."""
    backend = load_backend(pair_dirs["diffusion"])
    sampler, model = backend.sampler, backend.model
    # Every position commits on the first pass (tau 0; no repeat held back).
    request = GenerationRequest(
        prompt="Question: a?", max_new_tokens=4, tau=0.0, hold_repeats=False
    )
    state = sampler.start(request)
    sampler.step([state])
    seq = [sampler.pad_id] * state.pad + state.prompt_ids + [sampler.mask_id] * 4
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0]
    t = len(seq) - 4
    want = logits[t - 1 : t + 3].argmax(-1).tolist()
    got = state.generated if state.done else state.block_tokens.tolist()
    assert got[: len(want)] == want[: len(got)]


def test_token_shift_sources_in_the_span_aware_layout():
    """A noisy turn position is denoised from the row before it; a block's first position from
    the clean stream's previous position (the clean previous block, as at inference)."""
    from dllmflow.training.pair import shifted_sources
    from dllmflow.training.tiny_pair import SpecialIds, diffusion_batch

    ids = SpecialIds(pad=0, mask=1, eos=2)
    ctx, turn = [5, 6, 7], [8, 9, 10, 11, 12, 13, 2]  # context 3 (+1 pad), turn 7 (+1 eos)
    batch = diffusion_batch([(ctx, turn)], 4, ids, torch.Generator().manual_seed(0))
    batch["targets"][:] = -100
    n = 12  # clean stream: [pad, 5, 6, 7 | 8 9 10 11 | 12 13 2 2]; noisy copies of blocks 1-2
    batch["targets"][0, n : n + 8] = torch.tensor([8, 9, 10, 11, 12, 13, 2, 2])
    rows, targets = shifted_sources(batch, 4)
    # noisy index n + k is position 4 + k; block starts at positions 4 and 8
    assert rows.tolist() == [3, n, n + 1, n + 2, 7, n + 4, n + 5, n + 6]
    assert targets.tolist() == [8, 9, 10, 11, 12, 13, 2, 2]


def test_diffusion_phases_run_as_two_processes(base_dir, tmp_path):
    """The adaptation phase alone, then the agent phase from its adapter: the second run
    starts from exactly that adapter and continues its loss history."""
    from safetensors.torch import load_file

    from dllmflow.training.pair import train
    from dllmflow.training.tiny_pair import PackedExamples

    tok = _tok(base_dir)
    ids = tok("the quick brown fox jumps over the lazy dog " * 4)["input_ids"]
    examples = [(ids[:20], [*ids[20:29], tok.eos_token_id])] * 8
    data = tmp_path / "agent.pt"
    PackedExamples.pack(examples).save(data)
    PackedExamples.pack(examples).save(str(data) + ".prose.pt")
    common = dict(rank=4, alpha=8.0, tokens_per_batch=128, block=4, lr=1e-3)

    adapt = train("diffusion", base_dir, data, tmp_path / "adapt", steps=0, adapt_steps=3, **common)
    assert (adapt["steps_done"], adapt["adapt_steps"]) == (0, 3)
    # Zero agent steps from the adapter writes the adapter back unchanged.
    same = train("diffusion", base_dir, data, tmp_path / "same", steps=0,
                 init_adapter=tmp_path / "adapt", **common)  # fmt: skip
    want = load_file(str(tmp_path / "adapt" / "adapter.safetensors"))
    got = load_file(str(tmp_path / "same" / "adapter.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert same["init_adapter"] == str(tmp_path / "adapt")

    train("diffusion", base_dir, data, tmp_path / "agent", steps=2,
          init_adapter=tmp_path / "adapt", **common)  # fmt: skip
    history = json.loads((tmp_path / "agent" / "loss_history.json").read_text())
    phases = [(row["phase"], row["step"]) for row in history]
    assert phases[0][0] == "adapt" and phases[-1] == ("agent", 3 + 2)

    with pytest.raises(ValueError, match="rank 4; this run is diffusion with rank 8"):
        train("diffusion", base_dir, data, tmp_path / "bad", steps=1,
              init_adapter=tmp_path / "adapt", **{**common, "rank": 8})  # fmt: skip
    with pytest.raises(FileNotFoundError, match="not a run dir"):
        train("diffusion", base_dir, data, tmp_path / "bad", steps=1,
              init_adapter=tmp_path, **common)  # fmt: skip


def _episode_line(question: str, roles: list[str]) -> str:
    steps = [
        {"role": role, "turn": f'<think>{role} turn.</think>\n<action>{{"tool": "search", '
         f'"args": {{"query": "{question}"}}}}</action>', "observation": None}
        for role in roles
    ]  # fmt: skip
    return json.dumps({"question": {"id": "q", "question": question}, "steps": steps})


def test_prepare_records_each_turns_role_and_training_oversamples_it(base_dir, tmp_path):
    from dllmflow.training.pair import example_order, prepare, train
    from dllmflow.training.tiny_pair import PackedExamples

    episodes = tmp_path / "episodes.jsonl"
    episodes.write_text(
        _episode_line("who wrote it", ["planner", "seeker", "writer"]) + "\n"
        + _episode_line("when was it built", ["planner", "seeker"]) + "\n"
    )  # fmt: skip
    data = tmp_path / "agent.pt"
    counts = prepare(episodes, base_dir, data, context_tokens=128, workers=1)
    assert counts == {"episodes": 2, "agent_examples": 5}
    packed = PackedExamples.load(data)
    assert packed.roles == ["planner", "seeker", "writer", "planner", "seeker"]

    order = example_order(packed, {"planner": 3})
    assert sorted(order) == [0, 0, 0, 1, 2, 3, 3, 3, 4]
    assert example_order(packed, None) == list(range(5))
    with pytest.raises(ValueError, match=r"no examples of role \['critic'\]"):
        example_order(packed, {"critic": 2})
    with pytest.raises(ValueError, match="must be >= 1"):
        example_order(packed, {"planner": 0})
    unlabelled = PackedExamples.pack([packed[i] for i in range(5)])
    with pytest.raises(ValueError, match="prepared without them"):
        example_order(unlabelled, {"planner": 2})

    summary = train("ar", base_dir, data, tmp_path / "ar", steps=1, rank=4, alpha=8.0,
                    tokens_per_batch=256, block=4, oversample={"planner": 2})  # fmt: skip
    assert summary["oversample"] == {"planner": 2} and summary["steps_done"] == 1


def test_oversample_flag_names_a_malformed_value(capsys):
    from dllmflow.training.pair import main

    with pytest.raises(SystemExit):
        main(["train", "--kind", "ar", "--base", "b", "--data", "d", "--out", "o",
              "--steps", "1", "--oversample", "planner:3"])  # fmt: skip
    assert "--oversample 'planner:3': expected ROLE=N" in capsys.readouterr().err


def test_a_stacked_adapter_ships_as_one_of_the_summed_rank(base_dir, tmp_path):
    """--stack-on: the earlier adapter is merged and frozen, a new one trains above it, and
    both are written as one adapter whose factors concatenate along the rank."""
    from safetensors.torch import load_file

    from dllmflow.training.pair import train
    from dllmflow.training.tiny_pair import PackedExamples

    tok = _tok(base_dir)
    ids = tok("the quick brown fox jumps over the lazy dog " * 4)["input_ids"]
    data = tmp_path / "agent.pt"
    PackedExamples.pack([(ids[:20], [*ids[20:29], tok.eos_token_id])] * 8).save(data)
    common = dict(tokens_per_batch=128, block=4, lr=1e-3)
    train("diffusion", base_dir, data, tmp_path / "below", steps=2, rank=4, alpha=8.0, **common)
    summary = train("diffusion", base_dir, data, tmp_path / "above", steps=2, rank=2, alpha=4.0,
                    stack_on=tmp_path / "below", **common)  # fmt: skip
    assert (summary["lora_rank"], summary["lora_alpha"]) == (6, 12.0)
    config = json.loads((tmp_path / "above" / "config.json").read_text())
    assert (config["lora_rank"], config["lora_alpha"]) == (6, 12.0)
    below = load_file(str(tmp_path / "below" / "adapter.safetensors"))
    stacked = load_file(str(tmp_path / "above" / "adapter.safetensors"))
    key = next(k for k in stacked if k.endswith(".lora_a"))
    assert stacked[key].shape[0] == 6 and torch.equal(stacked[key][:4], below[key])
    b_key = key[: -len("a")] + "b"
    assert (
        torch.equal(stacked[b_key][:, :4], below[b_key]) and stacked[b_key][:, 4:].abs().sum() > 0
    )
    history = json.loads((tmp_path / "above" / "loss_history.json").read_text())
    assert [row["step"] for row in history][-1] == 4  # the earlier run's history continues

    # The stacked factors at one scale equal the two adapters merged one after the other.
    kwargs = {**_pair_kwargs(tok), "lora_rank": 6, "lora_alpha": 12.0}
    one = build_from_base(base_dir, "diffusion", **kwargs).eval()
    merge_adapter(one, stacked, 12.0)
    two = build_from_base(base_dir, "diffusion", **kwargs).eval()
    merge_adapter(two, below, 8.0)
    merge_adapter(two, {k: v[4:] if k.endswith("a") else v[:, 4:] if k.endswith("b") else v
                        for k, v in stacked.items()}, 4.0)  # fmt: skip
    probe = torch.randint(10, 200, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(one(probe).logits, two(probe).logits, atol=1e-4, rtol=0)

    with pytest.raises(ValueError, match="alpha / rank 2; the new adapter's is 4"):
        train("diffusion", base_dir, data, tmp_path / "bad", steps=1, rank=2, alpha=8.0,
              stack_on=tmp_path / "below", **common)  # fmt: skip
    with pytest.raises(ValueError, match="exclusive"):
        train("diffusion", base_dir, data, tmp_path / "bad", steps=1, rank=2, alpha=4.0,
              stack_on=tmp_path / "below", init_adapter=tmp_path / "below", **common)  # fmt: skip
    with pytest.raises(ValueError, match="is a diffusion adapter; this run is ar"):
        train("ar", base_dir, data, tmp_path / "bad", steps=1, rank=2, alpha=4.0,
              stack_on=tmp_path / "below", **common)  # fmt: skip
