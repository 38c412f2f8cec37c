"""Byte-level BPE tokenizer shared by the AR and diffusion models, loaded through transformers.

Special tokens: <|pad|>, <|mask|> (the diffusion model's noise token), <|eos|>; the turn tags
<think>, </think>, <action>, </action> are single tokens too (kept when decoding), so samplers
can stop on ACTION_CLOSE by id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from dllmflow.agent.actions import ACTION_CLOSE, ACTION_OPEN, THINK_CLOSE, THINK_OPEN

PAD, MASK, EOS = "<|pad|>", "<|mask|>", "<|eos|>"
TAG_TOKENS = [THINK_OPEN, THINK_CLOSE, ACTION_OPEN, ACTION_CLOSE]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (corpus documents and rendered trajectories)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, MASK, EOS, *TAG_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        mask_token=MASK,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,
    )
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``save_pretrained`` (any checkpoint directory)."""
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def encode(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def decode(tok: PreTrainedTokenizerFast, ids: Iterable[int]) -> str:
    """Text of ``ids`` with the turn tags kept and pad/mask/eos dropped."""
    drop = {tok.pad_token_id, tok.mask_token_id, tok.eos_token_id}
    return tok.decode([i for i in ids if i not in drop], skip_special_tokens=False)
