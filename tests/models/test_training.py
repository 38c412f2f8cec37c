"""Training: loss only on the turn, context-clean corruption, span-aware layout, and a tiny
end-to-end train / checkpoint / resume on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch.optim.optimizer import register_optimizer_step_pre_hook

from dllmflow.models.loader import load_backend
from dllmflow.training import tiny_pair as training
from dllmflow.training.tiny_pair import (
    DEFAULT_TOKENIZER_DIR,
    PackedExamples,
    SpecialIds,
    ar_batch,
    diffusion_batch,
    diffusion_layout,
    generate_examples,
    train,
)

IDS = SpecialIds(pad=0, mask=1, eos=2)
EXAMPLES = [
    (list(range(10, 31)), [*range(40, 52), 2]),  # 21 context tokens, 13 turn tokens
    (list(range(60, 65)), [*range(70, 90), 2]),
]


def test_ar_batch_puts_loss_on_the_turn_only():
    inp, lab = ar_batch(EXAMPLES, IDS)
    for row, (c, u) in enumerate(EXAMPLES):
        assert inp[row, : len(c) + len(u)].tolist() == c + u
        assert (lab[row, : len(c)] == -100).all()
        assert lab[row, len(c) : len(c) + len(u)].tolist() == u
        assert (lab[row, len(c) + len(u) :] == -100).all()


def test_diffusion_layout_aligns_the_turn_to_blocks():
    seq, start = diffusion_layout(*EXAMPLES[0], 8, IDS)
    assert start % 8 == 0 and len(seq) % 8 == 0
    assert seq[start : start + 13] == EXAMPLES[0][1]
    assert set(seq[:3]) == {IDS.pad} and set(seq[start + 13 :]) == {IDS.eos}


def _check_span_aware(batch, block):
    for row, (c, u) in enumerate(EXAMPLES):
        clean, start = diffusion_layout(c, u, block, IDS)
        n = len(clean)
        inp, tgt = batch["input_ids"][row], batch["targets"][row]
        # Context-clean: the whole first stream is the clean sequence; only the copy is noisy.
        assert inp[:n].tolist() == clean
        copy = inp[n : n + n - start]
        assert ((copy == IDS.mask) | (copy == torch.tensor(clean[start:]))).all()
        assert (copy == IDS.mask).any()
        # Targets exactly at the masked copy positions, holding the clean tokens.
        masked = copy == IDS.mask
        assert (tgt[:n] == -100).all()
        assert (
            tgt[n : n + n - start][masked].tolist() == torch.tensor(clean[start:])[masked].tolist()
        )
        assert (tgt[n : n + n - start][~masked] == -100).all()
        # Noisy copies sit at their clean twins' positions.
        assert batch["position_ids"][row, n : 2 * n - start].tolist() == list(range(start, n))
        assert batch["stream"][row, n : 2 * n - start].eq(1).all()


def test_diffusion_batch_is_context_clean_and_span_aware():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        _check_span_aware(diffusion_batch(EXAMPLES, 8, IDS, gen), 8)


def test_complementary_copies_split_every_turn_token_between_them():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        batch = diffusion_batch(EXAMPLES, 8, IDS, gen, complementary=True)
        _check_span_aware(batch, 8)  # the first copy is the plain layout's
        for row, (c, u) in enumerate(EXAMPLES):
            clean, start = diffusion_layout(c, u, 8, IDS)
            n, turn = len(clean), len(clean) - start
            first = batch["input_ids"][row, n : n + turn]
            second = batch["input_ids"][row, n + turn : n + 2 * turn]
            # Each turn token is masked in exactly one copy, so each is a target once.
            assert ((first == IDS.mask) ^ (second == IDS.mask)).all()
            tgt = batch["targets"][row, n : n + 2 * turn]
            assert sorted(tgt[tgt != -100].tolist()) == sorted(clean[start:])
            assert batch["stream"][row, n + turn : n + 2 * turn].eq(2).all()
            assert batch["position_ids"][row, n + turn : n + 2 * turn].tolist() == list(
                range(start, n)
            )
    with pytest.raises(ValueError, match="two-stream"):
        diffusion_batch(EXAMPLES, 8, IDS, gen, complementary=True, ablate_span_mask=True)


def test_ablations_change_the_corruption_and_the_layout():
    gen = torch.Generator().manual_seed(0)
    dirty = [diffusion_batch(EXAMPLES, 8, IDS, gen, ablate_context_clean=True) for _ in range(20)]
    ctx_masked = sum(int((b["input_ids"][0, 3:24] == IDS.mask).sum()) for b in dirty)
    assert ctx_masked > 0  # the context gets corrupted too
    single = diffusion_batch(EXAMPLES, 8, IDS, gen, ablate_span_mask=True)
    clean, start = diffusion_layout(*EXAMPLES[0], 8, IDS)
    assert single["input_ids"].shape[1] == max(
        len(diffusion_layout(c, u, 8, IDS)[0]) for c, u in EXAMPLES
    )
    assert single["stream"].eq(0).all()  # one stream, plain block-causal
    assert single["input_ids"][0, :start].tolist() == clean[:start]
    assert (single["targets"][0, :start] == -100).all()


def test_packed_examples_round_trip(tmp_path):
    packed = PackedExamples.pack(EXAMPLES)
    packed.save(tmp_path / "d.pt", note="x")
    loaded = PackedExamples.load(tmp_path / "d.pt")
    assert len(loaded) == 2 and [loaded[i] for i in range(2)] == EXAMPLES


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from dllmflow.world.generator import train_seeds

    examples = generate_examples(train_seeds(1), DEFAULT_TOKENIZER_DIR, questions=4)
    assert examples and all(turn[-1] == 2 for _, turn in examples)
    path = tmp_path_factory.mktemp("data") / "examples.pt"
    PackedExamples.pack(examples).save(path)
    return path


TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=8, batch_size=4, progress=False)


@pytest.mark.parametrize("backend", ["ar", "diffusion"])
def test_train_checkpoints_and_resumes(tmp_path, tiny_data, backend):
    out = tmp_path / backend
    first = train(backend, out, 3, data=tiny_data, checkpoint_every=2, **TINY)
    assert first["steps"] == 3
    for name in ("config.json", "model.safetensors", "tokenizer.json", "loss_curve.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "loss_history.json").read_text())
    assert [h["step"] for h in history] == [1, 3] and all(h["loss"] > 0 for h in history)
    if backend == "diffusion":
        assert {"denoise", "ar"} <= set(history[0])
    # Loadable through the same loader as the shipped checkpoints.
    model, _tok, sampler = load_backend(out)
    assert sampler.kind == backend and model.config.n_layer == 1

    # Resume: the run continues from the saved state instead of starting over.
    saved = torch.load(str(out / "train_state.pt"), weights_only=False)
    assert saved["step"] == 3
    built, updates = [], []
    real_build = training._build_model

    def build(cfg, tok):
        built.append(real_build(cfg, tok))
        return built[-1]

    def before_update(optimizer, args, kwargs):
        weights = {n: p.detach().cpu().clone() for n, p in built[0].named_parameters()}
        updates.append(weights)

    hook = register_optimizer_step_pre_hook(before_update)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(training, "_build_model", build)
            again = train(backend, out, 5, data=tiny_data, **TINY)
    finally:
        hook.remove()
    assert again["steps"] == 5
    assert len(updates) == 2  # steps 4 and 5 only
    # The first update starts from the checkpoint's weights, not from a fresh init.
    assert updates[0].keys() <= saved["model"].keys()
    for name, weight in updates[0].items():
        assert torch.equal(weight, saved["model"][name]), name
    # The optimizer state carried over: Adam's per-parameter step counter reads 3 + 2.
    final = torch.load(str(out / "train_state.pt"), weights_only=False)
    counters = {int(s["step"]) for s in final["optimizer"]["state"].values()}
    assert counters == {5}
    # The loss history is the saved one (same values and timings), extended by step 5.
    history = json.loads((out / "loss_history.json").read_text())
    assert history[:2] == saved["history"] and [h["step"] for h in history] == [1, 3, 5]
    if backend == "diffusion":
        with pytest.raises(ValueError, match="ablate_span_mask"):
            train(backend, out, 6, data=tiny_data, ablate_span_mask=True, **TINY)


def test_ablation_flags_are_diffusion_only(tmp_path, tiny_data):
    with pytest.raises(ValueError, match="diffusion"):
        train("ar", tmp_path, 1, data=tiny_data, ablate_context_clean=True, **TINY)


def _saved_dtypes(out) -> set[torch.dtype]:
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        return {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118


def _loss_falls(summary_dir, first_n: int = 2, last_n: int = 2) -> tuple[float, float]:
    history = json.loads((summary_dir / "loss_history.json").read_text())
    early = sum(h["loss"] for h in history[:first_n]) / first_n
    late = sum(h["loss"] for h in history[-last_n:]) / last_n
    return early, late


def train_watching_dtypes(backend, out, tiny_data, **kw) -> tuple[dict, set[torch.dtype]]:
    """Train, recording the dtype of every Linear layer's output during training forwards."""
    seen: set[torch.dtype] = set()
    real_build = training._build_model

    def record(module, args, output):
        if module.training:
            seen.add(output.dtype)

    def build(cfg, tok):
        model = real_build(cfg, tok)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(record)
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "_build_model", build)
        summary = train(backend, out, 40, data=tiny_data, warmup=5, lr=1e-2, **kw, **TINY)
    return summary, seen


