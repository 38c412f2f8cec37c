"""Block-causal and decode attention: Triton (interpreter on CPU, compiled on CUDA) against the
SDPA references, computed in fp32 on the same inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllmflow.kernels import block_causal_attention, block_decode_attention
from dllmflow.kernels.attention import (
    block_causal_attention_reference,
    block_causal_attention_triton,
    block_causal_mask,
    block_decode_attention_reference,
    block_decode_attention_triton,
    decode_splits,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}  # max abs error
HYPOTHESIS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def randn(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype).to(device)


def assert_close(out, ref, dtype):
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= TOL[dtype], f"max abs error {err} > {TOL[dtype]} for {dtype}"


def causal_ref(q, k, v, block_size, scale):
    return block_causal_attention_reference(q.float(), k.float(), v.float(), block_size, scale)


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    t=st.integers(1, 48),
    d=st.sampled_from([8, 16, 24, 64]),
    block_size=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
)
def test_block_causal_matches_reference(device, seed, b, h, t, d, block_size, dtype):
    q, k, v = (randn((b, h, t, d), dtype, device, seed + i) for i in range(3))
    out = block_causal_attention_triton(q, k, v, block_size, d**-0.5)
    assert_close(out, causal_ref(q, k, v, block_size, d**-0.5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,block_size", [(50, 7), (33, 32), (40, 1), (20, 64)])
def test_block_causal_edge_shapes(device, dtype, t, block_size):
    """block_size not dividing T, block_size 1 (causal) and block_size > T (bidirectional)."""
    q, k, v = (randn((1, 2, t, 32), dtype, device, i) for i in range(3))
    out = block_causal_attention_triton(q, k, v, block_size, 0.3)
    assert_close(out, causal_ref(q, k, v, block_size, 0.3), dtype)


def test_block_causal_mask_rule():
    mask = block_causal_mask(7, 3, torch.device("cpu"))
    assert mask[0, 2] and mask[2, 0] and not mask[2, 3] and mask[3, 5] and mask[6, 0]
    assert not mask[5, 6] and mask[6, 6]


def test_block_causal_strided_inputs(device):
    qkv = randn((2, 40, 3, 2, 16), torch.float16, device, 3)  # [B, T, 3, H, D] like a fused proj
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # non-contiguous [B, H, T, D]
    out = block_causal_attention_triton(q, k, v, 8, 0.25)
    assert_close(out, causal_ref(q, k, v, 8, 0.25), torch.float16)


def test_block_causal_gradients_match_reference(device):
    q, k, v = (randn((1, 2, 20, 16), torch.float32, device, i).requires_grad_() for i in range(3))
    out = block_causal_attention_triton(q, k, v, 6, 0.25)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = block_causal_attention_reference(q2, k2, v2, 6, 0.25)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q2, k2, v2))
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g - r).abs().max().item() < 1e-4


def decode_case(b, h, lb, s, d, lens, dtype, device, seed):
    q = randn((b, h, lb, d), dtype, device, seed)
    k = randn((b, h, s, d), dtype, device, seed + 1)
    v = randn((b, h, s, d), dtype, device, seed + 2)
    kv_lens = torch.tensor(lens, device=device)
    # Padding past kv_lens holds NaN: any read of it would poison the output.
    pad = torch.arange(s, device=device)[None, None, :, None] >= kv_lens[:, None, None, None]
    ref = block_decode_attention_reference(q.float(), k.float(), v.float(), kv_lens, d**-0.5)
    return q, k.masked_fill(pad, float("nan")), v.masked_fill(pad, float("nan")), kv_lens, ref


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 3),
    h=st.integers(1, 2),
    lb=st.integers(1, 20),
    extra=st.integers(0, 70),
    d=st.sampled_from([8, 16, 40, 64]),
    dtype=st.sampled_from(DTYPES),
    n_split=st.sampled_from([None, 1, 2, 7]),
    data=st.data(),
)
def test_decode_matches_reference(device, seed, b, h, lb, extra, d, dtype, n_split, data):
    s = lb + extra
    lens = [data.draw(st.integers(lb, s)) for _ in range(b)]
    q, k, v, kv_lens, ref = decode_case(b, h, lb, s, d, lens, dtype, device, seed)
    out = block_decode_attention_triton(q, k, v, kv_lens, d**-0.5, n_split=n_split)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_split", [1, 4])
@pytest.mark.parametrize("block_n", [None, 128])  # 128: the GPU default for few unsplit programs
def test_decode_short_kv_lens(device, dtype, n_split, block_n):
    """kv_lens far below S, equal to the block, or equal to S; splits past kv_len stay empty."""
    q, k, v, kv_lens, ref = decode_case(3, 2, 16, 100, 32, [16, 37, 100], dtype, device, 5)
    out = block_decode_attention_triton(
        q, k, v, kv_lens, 32**-0.5, n_split=n_split, block_n=block_n
    )
    assert_close(out, ref, dtype)


def test_public_entry_points_use_triton_when_asked(device, monkeypatch):
    monkeypatch.setenv("DLLMFLOW_KERNELS", "triton")
    q, k, v = (randn((1, 2, 24, 16), torch.float16, device, i) for i in range(3))
    assert_close(block_causal_attention(q, k, v, 8), causal_ref(q, k, v, 8, 0.25), torch.float16)
    qd, k, v, kv_lens, ref = decode_case(2, 2, 8, 40, 16, [8, 30], torch.float16, device, 9)
    assert_close(block_decode_attention(qd, k, v, kv_lens), ref, torch.float16)


# ------------------------------------------------------------------------ grouped-query attention
# K/V with fewer heads than q: query head h reads K/V head h // (H // Hkv). The references repeat
# each K/V head for its group; the kernels give one program rows of a whole group.

LAYOUTS = [(1, 1), (2, 2), (2, 1), (4, 2), (6, 2), (9, 3)]  # (query heads, K/V heads)
MODEL_LAYOUTS = {"smollm2": (9, 3, 64), "qwen2.5-7b": (28, 4, 128)}  # (H, Hkv, D)


def gqa_qkv(b, h, h_kv, t, s, d, dtype, device, seed):
    return (
        randn((b, h, t, d), dtype, device, seed),
        randn((b, h_kv, s, d), dtype, device, seed + 1),
        randn((b, h_kv, s, d), dtype, device, seed + 2),
    )


def gqa_decode_case(b, h, h_kv, lb, s, d, lens, dtype, device, seed, poison=True):
    """Like decode_case; poison=False keeps the padding finite (the SDPA reference reads it)."""
    q, k, v = gqa_qkv(b, h, h_kv, lb, s, d, dtype, device, seed)
    kv_lens = torch.tensor(lens, device=device)
    ref = block_decode_attention_reference(q.float(), k.float(), v.float(), kv_lens, d**-0.5)
    if poison:
        pad = torch.arange(s, device=device)[None, None, :, None] >= kv_lens[:, None, None, None]
        k, v = k.masked_fill(pad, float("nan")), v.masked_fill(pad, float("nan"))
    return q, k, v, kv_lens, ref


def test_gqa_references_repeat_each_kv_head_for_its_group():
    q, k, v = gqa_qkv(2, 6, 2, 12, 12, 16, torch.float32, "cpu", 4)
    k_rep, v_rep = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    out = block_causal_attention_reference(q, k, v, 4, 0.25)
    for head in range(6):  # query head h against K/V head h // 3, one head at a time
        kh, vh = k[:, head // 3 : head // 3 + 1], v[:, head // 3 : head // 3 + 1]
        one = block_causal_attention_reference(q[:, head : head + 1], kh, vh, 4, 0.25)
        assert torch.allclose(out[:, head : head + 1], one, atol=1e-6)
    assert torch.equal(out, block_causal_attention_reference(q, k_rep, v_rep, 4, 0.25))
    kv_lens = torch.tensor([5, 12])
    dec = block_decode_attention_reference(q[:, :, :3], k, v, kv_lens, 0.25)
    assert torch.equal(
        dec, block_decode_attention_reference(q[:, :, :3], k_rep, v_rep, kv_lens, 0.25)
    )


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 2),
    layout=st.sampled_from(LAYOUTS),
    t=st.integers(1, 40),
    d=st.sampled_from([16, 40, 64, 128]),
    block_size=st.one_of(st.sampled_from([1, 16]), st.integers(1, 40)),
    dtype=st.sampled_from(DTYPES),
)
def test_gqa_block_causal_matches_reference(device, seed, b, layout, t, d, block_size, dtype):
    h, h_kv = layout
    q, k, v = gqa_qkv(b, h, h_kv, t, t, d, dtype, device, seed)
    out = block_causal_attention_triton(q, k, v, block_size, d**-0.5)
    assert_close(out, causal_ref(q, k, v, block_size, d**-0.5), dtype)


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 3),
    layout=st.sampled_from(LAYOUTS),
    lb=st.sampled_from([1, 16]) | st.integers(1, 20),
    extra=st.integers(0, 70),
    d=st.sampled_from([16, 40, 64, 128]),
    dtype=st.sampled_from(DTYPES),
    n_split=st.sampled_from([None, 1, 2, 7]),
    data=st.data(),
)
def test_gqa_decode_matches_reference(device, seed, b, layout, lb, extra, d, dtype, n_split, data):
    h, h_kv = layout
    s = lb + extra
    lens = [data.draw(st.integers(lb, s)) for _ in range(b)]  # ragged cache lengths
    q, k, v, kv_lens, ref = gqa_decode_case(b, h, h_kv, lb, s, d, lens, dtype, device, seed)
    out = block_decode_attention_triton(q, k, v, kv_lens, d**-0.5, n_split=n_split)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("model", list(MODEL_LAYOUTS))
def test_gqa_model_layouts_block_causal(device, model, block_size, dtype):
    """SmolLM2 (9 query / 3 K/V heads, D 64) and Qwen2.5-7B (28 / 4, D 128)."""
    h, h_kv, d = MODEL_LAYOUTS[model]
    q, k, v = gqa_qkv(2, h, h_kv, 37, 37, d, dtype, device, 11)
    out = block_causal_attention_triton(q, k, v, block_size, d**-0.5)
    assert_close(out, causal_ref(q, k, v, block_size, d**-0.5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("n_split", [None, 1, 3])
@pytest.mark.parametrize("model", list(MODEL_LAYOUTS))
def test_gqa_model_layouts_decode(device, model, n_split, block_size, dtype):
    """The active block (1 or 16 queries) of each K/V group over ragged caches."""
    h, h_kv, d = MODEL_LAYOUTS[model]
    lens = [block_size, block_size + 29, 90]
    q, k, v, kv_lens, ref = gqa_decode_case(3, h, h_kv, block_size, 90, d, lens, dtype, device, 13)
    out = block_decode_attention_triton(q, k, v, kv_lens, d**-0.5, n_split=n_split)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("block_m", [16, 64])
def test_gqa_decode_tiles_split_a_group(device, block_m):
    """A group's rows (7 heads x 16 queries = 112) spread over several query tiles."""
    q, k, v, kv_lens, ref = gqa_decode_case(
        2, 14, 2, 16, 80, 32, [40, 80], torch.float16, device, 17
    )
    out = block_decode_attention_triton(q, k, v, kv_lens, 32**-0.5, n_split=2, block_m=block_m)
    assert_close(out, ref, torch.float16)


