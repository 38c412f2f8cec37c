"""Small shared pieces for the model tests: the shipped tokenizer, tiny random models."""

from __future__ import annotations

import pytest
import torch

from dllmflow.models.modeling_ar import ARConfig, ARForCausalLM
from dllmflow.models.modeling_diffusion import BlockDiffusionLM, DiffusionConfig
from dllmflow.models.tokenizer import load_tokenizer
from dllmflow.training.tiny_pair import DEFAULT_TOKENIZER_DIR

TINY = dict(n_layer=2, n_head=2, n_embd=32, mlp_ratio=2, max_position=512)


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(DEFAULT_TOKENIZER_DIR)


def tiny_config_kwargs(tok) -> dict:
    return dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        mask_token_id=tok.mask_token_id,
        eos_token_id=tok.eos_token_id,
        **TINY,
    )


def sharpen(model: torch.nn.Module, scale: float = 8.0) -> torch.nn.Module:
    """Scale the embeddings up so a random model has peaked, well-separated distributions
    (near-ties would make greedy comparisons depend on float rounding)."""
    with torch.no_grad():
        model.embed.weight.mul_(scale)
    return model.eval()


@pytest.fixture()
def tiny_ar(tokenizer):
    torch.manual_seed(1)
    return sharpen(ARForCausalLM(ARConfig(**tiny_config_kwargs(tokenizer))))


@pytest.fixture()
def tiny_diffusion(tokenizer):
    torch.manual_seed(2)
    model = BlockDiffusionLM(DiffusionConfig(block_size=8, **tiny_config_kwargs(tokenizer)))
    return sharpen(model)


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models decode faster on one thread (and do not fight other test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