@pytest.mark.parametrize("backend", ["ar", "diffusion"])
def test_training_lowers_the_loss(tmp_path, tiny_data, backend):
    """The CPU twin of the CUDA test below: float32 on CPU (no autocast there)."""
    # 40 steps on the 4-question world: the tiny model must fit a good part of it.
    summary, dtypes = train_watching_dtypes(backend, tmp_path, tiny_data, device="cpu")
    assert summary["device"] == "cpu" and dtypes == {torch.float32}
    early, late = _loss_falls(tmp_path)
    assert late < 0.8 * early, (early, late)
    assert _saved_dtypes(tmp_path) == {torch.bfloat16}  # the shipped weights, whatever trained


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast training runs on CUDA")
@pytest.mark.parametrize("backend", ["ar", "diffusion"])
def test_bf16_training_on_cuda_lowers_the_loss_and_saves_bf16(tmp_path, tiny_data, backend):
    summary, dtypes = train_watching_dtypes(backend, tmp_path, tiny_data)
    assert "cuda" in summary["device"]
    assert dtypes == {torch.bfloat16}  # every matmul of the training forwards ran in bf16
    early, late = _loss_falls(tmp_path)
    assert late < 0.8 * early, (early, late)
    assert _saved_dtypes(tmp_path) == {torch.bfloat16}
    model, _tok, sampler = load_backend(tmp_path, device="cuda", dtype=torch.bfloat16)
    assert sampler.kind == backend and next(model.parameters()).is_cuda
