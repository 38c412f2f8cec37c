"""Fused confidence/commit: Triton (interpreter on CPU, compiled on CUDA) against the reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllmflow.kernels import confidence_commit
from dllmflow.kernels.confidence import (
    confidence_commit_reference,
    confidence_commit_triton,
)

# The interpreter evaluates both sides of tl.where in numpy, which warns on -inf lanes.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HYPOTHESIS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def run_both(logits, tokens, masked, tau, **tuning):
    """Run reference and Triton on copies; assert identical commits, tokens and masks."""
    b = logits.shape[0]
    tau_rows = tau if isinstance(tau, torch.Tensor) else torch.full((b,), float(tau))
    tau_rows = tau_rows.to(device=logits.device, dtype=torch.float32)
    t_ref, m_ref = tokens.clone(), masked.clone()
    t_tri, m_tri = tokens.clone(), masked.clone()
    c_ref = confidence_commit_reference(logits, t_ref, m_ref, tau_rows)
    c_tri = confidence_commit_triton(logits, t_tri, m_tri, tau_rows, **tuning)
    assert torch.equal(c_tri, c_ref), (c_tri, c_ref)
    assert torch.equal(t_tri, t_ref)
    assert torch.equal(m_tri, m_ref)
    # Semantics that hold whatever the backend.
    assert torch.equal(m_ref, masked & ~c_ref)
    assert not (c_ref & ~masked).any()
    assert torch.equal(t_ref[~c_ref], tokens[~c_ref])
    has_masked = masked.any(dim=1)
    assert torch.equal(c_ref.any(dim=1), has_masked)  # progress on every row with masks
    return c_ref, t_ref


def random_case(seed, b, n, v, dtype, device, p_masked=0.7, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, n, v, generator=g) * scale).to(dtype).to(device)
    tokens = torch.randint(0, v, (b, n), generator=g).to(device)
    masked = (torch.rand(b, n, generator=g) < p_masked).to(device)
    return logits, tokens, masked


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 3),
    n=st.integers(1, 9),
    v=st.integers(1, 700),
    dtype=st.sampled_from(DTYPES),
    tau=st.floats(0.0, 1.0),
    block_v=st.sampled_from([16, 64, 128]),
    n_split=st.sampled_from([None, 1, 2, 5]),
    p_masked=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_matches_reference(device, seed, b, n, v, dtype, tau, block_v, n_split, p_masked):
    logits, tokens, masked = random_case(seed, b, n, v, dtype, device, p_masked)
    run_both(logits, tokens, masked, tau, block_v=block_v, n_split=n_split)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_masked_and_none_masked(device, dtype):
    logits, tokens, _ = random_case(1, 3, 6, 333, dtype, device)
    masked = torch.ones(3, 6, dtype=torch.bool, device=device)
    committed, _ = run_both(logits, tokens, masked, 0.5, block_v=64)
    assert committed.any(dim=1).all()
    masked = torch.zeros(3, 6, dtype=torch.bool, device=device)
    committed, new_tokens = run_both(logits, tokens, masked, 0.0, block_v=64)
    assert not committed.any()
    assert torch.equal(new_tokens, tokens)


def test_tau_zero_commits_every_masked_position(device):
    logits, tokens, masked = random_case(2, 2, 7, 257, torch.float32, device)
    committed, new_tokens = run_both(logits, tokens, masked, 0.0, block_v=64, n_split=3)
    assert torch.equal(committed, masked)
    assert torch.equal(new_tokens[masked], logits.argmax(-1)[masked])


def test_tau_one_commits_only_certain_positions(device):
    logits, tokens, masked = random_case(3, 2, 8, 300, torch.float32, device, p_masked=1.0)
    logits[0, 2, 17] = 1e4  # p == 1.0 exactly in fp32
    logits[0, 5, 299] = 1e4
    committed, new_tokens = run_both(logits, tokens, masked, 1.0, block_v=64, n_split=2)
    assert committed[0].nonzero().flatten().tolist() == [2, 5]
    assert new_tokens[0, 2] == 17 and new_tokens[0, 5] == 299
    assert committed[1].sum() == 1  # nothing certain: the single most confident one


def test_fallback_picks_most_confident_then_lowest_position(device):
    logits, tokens, masked = random_case(4, 1, 6, 200, torch.float32, device, p_masked=1.0)
    logits[0, 4] = 0.0
    logits[0, 4, 9] = 20.0  # far more confident than any random row
    logits[0, 1] = logits[0, 4]  # same confidence at positions 1 and 4
    masked[0, 1] = False  # ...but 1 is already committed
    committed, _ = run_both(logits, tokens, masked, 1.0, block_v=64)
    assert committed[0].nonzero().flatten().tolist() == [4]
    masked[0, 1] = True
    committed, _ = run_both(logits, tokens, masked, 1.0, block_v=64)
    assert committed[0].nonzero().flatten().tolist() == [1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_ties_take_lowest_id_across_tiles_and_splits(device, dtype):
    v = 1000  # not a multiple of the tile
    logits = torch.zeros(1, 3, v)
    logits[0, 0, [700, 5, 999]] = 4.0  # lowest id 5, maxima in different tiles
    logits[0, 1, [999, 998]] = 4.0
    logits[0, 2, [130, 129, 128]] = 4.0  # 128 starts a tile when block_v divides it
    logits = logits.to(dtype).to(device)
    tokens = torch.full((1, 3), -1, dtype=torch.int64, device=device)
    masked = torch.ones(1, 3, dtype=torch.bool, device=device)
    for n_split in (1, 3, 8):
        _, new_tokens = run_both(logits, tokens, masked, 0.0, block_v=128, n_split=n_split)
        assert new_tokens[0].tolist() == [5, 998, 128]


@pytest.mark.parametrize("block_l", [1, 2, 4])
def test_merge_over_several_tiles_of_positions(device, block_l):
    """Rows longer than one merge tile: the gate's statistics carry across tiles."""
    logits, tokens, masked = random_case(9, 3, 9, 300, torch.float32, device, p_masked=0.6)
    masked[2] = False  # a row with nothing to commit
    for tau in (0.0, 0.5, 1.0):  # 1.0: only the forced position commits, found across tiles
        run_both(logits, tokens, masked, tau, block_v=64, n_split=3, block_l=block_l)


