"""Export the real pair's AR half as a plain Hugging Face ``LlamaForCausalLM`` directory, so an
external engine (vLLM, SGLang; llama.cpp after its own GGUF conversion) serves the fine-tuned
agent rather than the bare base model.

The adapter is merged into the imported base exactly as the loader merges it (lora.py): every
``<path>.lora_a`` [r, in] / ``.lora_b`` [out, r] pair adds ``lora_alpha / r * B @ A`` to the
weight it wraps, in float32, then the whole state is cast to the asked dtype. The directory holds
config.json (the base's Llama config with the adapter's end-of-turn id), model.safetensors, the
base tokenizer with its chat template, generation_config.json and ``export.json`` (which adapter,
its sha256, which base). It is written beside its destination and renamed into place.

The block-diffusion half is refused: it denoises blocks of masked tokens with attention that is
bidirectional inside a block and a trained mask embedding, so it is not a causal LM.

CLI: ``dllmflow models export smollm2-135m/ar --out DIR [--dtype bf16|fp32] [--base DIR]
[--force]``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .base_import import (
    QUIET,
    Steps,
    architecture_facts,
    base_model_dir,
    keep_chat_template,
    partial_path,
    publish,
    read_manifest,
    sha256_file,
    write_json_atomic,
)
from .modeling_llama import LlamaPairConfig, base_state_dict, hf_weight_names
from .real_pair import ADAPTER_FILE

if TYPE_CHECKING:
    from dllmflow.config import Settings

EXPORT_MANIFEST = "export.json"
EXPORT_FORMAT = 1
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}
# The pair config's architecture fields, each of which must equal the base's.
ARCHITECTURE = (
    "vocab_size",
    "n_layer",
    "n_head",
    "n_kv_head",
    "n_embd",
    "intermediate_size",
    "max_position",
    "rope_theta",
    "rms_eps",
)


class ExportError(ValueError):
    """The adapter, base or output directory cannot make an export; the message says why."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    seconds: float


# -- inputs -----------------------------------------------------------------------------------


def read_pair(pair: str | Path) -> tuple[Path, dict[str, Any]]:
    """The AR half's directory and config; anything else is refused with the reason."""
    from .loader import resolve_checkpoint

    path = resolve_checkpoint(pair).resolve()
    cfg: dict[str, Any] = json.loads((path / "config.json").read_text())
    model_type = cfg.get("model_type")
    if model_type != "dllmflow-llama":
        raise ExportError(
            f"{path}: model_type {model_type!r} is not a real-pair LoRA half (dllmflow-llama); "
            "only an adapter over an imported base needs exporting"
        )
    if cfg.get("kind") == "diffusion":
        raise ExportError(
            f"{path} is the block-diffusion half: it denoises blocks of masked tokens with "
            "attention that is bidirectional inside each block and a trained mask embedding, "
            "so it is not a causal LM that vLLM, SGLang or llama.cpp can serve; export the AR "
            "half instead (e.g. smollm2-135m/ar)"
        )
    if cfg.get("kind") != "ar":
        raise ExportError(f"{path}: kind {cfg.get('kind')!r}, expected 'ar'")
    if not (path / ADAPTER_FILE).is_file():
        raise ExportError(f"{path}: no {ADAPTER_FILE}")
    for key in ("lora_rank", "lora_alpha", "eos_token_id", "base"):
        if key not in cfg:
            raise ExportError(f"{path}/config.json names no {key}")
    return path, cfg


def locate_base(cfg: dict[str, Any], base: str | Path | None, settings: Settings | None) -> Path:
    """``base`` when given, else the imported base the adapter names (or how to import it)."""
    if base is not None:
        base_dir = Path(base).expanduser().resolve()
        if not (base_dir / "config.json").is_file():
            raise ExportError(
                f"--base {base_dir}: no config.json (a base model directory, as written by "
                "`dllmflow models import`)"
            )
        return base_dir
    if settings is None:
        from dllmflow.config import get_settings

        settings = get_settings()
    return base_model_dir(settings, cfg["base"])  # BaseModelError: says to run the import


def check_base_matches(cfg: dict[str, Any], hf: dict[str, Any], base_dir: Path) -> None:
    """The adapter was trained on this base: same name (when its manifest says) and shape."""
    manifest = read_manifest(base_dir) or {}
    name = (manifest.get("source") or {}).get("base_model")
    if name is not None and name != cfg["base"]:
        raise ExportError(
            f"the adapter was trained on base {cfg['base']!r}, but {base_dir} is {name!r}"
        )
    facts = LlamaPairConfig.from_hf_llama(hf, "ar")
    wrong = []
    for key in ARCHITECTURE:
        ours, theirs = cfg.get(key), getattr(facts, key)
        if ours is None:
            continue
        close = isinstance(ours, float) and math.isclose(ours, theirs, rel_tol=1e-6)
        if not (close or ours == theirs):
            wrong.append(f"{key} {ours} (adapter) vs {theirs} (base)")
    if wrong:
        raise ExportError(
            f"the adapter's base {cfg['base']!r} does not match {base_dir}: {'; '.join(wrong)}"
        )