def test_gqa_strided_inputs(device):
    """q, k, v as views of one fused projection [B, T, H + 2 Hkv, D], like a Llama-style layer."""
    h, h_kv = 6, 2
    qkv = randn((2, 30, h + 2 * h_kv, 16), torch.float16, device, 21)
    q = qkv[:, :, :h].transpose(1, 2)
    k = qkv[:, :, h : h + h_kv].transpose(1, 2)
    v = qkv[:, :, h + h_kv :].transpose(1, 2)
    out = block_causal_attention_triton(q, k, v, 8, 0.25)
    assert_close(out, causal_ref(q, k, v, 8, 0.25), torch.float16)
    kv_lens = torch.tensor([12, 30], device=device)
    dec = block_decode_attention_triton(q[:, :, 4:12], k, v, kv_lens, 0.25, n_split=2)
    ref = block_decode_attention_reference(
        q[:, :, 4:12].float(), k.float(), v.float(), kv_lens, 0.25
    )
    assert_close(dec, ref, torch.float16)


def test_gqa_gradients_match_reference(device):
    q = randn((1, 6, 20, 16), torch.float32, device, 0).requires_grad_()
    k, v = (randn((1, 2, 20, 16), torch.float32, device, i).requires_grad_() for i in (1, 2))
    out = block_causal_attention_triton(q, k, v, 6, 0.25)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = block_causal_attention_reference(q2, k2, v2, 6, 0.25)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q2, k2, v2))
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.shape == r.shape
        assert (g - r).abs().max().item() < 1e-4
    assert grads[1].shape == (1, 2, 20, 16)  # K/V gradients summed over each group


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gqa_public_entry_points(device, monkeypatch, backend):
    monkeypatch.setenv("DLLMFLOW_KERNELS", backend)
    q, k, v = gqa_qkv(1, 9, 3, 24, 24, 64, torch.float16, device, 23)
    ref = causal_ref(q, k, v, 16, 64**-0.5)
    assert_close(block_causal_attention(q, k, v, 16), ref, torch.float16)
    poison = backend == "triton"
    args = (2, 9, 3, 1, 40, 64, [1, 30], torch.float16, device, 29, poison)
    qd, k, v, kv_lens, ref = gqa_decode_case(*args)
    assert_close(block_decode_attention(qd, k, v, kv_lens), ref, torch.float16)


def test_decode_splits_fill_the_sms_in_even_waves() -> None:
    sms = 132
    assert decode_splits(32, sms) == 4  # batch 1 x 32 heads: about one program per SM
    assert decode_splits(24, sms) == 5
    assert decode_splits(128, sms) == 1  # one wave already
    assert decode_splits(192, sms) == 2  # 1.45 waves: split, so the second is not part-empty
    assert decode_splits(264, sms) == 1 and decode_splits(512, sms) == 1