def test_per_row_tau(device):
    logits, tokens, masked = random_case(5, 4, 8, 150, torch.float32, device, p_masked=1.0)
    tau = torch.tensor([0.0, 1.0, 0.3, 0.05], device=device)
    committed, _ = run_both(logits, tokens, masked, tau, block_v=64)
    assert committed[0].all() and committed[1].sum() == 1


def test_single_token_vocab_and_strided_inputs(device):
    logits, tokens, masked = random_case(6, 2, 5, 1, torch.float32, device)
    run_both(logits, tokens, masked, 0.9)  # p == 1 for a one-token vocabulary
    big, tokens, masked = random_case(7, 2, 10, 90, torch.bfloat16, device)
    run_both(big[:, ::2], tokens[:, ::2], masked[:, ::2], 0.2, block_v=32)  # row strides
    run_both(big[:, :, ::3], tokens, masked, 0.2, block_v=32)  # non-unit vocab stride


def test_public_entry_point_updates_in_place(device, monkeypatch):
    monkeypatch.setenv("DLLMFLOW_KERNELS", "triton")
    logits, tokens, masked = random_case(8, 2, 4, 64, torch.float16, device)
    t_ref, m_ref = tokens.clone(), masked.clone()
    expect = confidence_commit_reference(logits, t_ref, m_ref, torch.full((2,), 0.3).to(device))
    committed = confidence_commit(logits, tokens, masked, 0.3)
    assert torch.equal(committed, expect)
    assert torch.equal(tokens, t_ref) and torch.equal(masked, m_ref)