# -- the merge --------------------------------------------------------------------------------


def merge_into_hf_state(
    state: dict[str, torch.Tensor],
    adapter: dict[str, torch.Tensor],
    names: dict[str, str],
    alpha: float,
    rank: int,
) -> list[str]:
    """Add every LoRA pair of ``adapter`` into the Hugging Face ``state`` (float32, in place):
    W += alpha / r * B @ A, as LoRALinear computes it. Returns the merged module paths."""
    merged = []
    for key in sorted(adapter):
        if key.endswith(".lora_b"):
            if key.removesuffix(".lora_b") + ".lora_a" not in adapter:
                raise ExportError(f"adapter tensor {key} has no matching lora_a")
            continue
        if not key.endswith(".lora_a"):
            raise ExportError(
                f"adapter tensor {key} is not a LoRA factor; an AR adapter holds only lora_a / "
                "lora_b pairs"
            )
        path = key.removesuffix(".lora_a")
        a, b = adapter[key].float(), adapter.get(path + ".lora_b")
        if b is None:
            raise ExportError(f"adapter tensor {key} has no matching lora_b")
        target = names.get(path + ".weight")
        if target is None or target not in state:
            raise ExportError(f"adapter names {path}, which the base has no weight for")
        weight = state[target]
        if a.shape[0] != rank:
            raise ExportError(f"{key}: rank {a.shape[0]}, but config.json says lora_rank {rank}")
        if (b.shape[0], a.shape[1]) != tuple(weight.shape) or b.shape[1] != rank:
            raise ExportError(
                f"{path}: LoRA factors A {tuple(a.shape)} / B {tuple(b.shape)} do not fit the "
                f"base weight {target} {tuple(weight.shape)}"
            )
        state[target] = weight.float() + (b.float() @ a) * (alpha / rank)
        merged.append(path)
    if not merged:
        raise ExportError("the adapter holds no LoRA factors")
    return merged


def tie_or_keep_head(state: dict[str, torch.Tensor], tied: bool) -> None:
    """A tied config must not carry a separate output matrix (transformers ties it on load)."""
    head = state.get("lm_head.weight")
    if head is None or not tied:
        return
    if not torch.equal(head, state["model.embed_tokens.weight"]):
        raise ExportError("the base says tie_word_embeddings but its lm_head differs")
    del state["lm_head.weight"]


def check_fits_llama(config: Any, state: dict[str, torch.Tensor]) -> None:
    """The written weights are exactly what a standard LlamaForCausalLM expects (names, shapes)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        expected = LlamaForCausalLM(config).state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != got:
        missing, extra = sorted(set(shapes) - set(got)), sorted(set(got) - set(shapes))
        wrong = sorted(k for k in set(shapes) & set(got) if shapes[k] != got[k])
        raise ExportError(
            f"merged weights do not fit LlamaForCausalLM: missing {missing[:4]}, "
            f"unexpected {extra[:4]}, wrong shape {wrong[:4]}"
        )


# -- the output -------------------------------------------------------------------------------


def check_out_dir(out_dir: Path, inputs: list[Path], force: bool) -> None:
    for path in inputs:
        if out_dir == path or out_dir in path.parents:
            raise ExportError(f"--out {out_dir} would replace the input {path}")
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not force:
        raise ExportError(f"--out {out_dir} exists and is not empty; pass --force to replace it")


def save_tokenizer(base_dir: Path, directory: Path, eos_id: int, pad_id: int) -> dict[str, Any]:
    """The base tokenizer (chat template kept), its eos the adapter's end-of-turn token so an
    engine stops where dllmflow's sampler does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    for what, token_id in (("eos_token_id", eos_id), ("pad_token_id", pad_id)):
        if not 0 <= token_id < len(tok):
            raise ExportError(f"config.json {what} {token_id} is outside the base vocabulary")
    tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    tok.pad_token = tok.convert_ids_to_tokens(pad_id)
    tok.save_pretrained(directory)
    portable_tokenizer_class(directory)
    return {
        "class": type(tok).__name__,
        "size": len(tok),
        "chat_template": keep_chat_template(tok, directory),
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
    }


