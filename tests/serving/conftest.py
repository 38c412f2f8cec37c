"""Tiny random checkpoints (saved like the shipped ones) so serving tests need no trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dllmflow.models.loader import Backend, load_backend
from dllmflow.models.modeling_ar import ARConfig, ARForCausalLM
from dllmflow.models.modeling_diffusion import BlockDiffusionLM, DiffusionConfig
from dllmflow.models.tokenizer import load_tokenizer
from dllmflow.training.tiny_pair import DEFAULT_TOKENIZER_DIR

TINY = dict(n_layer=2, n_head=2, n_embd=32, mlp_ratio=2, max_position=1024)


def save_tiny(root: Path, backend: str, **sizes: int) -> Path:
    """A random model of ``backend`` with sharpened embeddings (no near-ties in greedy argmax)."""
    tok = load_tokenizer(DEFAULT_TOKENIZER_DIR)
    kwargs = dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        mask_token_id=tok.mask_token_id,
        eos_token_id=tok.eos_token_id,
        **{**TINY, **sizes},
    )
    torch.manual_seed(1 if backend == "ar" else 2)
    if backend == "ar":
        model = ARForCausalLM(ARConfig(**kwargs))
    else:
        model = BlockDiffusionLM(DiffusionConfig(block_size=8, **kwargs))
    with torch.no_grad():
        model.embed.weight.mul_(8.0)
    out = root / backend
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {b: save_tiny(root, b) for b in ("ar", "diffusion")}


@pytest.fixture(scope="session")
def tiny_backends(tiny_checkpoints: dict[str, Path]) -> dict[str, Backend]:
    return {b: load_backend(p) for b, p in tiny_checkpoints.items()}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # The development machine's 2 cores are shared; more threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
