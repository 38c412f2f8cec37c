"""Agent-oriented fine-tuning of the matched pair on oracle trajectories from training worlds.

Data: oracle episodes on training-seed worlds (world.train_seeds), each turn one example
(context rendered by prompting.render_context, the turn text + eos). Loss only ever covers the
turn (the action segment), never the context.

  AR:        next-token cross-entropy on the turn tokens.
  diffusion: masked denoising loss on the turn + 0.5 * AR cross-entropy (a causal pass of the
             same network over the clean sequence), with
             * context-clean corruption: only turn tokens are masked, the context stays clean
               (``ablate_context_clean=True`` masks context tokens at the same rate too);
             * span-aware attention: the input is [clean sequence | noisy turn blocks] and each
               noisy block sees the clean context, the clean earlier turn blocks and itself
               (modeling_diffusion.span_aware_mask), matching inference with a KV cache;
               ``ablate_span_mask=True`` trains on one corrupted sequence with a plain
               block-causal mask, so noisy blocks attend other noisy blocks.

Entry points: ``train(...)`` and the module CLI (``python -m dllmflow.training.tiny_pair``) with
``tokenizer`` / ``prepare`` / ``train`` sub-commands. This path imports only torch,
transformers, tokenizers, safetensors, matplotlib and (optionally) tqdm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dllmflow.agent.prompting import CONTEXT_TOKENS, render_context
from dllmflow.world.generator import generate_world, train_seeds
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode

Example = tuple[list[int], list[int]]  # (context ids, turn ids ending in eos)

DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "tokenizer"
DIFFUSION_AR_WEIGHT = 0.5


# ---------------------------------------------------------------------------------------------
# Trajectories -> examples


def world_texts(seed: int, questions: int = 60, action_first_fraction: float = 0.2) -> list[str]:
    """Corpus documents and full rendered turns of one training world (tokenizer training)."""
    world = generate_world(seed, n_questions=questions)
    tools = InMemorySearch(world.documents)
    rng = random.Random(seed)
    texts = [d["text"] for d in world.documents]
    for q in world.questions:
        action_first = rng.random() < action_first_fraction
        steps = oracle_episode(q, tools, action_first=action_first)
        for i, step in enumerate(steps):
            ctx = render_context(step.role, q, steps[:i], action_first=action_first)
            texts.append(ctx + step.turn)
    return texts


def build_tokenizer(out_dir: str | Path, n_worlds: int = 30, vocab_size: int = 4096):
    """Train the shared BPE on training worlds' corpora and trajectories; save to out_dir."""
    from dllmflow.models.tokenizer import train_tokenizer

    texts: list[str] = []
    for seed in train_seeds(n_worlds):
        texts += world_texts(seed)
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    tok.save_pretrained(str(out_dir))
    return tok


_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer_dir: str) -> None:
    global _WORKER_TOKENIZER
    from dllmflow.models.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_dir)


def _world_examples(args: tuple[int, int, float, int]) -> list[Example]:
    seed, questions, action_first_fraction, context_tokens = args
    tok = _WORKER_TOKENIZER

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    world = generate_world(seed, n_questions=questions)
    tools = InMemorySearch(world.documents)
    rng = random.Random(seed * 7 + 1)
    contexts, turns = [], []
    for q in world.questions:
        action_first = rng.random() < action_first_fraction
        steps = oracle_episode(q, tools, action_first=action_first)
        for i, step in enumerate(steps):
            contexts.append(
                render_context(
                    step.role,
                    q,
                    steps[:i],
                    max_tokens=context_tokens,
                    count_tokens=count,
                    action_first=action_first,
                )
            )
            turns.append(step.turn)
    ctx_ids = tok(contexts, add_special_tokens=False)["input_ids"]
    turn_ids = tok(turns, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    return [(c, [*t, eos]) for c, t in zip(ctx_ids, turn_ids, strict=True)]


def generate_examples(
    seeds: Sequence[int],
    tokenizer_dir: str | Path,
    *,
    questions: int = 60,
    action_first_fraction: float = 0.2,
    context_tokens: int = CONTEXT_TOKENS,
    workers: int = 1,
) -> list[Example]:
    """Tokenized (context, turn) pairs from oracle episodes on the given worlds."""
    jobs = [(s, questions, action_first_fraction, context_tokens) for s in seeds]
    if workers <= 1:
        _init_worker(str(tokenizer_dir))
        chunks = [_world_examples(j) for j in jobs]
    else:
        with get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)
        ) as pool:
            chunks = pool.map(_world_examples, jobs, chunksize=4)
    return [ex for chunk in chunks for ex in chunk]


