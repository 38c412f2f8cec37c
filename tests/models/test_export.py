"""`dllmflow models export`: the AR half merged into its base as a plain LlamaForCausalLM, over a
tiny random Llama base and adapter written here and, when it is imported on this machine, over
the real SmolLM2-135M base with the shipped AR adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from dllmflow.config import get_settings, load_settings
from dllmflow.models.base_import import BaseModelError, read_manifest, sha256_file
from dllmflow.models.export import EXPORT_MANIFEST, ExportError, export_ar
from dllmflow.models.loader import CHECKPOINT_DIR, load_backend
from dllmflow.models.lora import attach_lora, load_adapter, save_adapter
from dllmflow.models.modeling_llama import build_from_base
from dllmflow.models.real_pair import MASK_TOKEN, PAD_TOKEN, load_pair_tokenizer
from dllmflow.models.sampling.base import GenerationRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
RANK, ALPHA = 4, 8.0
PROMPTS = ["Question: who wrote the report?", "Q: list the files in /tmp and count them"]


def write_base(path: Path, hidden: int = 64, seed: int = 0) -> Path:
    """A tiny Llama saved like an imported base: weights, a chat tokenizer, a manifest."""
    tok = AutoTokenizer.from_pretrained(str(CHECKPOINT_DIR / "tokenizer"))
    tok.add_special_tokens(
        {"additional_special_tokens": [MASK_TOKEN, PAD_TOKEN, "<|im_start|>", "<|im_end|>"]}
    )
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.2,  # layers that matter: greedy text varies, not one copied token
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # peaked distributions, so greedy choices are not float near-ties
        model.model.norm.weight.mul_(10.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    manifest = {"format": 1, "source": {"base_model": "smollm2-135m", "sha256": "0" * 64}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def pair_kwargs(tok) -> dict:
    return dict(
        block_size=4,
        mask_token_id=tok.convert_tokens_to_ids(MASK_TOKEN),
        pad_token_id=tok.convert_tokens_to_ids(PAD_TOKEN),
        # the shipped adapter ends a turn with an id other than the base's eos; so does this one
        eos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        lora_rank=RANK,
        lora_alpha=ALPHA,
    )


def write_pair(base_dir: Path, out: Path, kind: str) -> Path:
    """A pair half over ``base_dir`` with random LoRA factors (B non-zero), as if trained."""
    tok = load_pair_tokenizer(base_dir)
    model = build_from_base(base_dir, kind, **pair_kwargs(tok))
    attach_lora(model, RANK, ALPHA)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_b" in name or "mask_embedding" in name:
                p.normal_(std=0.05)
    out.mkdir(parents=True)
    model.config.save_pretrained(out)
    extra = ["embed.mask_embedding"] if kind == "diffusion" else []
    save_adapter(model, out / "adapter.safetensors", extra)
    return out


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("state")
    write_base(state / "models" / "smollm2-135m")
    return state


@pytest.fixture(scope="module")
def base_dir(state_dir) -> Path:
    return state_dir / "models" / "smollm2-135m"


@pytest.fixture(scope="module")
def pairs(base_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    return {kind: write_pair(base_dir, root / kind, kind) for kind in ("ar", "diffusion")}


@pytest.fixture
def settings_at(state_dir, monkeypatch):
    """The loader and the CLI find the tiny base where `dllmflow models import` would put it."""
    monkeypatch.setenv("DLLMFLOW_STATE_DIR", str(state_dir))
    get_settings.cache_clear()
    yield load_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def exported_fp32(pairs, base_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "ar-fp32"
    return export_ar(pairs["ar"], out, base=base_dir, dtype="fp32").out_dir


def lora_reference(base_dir: Path, pair_dir: Path):
    """dllmflow's AR model with the adapter unmerged: LoRALinear computes base + scale * BA x,
    with exactly the saved (bf16-rounded) factors."""
    model = build_from_base(base_dir, "ar", **pair_kwargs(load_pair_tokenizer(base_dir)))
    attach_lora(model, RANK, ALPHA)
    missing, unexpected = model.load_state_dict(
        load_adapter(pair_dir / "adapter.safetensors"), strict=False
    )
    assert not unexpected and all(".lora_" not in m for m in missing)
    return model.eval()


def sample_ids(vocab: int) -> torch.Tensor:
    return torch.randint(10, vocab, (2, 24), generator=torch.Generator().manual_seed(3))


def test_logits_match_dllmflows_lora_model(exported_fp32, pairs, base_dir, settings_at):
    hf = LlamaForCausalLM.from_pretrained(str(exported_fp32), dtype=torch.float32).eval()
    ids = sample_ids(hf.config.vocab_size)
    lora = lora_reference(base_dir, pairs["ar"])
    loaded = load_backend(pairs["ar"]).model  # the loader's merge, what the replicas serve
    base = build_from_base(base_dir, "ar").eval()
    with torch.no_grad():
        got = hf(input_ids=ids).logits
        want, served, plain = lora(ids).logits, loaded(ids).logits, base(ids).logits
    # Merged vs unmerged is float32 rounding only: 1e-5 of these logits' range (about 70).
    torch.testing.assert_close(got, want, atol=7e-4, rtol=0)
    torch.testing.assert_close(got, served, atol=1e-5, rtol=0)  # the same merge, loaded
    assert (got - plain).abs().max() > 1.0  # the adapter changed the model


def test_greedy_tokens_match_dllmflows_sampler(exported_fp32, pairs, base_dir, settings_at):
    hf = LlamaForCausalLM.from_pretrained(str(exported_fp32), dtype=torch.float32).eval()
    base = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    backend = load_backend(pairs["ar"])
    eos = hf.generation_config.eos_token_id
    assert eos == backend.tokenizer.eos_token_id
    for prompt in PROMPTS:
        request = GenerationRequest(prompt=prompt, max_new_tokens=16, stop_at_action_close=False)
        want = backend.sampler.generate(request).token_ids
        ids = torch.tensor([backend.sampler.encode_prompt(prompt, 16)])
        with torch.no_grad():
            out = hf.generate(input_ids=ids, max_new_tokens=16, do_sample=False)
        got = out[0, ids.shape[1] :].tolist()
        assert got[: len(want)] == want and got[len(want) :] in ([], [eos]), prompt
        assert len(want) >= 4, want  # enough tokens to compare
        with torch.no_grad():
            plain = base.generate(input_ids=ids, max_new_tokens=16, do_sample=False)
        assert plain[0, ids.shape[1] :].tolist() != got  # the adapter changes the greedy text


def test_directory_is_a_plain_llama(pairs, base_dir, tmp_path):
    out = export_ar(pairs["ar"], tmp_path / "ar", base=base_dir).out_dir
    config = json.loads((out / "config.json").read_text())
    base_config = json.loads((base_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    for key in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size"):
        assert config[key] == base_config[key]
    pair_config = json.loads((pairs["ar"] / "config.json").read_text())
    eos = pair_config["eos_token_id"]
    assert config["eos_token_id"] == eos != base_config["eos_token_id"]
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == eos
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        assert {f.get_slice(k).get_dtype() for k in names} == {"BF16"}
        assert "lm_head.weight" not in names  # tied, as in the base
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template == CHAT_TEMPLATE and tok.eos_token_id == eos
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    base_tok = AutoTokenizer.from_pretrained(str(base_dir))
    text = "<|im_start|>user\nQuestion: who?<|im_end|>\n"
    assert tok(text)["input_ids"] == base_tok(text)["input_ids"]
    manifest = json.loads((out / EXPORT_MANIFEST).read_text())
    assert manifest["adapter"]["sha256"] == sha256_file(pairs["ar"] / "adapter.safetensors")
    assert manifest["adapter"]["modules_merged"] == 7 * 2
    assert manifest["base"]["name"] == "smollm2-135m"
    assert manifest["base"]["weights_sha256"] == {
        "model.safetensors": sha256_file(base_dir / "model.safetensors")
    }
    assert manifest["dtype"] == "bfloat16"
    model = LlamaForCausalLM.from_pretrained(str(out)).eval()
    assert model.dtype == torch.bfloat16


# -- refusals ---------------------------------------------------------------------------------


def test_refuses_the_diffusion_half(pairs, base_dir, tmp_path):
    with pytest.raises(ExportError, match="not a causal LM"):
        export_ar(pairs["diffusion"], tmp_path / "out", base=base_dir)
    assert not (tmp_path / "out").exists()


def test_refuses_a_base_that_does_not_match(pairs, tmp_path):
    other = write_base(tmp_path / "wider", hidden=96)
    with pytest.raises(ExportError, match=r"does not match .*n_embd 64 \(adapter\) vs 96"):
        export_ar(pairs["ar"], tmp_path / "out", base=other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["source"]["base_model"] = "some-other-model"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"trained on base 'smollm2-135m'.*'some-other-model'"):
        export_ar(pairs["ar"], tmp_path / "out", base=other)


def test_missing_base_says_to_import_it(pairs, tmp_path):
    settings = load_settings(state_dir=tmp_path / "empty")
    with pytest.raises(BaseModelError, match="run `dllmflow models import`"):
        export_ar(pairs["ar"], tmp_path / "out", settings=settings)


def test_refuses_a_non_empty_out_unless_forced(pairs, base_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty; pass --force"):
        export_ar(pairs["ar"], out, base=base_dir)
    assert (out / "keep.txt").read_text() == "mine"
    export_ar(pairs["ar"], out, base=base_dir, force=True)
    assert not (out / "keep.txt").exists() and (out / EXPORT_MANIFEST).is_file()
    (tmp_path / "empty").mkdir()  # an empty directory is no work to lose
    export_ar(pairs["ar"], tmp_path / "empty", base=base_dir)


def test_refuses_to_write_over_its_inputs(pairs, base_dir):
    with pytest.raises(ExportError, match="would replace the input"):
        export_ar(pairs["ar"], base_dir.parent, base=base_dir, force=True)
    assert read_manifest(base_dir) is not None


def test_refuses_an_unknown_dtype(pairs, base_dir, tmp_path):
    with pytest.raises(ExportError, match="choose one of bf16, fp32"):
        export_ar(pairs["ar"], tmp_path / "out", base=base_dir, dtype="int4")


def test_failure_midway_leaves_nothing(pairs, base_dir, tmp_path, monkeypatch):
    from dllmflow.models import export

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "save_tokenizer", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_ar(pairs["ar"], tmp_path / "out", base=base_dir)
    assert list(tmp_path.iterdir()) == []  # neither the directory nor a partial one


def test_cli_export(pairs, settings_at, tmp_path):
    from dllmflow.cli import app

    runner = CliRunner()
    out = tmp_path / "exported"
    result = runner.invoke(app, ["models", "export", str(pairs["ar"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "merging" in result.stderr and f"vllm serve {out}" in result.stderr
    again = runner.invoke(app, ["models", "export", str(pairs["ar"]), "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.stderr
    forced = runner.invoke(
        app, ["models", "export", str(pairs["ar"]), "--out", str(out), "--force", "--dtype", "fp32"]
    )
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / EXPORT_MANIFEST).read_text())["dtype"] == "float32"
    refused = runner.invoke(
        app, ["models", "export", str(pairs["diffusion"]), "--out", str(tmp_path / "d")]
    )
    assert refused.exit_code == 1 and "block-diffusion" in refused.stderr


# -- the real SmolLM2-135M --------------------------------------------------------------------


def real_state_dir() -> Path | None:
    """A state dir holding the imported SmolLM2 base (DLLMFLOW_STATE_DIR, or the repo's)."""
    for state in dict.fromkeys([load_settings().state_dir, REPO_ROOT / ".dllmflow"]):
        if read_manifest(state / "models" / "smollm2-135m") is not None:
            return state
    return None


REAL_STATE = real_state_dir()


@pytest.mark.slow
@pytest.mark.skipif(
    REAL_STATE is None,
    reason="the SmolLM2-135M base is not imported (run `dllmflow models import`, or point "
    "DLLMFLOW_STATE_DIR at a state dir that has it)",
)
def test_real_ar_adapter_export(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLMFLOW_STATE_DIR", str(REAL_STATE))
    get_settings.cache_clear()
    try:
        result = export_ar("smollm2-135m/ar", tmp_path / "smollm2-ar", dtype="fp32")
        backend = load_backend("smollm2-135m/ar")
    finally:
        get_settings.cache_clear()
    assert result.manifest["adapter"]["modules_merged"] == 30 * 7
    hf = LlamaForCausalLM.from_pretrained(str(result.out_dir), dtype=torch.float32).eval()
    prompt = "Question: what is the capital of France?\n"
    want = backend.sampler.generate(
        GenerationRequest(prompt=prompt, max_new_tokens=12, stop_at_action_close=False)
    ).token_ids
    ids = torch.tensor([backend.sampler.encode_prompt(prompt, 12)])
    with torch.no_grad():
        got = hf.generate(input_ids=ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    assert len(want) >= 4 and got.tolist()[: len(want)] == want