def portable_tokenizer_class(directory: Path) -> None:
    """Name the tokenizer class as transformers 4 does: engines pinned to it (vLLM, SGLang
    releases) do not know transformers 5's ``TokenizersBackend``, which reads the old name."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        write_json_atomic(path, config)


def output_config(base_dir: Path, eos_id: int, pad_id: int, dtype: torch.dtype):
    """(LlamaConfig, GenerationConfig) of the export: the base's, with the adapter's ids."""
    from transformers import GenerationConfig, LlamaConfig

    config = LlamaConfig.from_pretrained(str(base_dir))
    config.architectures = ["LlamaForCausalLM"]
    config.eos_token_id, config.pad_token_id = eos_id, pad_id
    config.dtype = dtype
    if (base_dir / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(base_dir))
    else:
        generation = GenerationConfig.from_model_config(config)
    generation.eos_token_id, generation.pad_token_id = eos_id, pad_id
    return config, generation


def export_ar(
    pair: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    dtype: str = "bf16",
    force: bool = False,
    settings: Settings | None = None,
    steps: Steps = QUIET,
) -> ExportResult:
    """Merge the AR half ``pair`` (a shipped name such as "smollm2-135m/ar", or a directory)
    into its base and write a LlamaForCausalLM directory at ``out``."""
    import transformers
    from safetensors.torch import load_file, save_file

    started = time.perf_counter()
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    pair_dir, cfg = read_pair(pair)
    base_dir = locate_base(cfg, base, settings)
    out_dir = Path(out).expanduser().resolve()
    check_out_dir(out_dir, [base_dir, pair_dir], force)
    rank, alpha = int(cfg["lora_rank"]), float(cfg["lora_alpha"])
    eos_id, pad_id = int(cfg["eos_token_id"]), int(cfg.get("pad_token_id", 0))

    with steps.step("reading", f"{pair_dir / ADAPTER_FILE} and the base {base_dir}"):
        adapter_file = pair_dir / ADAPTER_FILE
        adapter_sha = sha256_file(adapter_file)
        adapter = load_file(str(adapter_file))
        hf, state = base_state_dict(base_dir)
        check_base_matches(cfg, hf, base_dir)
        base_shas = {p.name: sha256_file(p) for p in sorted(base_dir.glob("*.safetensors"))}
    with steps.step("merging", f"LoRA rank {rank}, scale alpha/rank = {alpha / rank:g}"):
        pair_cfg = LlamaPairConfig.from_hf_llama(hf, "ar", tied_head="lm_head.weight" not in state)
        merged = merge_into_hf_state(state, adapter, hf_weight_names(pair_cfg), alpha, rank)
        config, generation = output_config(base_dir, eos_id, pad_id, DTYPES[dtype])
        tie_or_keep_head(state, bool(config.tie_word_embeddings))
        check_fits_llama(config, state)
        state = {k: v.to(DTYPES[dtype]).contiguous() for k, v in state.items()}
        steps.note(f"{len(merged)} modules merged")

    partial = partial_path(out_dir)
    try:
        with steps.step("saving", f"{dtype} safetensors, config, tokenizer"):
            partial.mkdir()
            save_file(state, str(partial / "model.safetensors"), metadata={"format": "pt"})
            config.save_pretrained(partial)
            generation.save_pretrained(partial)
            tokenizer = save_tokenizer(base_dir, partial, eos_id, pad_id)
            n_parameters = sum(v.numel() for v in state.values())
            manifest = {
                "format": EXPORT_FORMAT,
                "kind": "ar",
                "adapter": {
                    "pair": str(pair),
                    "dir": str(pair_dir),
                    "file": ADAPTER_FILE,
                    "sha256": adapter_sha,
                    "bytes": adapter_file.stat().st_size,
                    "lora_rank": rank,
                    "lora_alpha": alpha,
                    "modules_merged": len(merged),
                },
                "base": {
                    "name": cfg["base"],
                    "dir": str(base_dir),
                    "weights_sha256": base_shas,
                    "source": (read_manifest(base_dir) or {}).get("source"),
                },
                **architecture_facts(config, n_parameters),
                "dtype": str(DTYPES[dtype]).removeprefix("torch."),
                "eos_token_id": eos_id,
                "pad_token_id": pad_id,
                "tokenizer": tokenizer,
                "files": {p.name: p.stat().st_size for p in sorted(partial.iterdir())},
                "transformers_version": transformers.__version__,
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 1),
            }
            write_json_atomic(partial / EXPORT_MANIFEST, manifest)
            for path in partial.iterdir():
                path.chmod(0o644)
        publish(partial, out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return ExportResult(out_dir, manifest, time.perf_counter() - started)
