"""Backend choice and argument errors of the public kernel entry points."""

from __future__ import annotations

import pytest
import torch

import dllmflow.kernels as K
from dllmflow.kernels import attention, confidence
from dllmflow.kernels.dispatch import choose_backend

CPU = torch.zeros(2)
META = torch.zeros(2, device="meta")


@pytest.mark.parametrize(
    "mode,tensor,expected",
    [
        (None, CPU, "torch"),
        ("auto", CPU, "torch"),
        ("torch", CPU, "torch"),
        ("TORCH", CPU, "torch"),
    ],
)
def test_choose_backend_on_cpu(monkeypatch, mode, tensor, expected):
    if mode is not None:
        monkeypatch.setenv("DLLMFLOW_KERNELS", mode)
    assert choose_backend(tensor) == expected


def test_auto_picks_triton_only_when_every_tensor_is_on_cuda(monkeypatch):
    class FakeCuda:
        is_cuda = True
        device = torch.device("cuda")

    assert choose_backend(FakeCuda(), FakeCuda()) == "triton"
    assert choose_backend(FakeCuda(), CPU) == "torch"
    monkeypatch.setenv("DLLMFLOW_KERNELS", "torch")
    assert choose_backend(FakeCuda()) == "torch"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("DLLMFLOW_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_backend(CPU) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        choose_backend(CPU)


def test_unknown_mode_is_named(monkeypatch):
    monkeypatch.setenv("DLLMFLOW_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"DLLMFLOW_KERNELS='cuda' is not one of auto, triton"):
        choose_backend(CPU)


def test_public_functions_route_to_the_chosen_backend(monkeypatch):
    calls = []

    def spy(name):
        def fn(*args, **kwargs):
            calls.append(name)
            return "ran"

        return fn

    for mod, name in [
        (confidence, "confidence_commit_reference"),
        (confidence, "confidence_commit_triton"),
        (attention, "block_causal_attention_reference"),
        (attention, "block_causal_attention_triton"),
        (attention, "block_decode_attention_reference"),
        (attention, "block_decode_attention_triton"),
    ]:
        monkeypatch.setattr(mod, name, spy(name))
    logits, tokens, masked = torch.zeros(1, 2, 5), torch.zeros(1, 2, dtype=torch.long), None
    masked = torch.ones(1, 2, dtype=torch.bool)
    q = torch.zeros(1, 1, 4, 8)
    kv_lens = torch.tensor([4])
    K.confidence_commit(logits, tokens, masked, 0.9)
    K.block_causal_attention(q, q, q, 2)
    K.block_decode_attention(q, q, q, kv_lens)
    monkeypatch.setenv("DLLMFLOW_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    K.confidence_commit(logits, tokens, masked, torch.tensor([0.5]))
    K.block_causal_attention(q, q, q, 2)
    K.block_decode_attention(q, q, q, kv_lens)
    assert calls == [
        "confidence_commit_reference",
        "block_causal_attention_reference",
        "block_decode_attention_reference",
        "confidence_commit_triton",
        "block_causal_attention_triton",
        "block_decode_attention_triton",
    ]


def good_commit_args():
    return {
        "logits": torch.zeros(2, 3, 10),
        "tokens": torch.zeros(2, 3, dtype=torch.long),
        "masked": torch.ones(2, 3, dtype=torch.bool),
        "tau": 0.9,
    }


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("logits", torch.zeros(2, 3, 10, dtype=torch.int64), "logits must have dtype float32"),
        ("logits", torch.zeros(6, 10), "logits must have 3 dimensions"),
        ("logits", [[0.0]], "logits must be a torch.Tensor"),
        ("logits", torch.zeros(2, 3, 0), "empty vocabulary"),
        ("tokens", torch.zeros(2, 3, dtype=torch.int32), "tokens must have dtype int64"),
        ("tokens", torch.zeros(2, 4, dtype=torch.long), r"tokens must have shape \(2, 3\)"),
        ("masked", torch.ones(2, 3), "masked must have dtype bool"),
        ("masked", torch.ones(3, 2, dtype=torch.bool), r"masked must have shape \(2, 3\)"),
        ("masked", torch.ones(2, 3, dtype=torch.bool, device="meta"), "masked is on meta"),
        ("tau", torch.tensor([0.5, 0.5, 0.5]), r"tau must have shape \(2,\)"),
        ("tau", torch.tensor([1, 1]), "tau must have dtype"),
        ("tau", "0.9", "tau must be a float"),
        ("tau", float("nan"), "tau must be a float"),
    ],
)
def test_confidence_commit_errors_name_the_argument(name, value, message):
    args = good_commit_args()
    args[name] = value
    with pytest.raises(ValueError, match=message):
        K.confidence_commit(**args)


def qkv(t=8, s=None, d=16, dtype=torch.float32):
    q = torch.zeros(2, 2, t, d, dtype=dtype)
    kv = torch.zeros(2, 2, s or t, d, dtype=dtype)
    return q, kv, kv.clone()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"q": torch.zeros(2, 8, 16)}, "q must have 4 dimensions"),
        ({"q": torch.zeros(2, 2, 8, 16, dtype=torch.int32)}, "q must have dtype"),
        ({"k": torch.zeros(2, 2, 8, 16, dtype=torch.float16)}, "q, k and v must share a dtype"),
        ({"k": torch.zeros(3, 2, 8, 16)}, r"k must have shape \[B=2, Hkv, S, D=16\]"),
        ({"k": torch.zeros(2, 2, 8, 32)}, r"k must have shape \[B=2, Hkv, S, D=16\]"),
        ({"k": torch.zeros(2, 3, 8, 16)}, r"k has 3 heads, which must divide q's 2 heads"),
        ({"v": torch.zeros(2, 2, 9, 16)}, r"v must have shape \(2, 2, 8, 16\)"),
        ({"k": torch.zeros(2, 2, 8, 16, device="meta")}, "k is on meta"),
        ({"block_size": 0}, "block_size must be a positive int"),
        ({"block_size": 2.5}, "block_size must be a positive int"),
        ({"scale": -1.0}, "scale must be a positive number"),
    ],
)
def test_block_causal_errors_name_the_argument(kwargs, message):
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v, "block_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        K.block_causal_attention(**args)