class PackedExamples:
    """Examples stored as one flat int32 tensor plus lengths: compact, quick to save/load, and
    shared copy-on-write by data-loader workers. ``packed[i]`` -> (context ids, turn ids)."""

    def __init__(
        self,
        ids: torch.Tensor,
        ctx_len: torch.Tensor,
        turn_len: torch.Tensor,
        roles: list[str] | None = None,
    ):
        self.ids, self.ctx_len, self.turn_len = ids, ctx_len, turn_len
        # The agent role whose turn each example is (None: data prepared without them).
        self.roles = roles
        lengths = ctx_len.long() + turn_len.long()
        self.offset = torch.cumsum(lengths, 0) - lengths
        self.lengths = lengths.tolist()

    @classmethod
    def pack(
        cls, examples: Sequence[Example], roles: Sequence[str] | None = None
    ) -> PackedExamples:
        if roles is not None and len(roles) != len(examples):
            raise ValueError(f"{len(roles)} roles for {len(examples)} examples")
        flat = [t for c, u in examples for t in (*c, *u)]
        return cls(
            torch.tensor(flat, dtype=torch.int32),
            torch.tensor([len(c) for c, _ in examples], dtype=torch.int32),
            torch.tensor([len(u) for _, u in examples], dtype=torch.int32),
            None if roles is None else list(roles),
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> Example:
        start, c = int(self.offset[i]), int(self.ctx_len[i])
        row = self.ids[start : start + self.lengths[i]].tolist()
        return row[:c], row[c:]

    def save(self, path: str | Path, **meta: Any) -> None:
        state = {"ids": self.ids, "ctx_len": self.ctx_len, "turn_len": self.turn_len}
        torch.save(state | {"roles": self.roles, "meta": meta}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> PackedExamples:
        state = torch.load(str(path), weights_only=False)
        return cls(state["ids"], state["ctx_len"], state["turn_len"], state.get("roles"))


def prepare_data(
    path: str | Path, tokenizer_dir: str | Path, n_worlds: int, workers: int = 1, **kw: Any
) -> int:
    """Generate examples from ``n_worlds`` training worlds and save them to ``path``."""
    examples = generate_examples(train_seeds(n_worlds), tokenizer_dir, workers=workers, **kw)
    PackedExamples.pack(examples).save(path, n_worlds=n_worlds, **kw)
    return len(examples)


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class SpecialIds:
    pad: int
    mask: int
    eos: int


def ar_batch(examples: Sequence[Example], ids: SpecialIds) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, labels [B, T]: context + turn, labels -100 outside the turn, right-padded."""
    t = max(len(c) + len(u) for c, u in examples)
    inp = torch.full((len(examples), t), ids.pad, dtype=torch.long)
    lab = torch.full((len(examples), t), -100, dtype=torch.long)
    for row, (c, u) in enumerate(examples):
        seq = c + u
        inp[row, : len(seq)] = torch.tensor(seq)
        lab[row, len(c) : len(seq)] = torch.tensor(u)
    return inp, lab


def diffusion_layout(
    ctx: list[int], turn: list[int], block: int, ids: SpecialIds
) -> tuple[list[int], int]:
    """Clean sequence [pad.. | context | turn | eos..] with the turn on a block boundary and
    padded to whole blocks; returns (sequence, turn start)."""
    pad = (-len(ctx)) % block
    fill = (-len(turn)) % block
    seq = [ids.pad] * pad + ctx + turn + [ids.eos] * fill
    return seq, pad + len(ctx)


def diffusion_batch(
    examples: Sequence[Example],
    block: int,
    ids: SpecialIds,
    gen: torch.Generator,
    *,
    ablate_context_clean: bool = False,
    ablate_span_mask: bool = False,
    complementary: bool = False,
) -> dict[str, torch.Tensor]:
    """Inputs of one denoising step; see the module docstring for the two layouts.

    ``complementary`` (Fast-dLLM v2) appends a second noisy copy of the turn whose mask is the
    complement of the first, so every turn token is a denoising target in every step (stream
    2; the copies cannot see each other).

    Returns input_ids, position_ids, targets [B,N] (-100 where no loss), the mask inputs
    stream / block / valid [B,N] (``span_aware_mask`` builds the [B,1,N,N] mask from them on the
    training device), plus ar_input / ar_labels for the auxiliary causal pass.
    """
    if complementary and ablate_span_mask:
        raise ValueError("complementary masks need the two-stream (span-aware) layout")
    rows = []
    for c, u in examples:
        clean, start = diffusion_layout(c, u, block, ids)
        n = len(clean)
        clean_t = torch.tensor(clean)
        # A masking rate per block, so some blocks are nearly clean and some nearly all masked.
        rate = torch.rand(n // block, generator=gen).clamp_min(0.05).repeat_interleave(block)
        corrupt = torch.rand(n, generator=gen) < rate
        in_turn = torch.arange(n) >= start
        turn_mask = corrupt & in_turn
        if not turn_mask.any():  # at least one target per example
            turn_mask[start + int(torch.randint(n - start, (1,), generator=gen))] = True
        ctx_mask = (corrupt & ~in_turn & (clean_t != ids.pad)) if ablate_context_clean else None
        if ablate_span_mask:
            # One stream: the corrupted sequence under a plain block-causal mask.
            seq = torch.where(turn_mask, ids.mask, clean_t)
            if ctx_mask is not None:
                seq[ctx_mask] = ids.mask
            targets = torch.where(turn_mask, clean_t, -100)
            stream = torch.zeros(n, dtype=torch.long)
            blk = torch.arange(n) // block
            pos = torch.arange(n)
        else:
            # Two streams: the clean sequence, then noisy copies of the turn blocks.
            first = clean_t.clone()
            if ctx_mask is not None:
                first[ctx_mask] = ids.mask
            masks = [turn_mask, in_turn & ~turn_mask] if complementary else [turn_mask]
            seq = torch.cat([first, *(torch.where(m, ids.mask, clean_t)[start:] for m in masks)])
            targets = torch.cat(
                [torch.full((n,), -100), *(torch.where(m, clean_t, -100)[start:] for m in masks)]
            )
            stream = torch.cat(
                [torch.zeros(n), *(torch.full((n - start,), k + 1) for k in range(len(masks)))]
            ).long()
            pos = torch.cat([torch.arange(n), *(torch.arange(start, n) for _ in masks)])
            blk = pos // block
        rows.append((seq, targets, stream, blk, pos, clean, start))
    n_max = max(len(r[0]) for r in rows)
    b = len(rows)
    input_ids = torch.full((b, n_max), ids.pad, dtype=torch.long)
    targets = torch.full((b, n_max), -100, dtype=torch.long)
    stream = torch.zeros((b, n_max), dtype=torch.long)
    blk = torch.full((b, n_max), 1 << 30, dtype=torch.long)
    pos = torch.zeros((b, n_max), dtype=torch.long)
    valid = torch.zeros((b, n_max), dtype=torch.bool)
    for i, (seq, tgt, st, bk, ps, _clean, _start) in enumerate(rows):
        n = len(seq)
        input_ids[i, :n], targets[i, :n], stream[i, :n] = seq, tgt, st
        blk[i, :n], pos[i, :n], valid[i, :n] = bk, ps, True
    # Auxiliary AR pass over the clean sequences: predict each turn token from its left.
    t_max = max(len(r[5]) for r in rows)
    ar_input = torch.full((b, t_max), ids.pad, dtype=torch.long)
    ar_labels = torch.full((b, t_max), -100, dtype=torch.long)
    for i, (*_, clean, start) in enumerate(rows):
        ar_input[i, : len(clean)] = torch.tensor(clean)
        ar_labels[i, start : len(clean)] = torch.tensor(clean[start:])
    return {
        "input_ids": input_ids,
        "position_ids": pos,
        "stream": stream,
        "block": blk,
        "valid": valid,
        "targets": targets,
        "ar_input": ar_input,
        "ar_labels": ar_labels,
    }


def diffusion_loss(
    model, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Denoising cross-entropy over masked turn positions + 0.5 * AR cross-entropy."""
    from dllmflow.models.modeling_diffusion import span_aware_mask

    mask = span_aware_mask(batch["stream"], batch["block"], batch["valid"])  # [B, 1, N, N]
    logits = model(batch["input_ids"], attn_mask=mask, position_ids=batch["position_ids"]).logits
    denoise = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        batch["targets"].reshape(-1),
        ignore_index=-100,
    )
    ar_logits = model(batch["ar_input"], causal=True).logits
    ar = F.cross_entropy(
        ar_logits[:, :-1].reshape(-1, ar_logits.shape[-1]).float(),
        batch["ar_labels"][:, 1:].reshape(-1),
        ignore_index=-100,
    )
    total = denoise + DIFFUSION_AR_WEIGHT * ar
    return total, {"denoise": denoise.detach(), "ar": ar.detach()}


# ---------------------------------------------------------------------------------------------
# Training loop


@dataclass
class TrainConfig:
    backend: str
    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 16
    max_position: int = 1024
    ablate_context_clean: bool = False
    ablate_span_mask: bool = False
    checkpoint_every: int = 500
    max_seconds: float | None = None
    seed: int = 0
    n_worlds: int = 200
    questions_per_world: int = 60
    action_first_fraction: float = 0.2
    save_dtype: str = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, mininterval=5.0, dynamic_ncols=True, file=sys.stdout)