def test_left_to_right_commits_only_the_confident_run_from_the_leftmost_mask():
    from dllmflow.kernels.confidence import left_to_right_commit

    def logits_for(conf_ids):  # one row per (confidence, token id) list, vocab 4
        out = torch.full((len(conf_ids), len(conf_ids[0]), 4), -30.0)
        for r, row in enumerate(conf_ids):
            for i, (p, tok) in enumerate(row):
                out[r, i, tok] = 0.0
                rest = torch.log(torch.tensor((1 - p) / 3 / p))
                out[r, i, [t for t in range(4) if t != tok]] = rest
        return out

    # Row 0: settled, mask 0.5, mask 0.95, mask 0.3, mask 0.99 -> the leftmost mask (forced)
    #        and the 0.95 after it; the 0.3 breaks the run before the 0.99.
    # Row 1: mask 0.95, settled, mask 0.97, mask 0.2 -> the first three positions' masks.
    logits = logits_for(
        [[(0.9, 1), (0.5, 2), (0.95, 3), (0.3, 1), (0.99, 2)],
         [(0.95, 1), (0.9, 2), (0.97, 3), (0.2, 0), (0.2, 0)]]
    )  # fmt: skip
    masked = torch.tensor([[False, True, True, True, True], [True, False, True, True, True]])
    tokens = torch.zeros(2, 5, dtype=torch.long)
    tau = torch.tensor([0.9, 0.9])
    commit = left_to_right_commit(logits, tokens, masked, tau)
    assert commit.tolist() == [
        [False, True, True, False, False],
        [True, False, True, False, False],
    ]
    assert tokens[0, 1:3].tolist() == [2, 3] and tokens[1, [0, 2]].tolist() == [1, 3]
    assert masked.tolist() == [[False, False, False, True, True], [False, False, False, True, True]]
    # The confidence rule on the same input fixes row 0's far-right 0.99 too.
    masked2 = torch.tensor([[False, True, True, True, True], [True, False, True, True, True]])
    confidence_commit(logits, torch.zeros(2, 5, dtype=torch.long), masked2, 0.9)
    assert not masked2[0, 4]


def test_a_pass_holds_back_a_commit_that_repeats_its_left_neighbours():
    from dllmflow.kernels.confidence import hold_adjacent_repeats

    mask = 9
    # Row 0: one pass committed 4 4 4 at positions 1-3 and 5 at 4: the second and third 4 wait.
    # Row 1: position 0 settled earlier as 7, the pass commits 7 at 1 and 7 7 at 3-4: the 7 at 1
    #        follows a settled token (the model saw it), so only position 4 waits.
    tokens = torch.tensor([[1, 4, 4, 4, 5], [7, 7, 2, 7, 7]])
    was_masked = torch.tensor([[False, True, True, True, True], [False, True, True, True, True]])
    masked = torch.zeros(2, 5, dtype=torch.bool)
    held = hold_adjacent_repeats(tokens, was_masked, masked, mask)
    assert held.tolist() == [
        [False, False, True, True, False],
        [False, False, False, False, True],
    ]
    assert masked.tolist() == held.tolist()
    assert tokens.tolist() == [[1, 4, mask, mask, 5], [7, 7, 2, 7, mask]]
    # The leftmost commit of a pass is never held: a pass always makes progress.
    one = torch.tensor([[3, 3, 3]])
    left = torch.zeros(1, 3, dtype=torch.bool)
    hold_adjacent_repeats(one, torch.ones(1, 3, dtype=torch.bool), left, mask)
    assert left.tolist() == [[False, True, True]] and one[0, 0] == 3


def test_generation_request_names_a_bad_commit_order():
    from dllmflow.models.sampling.base import GenerationRequest

    with pytest.raises(ValueError, match="commit_order must be one of confidence, left_to_right"):
        GenerationRequest(prompt="x", commit_order="random")