@pytest.mark.parametrize("heads,kv_heads", [(9, 2), (28, 8), (4, 8), (2, 0)])
def test_grouped_query_heads_must_divide(heads, kv_heads):
    """K/V heads must divide the query heads; the error names both shapes."""
    q = torch.zeros(1, heads, 8, 16)
    k = torch.zeros(1, kv_heads, 8, 16)
    for t, call in [
        (8, lambda: K.block_causal_attention(q, k, k.clone(), 4)),
        (2, lambda: K.block_decode_attention(q[:, :, :2], k, k.clone(), torch.tensor([8]))),
    ]:
        shapes = rf"q has shape \(1, {heads}, {t}, 16\), k \(1, {kv_heads}, 8, 16\)"
        with pytest.raises(ValueError, match=rf"k has {kv_heads} heads, .*{shapes}"):
            call()


def test_grouped_query_v_must_match_k():
    q, k = torch.zeros(1, 6, 8, 16), torch.zeros(1, 2, 8, 16)
    with pytest.raises(ValueError, match=r"v must have shape \(1, 2, 8, 16\) \(same as k\)"):
        K.block_causal_attention(q, k, torch.zeros(1, 6, 8, 16), 4)


def test_block_causal_needs_matching_lengths_and_head_dim():
    q, k, v = qkv(t=8, s=9)
    with pytest.raises(ValueError, match="k must have as many positions as q"):
        K.block_causal_attention(q, k, v, 4)
    q, k, v = qkv(d=300)
    with pytest.raises(ValueError, match=r"head dim D must be in 1\.\.256"):
        K.block_causal_attention(q, k, v, 4)


@pytest.mark.parametrize(
    "kv_lens,message",
    [
        (torch.tensor([4.0, 4.0]), "kv_lens must have dtype int32, int64"),
        (torch.tensor([4, 4, 4]), r"kv_lens must have shape \(2,\)"),
        (torch.tensor([4, 4], device="meta"), "kv_lens is on meta"),
        ([4, 4], "kv_lens must be a torch.Tensor"),
    ],
)
def test_decode_errors_name_the_argument(kv_lens, message):
    q, k, v = qkv(t=4, s=16)
    with pytest.raises(ValueError, match=message):
        K.block_decode_attention(q, k, v, kv_lens)


def test_decode_block_must_fit_the_cache():
    q, k, v = qkv(t=32, s=16)
    with pytest.raises(ValueError, match=r"active block .* must fit in the cache"):
        K.block_decode_attention(q, k, v, torch.tensor([16, 16]))