def _batches(
    examples: PackedExamples, batch_size: int, rng: random.Random
) -> Iterator[list[Example]]:
    """Endless shuffled batches, grouped by length to waste little padding."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        chunk = batch_size * 32
        for i in range(0, len(order), chunk):
            part = sorted(order[i : i + chunk], key=lambda j: examples.lengths[j])
            groups = [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
            rng.shuffle(groups)
            for g in groups:
                if len(g) == batch_size:
                    yield [examples[j] for j in g]


class _TensorBatches(torch.utils.data.IterableDataset):
    """Endless training batches as tensors; each loader worker draws its own random stream."""

    def __init__(self, examples: PackedExamples, cfg: TrainConfig, ids: SpecialIds, seed: int):
        self.examples, self.cfg, self.ids, self.seed = examples, cfg, ids, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        seed = self.seed * 100 + (info.id if info else 0)
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        for batch in _batches(self.examples, self.cfg.batch_size, rng):
            if self.cfg.backend == "ar":
                inp, lab = ar_batch(batch, self.ids)
                yield {"input_ids": inp, "labels": lab}
            else:
                yield diffusion_batch(
                    batch,
                    self.cfg.block_size,
                    self.ids,
                    gen,
                    ablate_context_clean=self.cfg.ablate_context_clean,
                    ablate_span_mask=self.cfg.ablate_span_mask,
                )


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def _build_model(cfg: TrainConfig, tok):
    common = dict(
        vocab_size=len(tok),
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        max_position=cfg.max_position,
        pad_token_id=tok.pad_token_id,
        mask_token_id=tok.mask_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if cfg.backend == "ar":
        from dllmflow.models.modeling_ar import ARConfig, ARForCausalLM

        return ARForCausalLM(ARConfig(**common))
    if cfg.backend == "diffusion":
        from dllmflow.models.modeling_diffusion import BlockDiffusionLM, DiffusionConfig

        return BlockDiffusionLM(DiffusionConfig(block_size=cfg.block_size, **common))
    raise ValueError(f"backend must be 'ar' or 'diffusion', got {cfg.backend!r}")


def _lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Warmup, then cosine decay over whichever runs out first: steps or the time budget."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = step / cfg.steps
    if cfg.max_seconds:
        progress = max(progress, elapsed / cfg.max_seconds)
    progress = min(1.0, progress)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    backend: str,
    out_dir: str | Path,
    steps: int = 4000,
    *,
    data: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    ablate_context_clean: bool = False,
    ablate_span_mask: bool = False,
    resume: bool = True,
    checkpoint_every: int = 500,
    max_seconds: float | None = None,
    n_worlds: int = 200,
    workers: int = 1,
    loader_workers: int = 0,
    init_from: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train one model of the pair into ``out_dir`` (a loadable checkpoint directory).

    data: a file from ``prepare_data`` (else examples are generated from ``n_worlds`` training
    worlds with ``workers`` processes); ``loader_workers`` processes build batches in the
    background. Checkpoints every ``checkpoint_every`` steps; with ``resume`` an interrupted run
    continues from ``out_dir/train_state.pt``; ``init_from`` starts a new run from the weights
    of a checkpoint directory (continued training with a fresh schedule). Stops after
    ``steps`` or ``max_seconds``. Writes loss_history.json and loss_curve.png; returns a summary.
    """
    from dllmflow.models.tokenizer import load_tokenizer

    cfg = TrainConfig(
        backend=backend,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        ablate_context_clean=ablate_context_clean,
        ablate_span_mask=ablate_span_mask,
        checkpoint_every=checkpoint_every,
        max_seconds=max_seconds,
        n_worlds=n_worlds,
        **overrides,
    )
    if backend == "ar" and (ablate_context_clean or ablate_span_mask):
        raise ValueError("the ablation flags apply to the diffusion backend only")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = Path(tokenizer_dir or DEFAULT_TOKENIZER_DIR)
    tok = load_tokenizer(tok_dir)
    ids = SpecialIds(tok.pad_token_id, tok.mask_token_id, tok.eos_token_id)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.set_num_threads(min(4, os.cpu_count() or 1))  # batches are built by the loader

    if data is not None:
        examples = PackedExamples.load(data)
    else:
        examples = PackedExamples.pack(
            generate_examples(
                train_seeds(n_worlds),
                tok_dir,
                questions=cfg.questions_per_world,
                action_first_fraction=cfg.action_first_fraction,
                workers=workers,
            )
        )
    model = _build_model(cfg, tok)
    if init_from is not None:
        start = type(model).from_pretrained(str(init_from), dtype=torch.float32)
        model.load_state_dict(start.state_dict())
        cfg.extra["init_from"] = str(init_from)
    model = model.to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=dev.type == "cuda",
    )
    step, history, elapsed_before = 0, [], 0.0
    state_path = out / "train_state.pt"
    if resume and state_path.exists():
        saved = json.loads((out / "train_config.json").read_text())
        for key in ("backend", "ablate_context_clean", "ablate_span_mask", "n_layer", "n_embd"):
            if saved.get(key) != getattr(cfg, key):
                raise ValueError(
                    f"{out} holds a run with {key}={saved.get(key)!r}, not {getattr(cfg, key)!r}; "
                    "use another out_dir or resume=False"
                )
        state = torch.load(str(state_path), map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        elapsed_before = state.get("elapsed", 0.0)
        print(f"resuming {backend} from step {step}", flush=True)
    loader = torch.utils.data.DataLoader(
        _TensorBatches(examples, cfg, ids, cfg.seed * 1000 + step),
        batch_size=None,
        num_workers=loader_workers,
        prefetch_factor=4 if loader_workers else None,
        worker_init_fn=_one_thread,
    )
    batches = iter(loader)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else _null()
    bar = _progress(cfg.steps, step, progress)
    t0 = time.time() - elapsed_before
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training {backend} ({n_params / 1e6:.2f}M params) on {len(examples)} examples, "
        f"device {dev}, steps {cfg.steps}, budget {cfg.max_seconds}s",
        flush=True,
    )
    model.train()
    last = None
    while step < cfg.steps:
        elapsed = time.time() - t0
        if cfg.max_seconds and elapsed >= cfg.max_seconds:
            print(f"time budget reached at step {step}", flush=True)
            break
        lr_now = _lr_at(cfg, step, elapsed)
        for group in opt.param_groups:
            group["lr"] = lr_now
        batch = {k: v.to(dev, non_blocking=True) for k, v in next(batches).items()}
        with amp:
            if backend == "ar":
                loss = model(batch["input_ids"], labels=batch["labels"]).loss
                parts: dict[str, torch.Tensor] = {}
            else:
                loss, parts = diffusion_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        last = (step, loss.detach(), parts, lr_now)
        if step % 10 == 0 or step == 1:
            _record(history, *last, time.time() - t0)
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        elif step % 200 == 0:
            print(f"step {step} loss {history[-1]['loss']:.4f} lr {lr_now:.2e}", flush=True)
        if step % cfg.checkpoint_every == 0:
            _save(model, opt, tok, cfg, out, step, history, time.time() - t0)
    if bar is not None:
        bar.close()
    if last is not None and (not history or history[-1]["step"] != step):
        _record(history, *last, time.time() - t0)
    _save(model, opt, tok, cfg, out, step, history, time.time() - t0)
    summary = {
        "backend": backend,
        "steps": step,
        "seconds": round(time.time() - t0, 1),
        "examples": len(examples),
        "params": n_params,
        "final_loss": history[-1]["loss"] if history else None,
        "config": asdict(cfg),
        "device": str(dev)
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _record(history: list, step: int, loss, parts: dict, lr: float, seconds: float) -> None:
    row = {"step": step, "loss": loss.item(), "lr": lr, "time": seconds}
    history.append(row | {k: v.item() for k, v in parts.items()})


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _save(model, opt, tok, cfg: TrainConfig, out: Path, step: int, history, elapsed: float) -> None:
    """Loadable checkpoint (weights in cfg.save_dtype) + resumable state + loss history/curve."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "history": history,
        "elapsed": elapsed,
    }
    tmp = out / "train_state.pt.tmp"
    torch.save(state, str(tmp))
    os.replace(tmp, out / "train_state.pt")
    dtype = getattr(torch, cfg.save_dtype)
    shipped = type(model)(model.config)
    shipped.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    shipped.to(dtype).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    (out / "loss_history.json").write_text(json.dumps(history))
    plot_loss(history, out / "loss_curve.png", title=f"{cfg.backend} (step {step})")


def plot_loss(
    history: list[dict[str, Any]], path: str | Path, title: str = "", marks: Sequence[int] = ()
) -> None:
    """Loss curve PNG (log scale); ``marks``: steps to draw a vertical line at (phases)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="total", lw=1)
    for key in ("denoise", "ar"):
        if key in history[0]:
            ax.plot(steps, [h[key] for h in history], label=key, lw=1, alpha=0.8)
    for step in marks:
        ax.axvline(step, color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (turn tokens)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# CLI (the device run uses this; `dllmflow train` wraps train())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dllmflow.training.tiny_pair")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenizer", help="train the shared BPE tokenizer")
    t.add_argument("--out", default=str(DEFAULT_TOKENIZER_DIR))
    t.add_argument("--worlds", type=int, default=30)
    t.add_argument("--vocab", type=int, default=4096)
    d = sub.add_parser("prepare", help="generate tokenized oracle trajectories")
    d.add_argument("--out", required=True)
    d.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER_DIR))
    d.add_argument("--worlds", type=int, default=200)
    d.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    r = sub.add_parser("train", help="train one model")
    r.add_argument("--backend", choices=["ar", "diffusion"], required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--steps", type=int, default=4000)
    r.add_argument("--data")
    r.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER_DIR))
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--lr", type=float, default=2e-3)
    r.add_argument("--warmup", type=int)
    r.add_argument("--init-from", help="start from this checkpoint's weights")
    r.add_argument("--max-seconds", type=float)
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--worlds", type=int, default=200)
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--loader-workers", type=int, default=0)
    r.add_argument("--ablate-context-clean", action="store_true")
    r.add_argument("--ablate-span-mask", action="store_true")
    r.add_argument("--no-resume", action="store_true")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--device")
    for name in ("n_layer", "n_head", "n_embd", "block_size"):
        r.add_argument("--" + name.replace("_", "-"), type=int)
    a = p.parse_args(argv)
    if a.cmd == "tokenizer":
        tok = build_tokenizer(a.out, a.worlds, a.vocab)
        print(f"tokenizer ({len(tok)} tokens) -> {a.out}")
    elif a.cmd == "prepare":
        n = prepare_data(a.out, a.tokenizer, a.worlds, workers=a.workers)
        print(f"{n} examples from {a.worlds} worlds -> {a.out}")
    else:
        overrides = {
            k: getattr(a, k)
            for k in ("n_layer", "n_head", "n_embd", "block_size", "warmup")
            if getattr(a, k) is not None
        }
        summary = train(
            a.backend,
            a.out,
            a.steps,
            data=a.data,
            tokenizer_dir=a.tokenizer,
            batch_size=a.batch_size,
            lr=a.lr,
            ablate_context_clean=a.ablate_context_clean,
            ablate_span_mask=a.ablate_span_mask,
            resume=not a.no_resume,
            checkpoint_every=a.checkpoint_every,
            max_seconds=a.max_seconds,
            n_worlds=a.worlds,
            workers=a.workers,
            loader_workers=a.loader_workers,
            init_from=a.init_from,
            device=a.device,
            progress=not a.no_progress,
            **overrides,
        )
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
