"""Train the real pair: LoRA adapters over an imported base (SmolLM2-135M), AR and diffusion.

Same data, same tokenizer, same steps for the agent fine-tune of both halves (as in the DLLM
Agent paper); the diffusion half first adapts to block diffusion on plain prose:

  AR:         next-token cross-entropy on the turn tokens only (the action segments).
  diffusion:  phase "adapt": block diffusion on prose chunks (the last chunk masked, context
              clean); phase "agent": the agent turns with context-clean corruption,
              span-aware masks and complementary masks (training.diffusion_batch: two noisy
              copies per turn, masks m and not-m), loss = denoising + 0.5 x AR
              cross-entropy. Token shift: a masked position is denoised by the logits of the
              position before it (the first of a block by the clean previous block's last).

The logits are computed only where a loss is taken: a 49K-token vocabulary over every position
of a 2K-token two-stream batch would cost more than the network.

    python -m dllmflow.training.pair prepare --episodes E.jsonl.gz --base DIR --out data.pt
    python -m dllmflow.training.pair train --kind ar --data data.pt --base DIR --out OUT
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dllmflow.agent.actions import parse_turn, render_turn
from dllmflow.agent.prompting import Step, render_context
from dllmflow.models.lora import (
    adapter_state,
    attach_lora,
    load_adapter,
    merge_adapter,
    save_adapter_state,
    stack_adapters,
)
from dllmflow.models.modeling_diffusion import span_aware_mask
from dllmflow.models.modeling_llama import build_from_base
from dllmflow.models.real_pair import ADAPTER_FILE, load_pair_tokenizer
from dllmflow.models.sampling.base import ChatPrompt
from dllmflow.training.tiny_pair import (
    DIFFUSION_AR_WEIGHT,
    PackedExamples,
    SpecialIds,
    diffusion_batch,
    plot_loss,
)

DEFAULT_CONTEXT_TOKENS = 896  # rendered context; the chat framing and the turn come on top
TURN_TOKENS = 160


# ---------------------------------------------------------------------------------------------
# Episodes -> tokenized examples

_TOK: Any = None
_CHAT: ChatPrompt | None = None


def _init(base_dir: str) -> None:
    global _TOK, _CHAT
    torch.set_num_threads(1)
    _TOK = load_pair_tokenizer(base_dir)
    _CHAT = ChatPrompt(_TOK)


def _episode_examples(args: tuple[str, int, bool]) -> list[tuple[str, list[int], list[int]]]:
    """One episode -> (role, context ids, turn ids) per turn."""
    line, context_tokens, action_first = args
    record = json.loads(line)
    question, steps = record["question"], [Step(**s) for s in record["steps"]]
    if action_first:  # P-ReAct order: same turns, action span first
        steps = [_reorder(s) for s in steps]
    tok, chat = _TOK, _CHAT
    framing = len(chat.prefix_ids) + len(chat.suffix_ids)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    out = []
    for i, step in enumerate(steps):
        context = render_context(
            step.role,
            question,
            steps[:i],
            max_tokens=context_tokens,
            count_tokens=count,
            action_first=action_first,
        )
        ctx = chat.encode(context, context_tokens + framing)
        turn = tok(step.turn, add_special_tokens=False)["input_ids"][: TURN_TOKENS - 1]
        out.append((step.role, ctx, [*turn, tok.eos_token_id]))
    return out


def _reorder(step: Step) -> Step:
    parsed = parse_turn(step.turn)
    if parsed.action is None:
        return step
    return Step(
        step.role, render_turn(parsed.thinking, parsed.action, action_first=True), step.observation
    )


def _prose_examples(args: tuple[str, int]) -> list[tuple[list[int], list[int]]]:
    """Plain-text chunks for the adaptation phase: context = the text before, turn = 64-128
    tokens of it (no chat framing: this teaches block diffusion, not the agent)."""
    text, seed = args
    ids = _TOK(text, add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    out = []
    while len(ids) >= 96:
        span = rng.randint(64, 128)
        ctx_len = rng.randint(16, max(16, min(512, len(ids) - span)))
        out.append((ids[:ctx_len], [*ids[ctx_len : ctx_len + span], _TOK.eos_token_id]))
        ids = ids[ctx_len + span :]
    return out


def _open(path: str | Path):
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def prepare(
    episodes: str | Path,
    base_dir: str | Path,
    out: str | Path,
    *,
    prose: str | Path | None = None,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    action_first_fraction: float = 0.2,
    workers: int = os.cpu_count() or 1,
    seed: int = 0,
) -> dict[str, int]:
    """Tokenize agent episodes (and prose documents for the adaptation phase) into
    ``out`` (agent examples) and ``out``.prose.pt."""
    rng = random.Random(seed)
    with _open(episodes) as f:
        lines = [line for line in f if line.strip()]
    jobs = [(line, context_tokens, rng.random() < action_first_fraction) for line in lines]
    with get_context("spawn").Pool(workers, initializer=_init, initargs=(str(base_dir),)) as pool:
        chunks = pool.map(_episode_examples, jobs, chunksize=16)
        turns = [turn for chunk in chunks for turn in chunk]
        examples = [(ctx, turn) for _, ctx, turn in turns]
        roles = [role for role, _, _ in turns]
        PackedExamples.pack(examples, roles).save(out, context_tokens=context_tokens)
        counts = {"episodes": len(lines), "agent_examples": len(examples)}
        if prose is not None:
            with _open(prose) as f:
                texts = [json.loads(line)["text"] for line in f if line.strip()]
            pchunks = pool.map(_prose_examples, [(t, i) for i, t in enumerate(texts)], 64)
            pexamples = [ex for chunk in pchunks for ex in chunk]
            PackedExamples.pack(pexamples).save(str(out) + ".prose.pt")
            counts["prose_examples"] = len(pexamples)
    return counts


# ---------------------------------------------------------------------------------------------
# Losses (logits only where a loss is taken)


def _hidden(model, input_ids, position_ids, attend) -> torch.Tensor:
    x = model.embed(input_ids)
    cos, sin = model._rope(position_ids, x.dtype)
    for block in model.blocks:
        x = block(x, cos, sin, attend)
    return model.ln_f(x)


def _ce_at(model, h: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the tied head at flat hidden rows ``rows`` against ``targets``."""
    logits = F.linear(h.reshape(-1, h.shape[-1])[rows], model.embed.weight)
    return F.cross_entropy(logits.float(), targets)


def ar_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy on the labelled (turn) tokens."""
    ids, labels = batch["input_ids"], batch["labels"]
    b, t = ids.shape
    pos = torch.arange(t, device=ids.device).expand(b, t)

    def attend(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    h = _hidden(model, ids, pos, attend)
    where = (labels[:, 1:] != -100).nonzero()  # target at p = (row, col + 1), predicted at col
    rows = where[:, 0] * t + where[:, 1]
    return _ce_at(model, h, rows, labels[:, 1:][where[:, 0], where[:, 1]])


def shifted_sources(batch: dict[str, torch.Tensor], block: int) -> tuple[torch.Tensor, ...]:
    """Flat (source row, target) pairs of a span-aware batch under token shift: the noisy copy
    of position p is denoised from the row before it, or for a block's first position from the
    clean stream's position p - 1 (the clean previous block, as at inference)."""
    targets, stream, pos = batch["targets"], batch["stream"], batch["position_ids"]
    n = targets.shape[1]
    row, col = (targets != -100).nonzero(as_tuple=True)
    p = pos[row, col]
    first = (p % block == 0) | (stream[row, col] == 0)
    src_col = torch.where(first, p - 1, col - 1)  # clean index of position q is q
    return row * n + src_col, targets[row, col]


def diffusion_loss(model, batch: dict[str, torch.Tensor], block: int) -> tuple[torch.Tensor, dict]:
    mask = span_aware_mask(batch["stream"], batch["block"], batch["valid"])

    def attend(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    h = _hidden(model, batch["input_ids"], batch["position_ids"], attend)
    rows, targets = shifted_sources(batch, block)
    denoise = _ce_at(model, h, rows, targets)
    ar = ar_loss(model, {"input_ids": batch["ar_input"], "labels": batch["ar_labels"]})
    return denoise + DIFFUSION_AR_WEIGHT * ar, {"denoise": denoise.detach(), "ar": ar.detach()}


# ---------------------------------------------------------------------------------------------
# Training loop


def example_order(examples: PackedExamples, oversample: dict[str, int] | None) -> list[int]:
    """Every example index once, those of an oversampled role ``oversample[role]`` times."""
    if not oversample:
        return list(range(len(examples)))
    if examples.roles is None:
        raise ValueError(
            "oversampling needs per-example roles; this data was prepared without them "
            "(run `prepare` again)"
        )
    unknown = sorted(set(oversample) - set(examples.roles))
    if unknown:
        raise ValueError(f"oversample: no examples of role {unknown}; roles: "
                         f"{sorted(set(examples.roles))}")  # fmt: skip
    bad = {role: n for role, n in oversample.items() if n < 1}
    if bad:
        raise ValueError(f"oversample: each factor must be >= 1, got {bad}")
    return [i for i, role in enumerate(examples.roles) for _ in range(oversample.get(role, 1))]


def _batches(
    examples: PackedExamples,
    tokens_per_batch: int,
    rng: random.Random,
    oversample: dict[str, int] | None = None,
) -> Iterator:
    """Endless shuffled batches of similar length, about ``tokens_per_batch`` tokens each."""
    base_order = example_order(examples, oversample)
    while True:
        order = list(base_order)
        rng.shuffle(order)
        for i in range(0, len(order), 4096):
            part = sorted(order[i : i + 4096], key=lambda j: examples.lengths[j])
            groups, cur = [], []
            for j in part:
                cur.append(j)
                if len(cur) * examples.lengths[j] >= tokens_per_batch:
                    groups.append(cur)
                    cur = []
            rng.shuffle(groups)
            for g in groups:
                yield [examples[j] for j in g]


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, examples, kind, ids, block, tokens, seed, oversample=None):
        self.examples, self.kind, self.ids = examples, kind, ids
        self.block, self.tokens, self.seed = block, tokens, seed
        self.oversample = oversample

    def __iter__(self):
        from dllmflow.training.tiny_pair import ar_batch

        info = torch.utils.data.get_worker_info()
        seed = self.seed * 100 + (info.id if info else 0)
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        for batch in _batches(self.examples, self.tokens, rng, self.oversample):
            if self.kind == "ar":
                inp, lab = ar_batch(batch, self.ids)
                yield {"input_ids": inp, "labels": lab}
            else:
                yield diffusion_batch(batch, self.block, self.ids, gen, complementary=True)


def train_phase(
    model,
    kind: str,
    examples: PackedExamples,
    ids: SpecialIds,
    *,
    steps: int,
    lr: float,
    tokens_per_batch: int,
    block: int,
    seed: int,
    history: list[dict[str, Any]],
    phase: str,
    warmup: int = 30,
    deadline: float | None = None,
    micro_batches: int = 1,
    oversample: dict[str, int] | None = None,
) -> int:
    """Train ``steps`` steps (fewer if ``time.time()`` passes ``deadline``) -> steps done.

    ``micro_batches`` splits each step's ``tokens_per_batch`` into that many forward/backward
    passes (gradients accumulated): the same step, in a fraction of the activation memory.
    ``oversample`` ({role: factor}) draws that role's turns ``factor`` times per epoch."""
    example_order(examples, oversample)  # bad factors fail here, not inside a loader worker
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    loader = torch.utils.data.DataLoader(
        _Batches(examples, kind, ids, block, tokens_per_batch // micro_batches, seed, oversample),
        batch_size=None,
        num_workers=4,
        prefetch_factor=4,
        worker_init_fn=lambda _w: torch.set_num_threads(1),
    )
    batches = iter(loader)
    t0 = time.time()
    offset = history[-1]["step"] if history else 0  # steps of earlier phases
    model.train()
    done = 0
    for step in range(1, steps + 1):
        if deadline is not None and time.time() > deadline:
            print(f"[{kind}/{phase}] time budget reached after {done} steps", flush=True)
            break
        scale = step / warmup if step <= warmup else 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * max(0.05, scale)
        opt.zero_grad(set_to_none=True)
        loss, parts = torch.zeros((), device=dev), {}
        for _ in range(micro_batches):
            batch = {k: v.to(dev, non_blocking=True) for k, v in next(batches).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                if kind == "ar":
                    part, terms = ar_loss(model, batch), {}
                else:
                    part, terms = diffusion_loss(model, batch, block)
            (part / micro_batches).backward()
            loss = loss + part.detach() / micro_batches
            for k, v in terms.items():
                parts[k] = parts.get(k, 0.0) + v / micro_batches
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step
        if step % 10 == 0 or step in (1, steps):
            row = {"phase": phase, "step": offset + step, "loss": loss.item(), "lr": lr * scale}
            row.update({k: v.item() for k, v in parts.items()}, time=round(time.time() - t0, 1))
            history.append(row)
        if step % 50 == 0 or step == steps:
            print(
                f"[{kind}/{phase}] step {step}/{steps} loss {loss.item():.4f} "
                f"{(time.time() - t0) / step:.2f}s/step",
                flush=True,
            )
    return done


def train(
    kind: str,
    base_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    steps: int,
    adapt_steps: int = 0,
    lr: float = 5e-4,
    rank: int = 24,
    alpha: float = 48.0,
    tokens_per_batch: int = 32_768,
    block: int = 16,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    seed: int = 0,
    max_seconds: float | None = None,
    init_adapter: str | Path | None = None,
    stack_on: str | Path | None = None,
    micro_batches: int = 1,
    oversample: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One half of the pair into ``out`` (config.json + adapter.safetensors + loss history).

    ``max_seconds`` bounds the whole run: training stops early (and says so in the summary)
    so that the adapter is always written inside a fixed time slot. ``init_adapter`` (a
    directory this function wrote, e.g. the diffusion half after its adaptation phase alone)
    starts from that adapter and continues its loss history, so the two phases can run in
    separate processes. ``stack_on`` (such a directory too) merges that adapter into the base
    and trains a new one of ``rank`` above it, at the same alpha / rank; the two are written
    as one adapter of the summed rank, so a frozen earlier run gains capacity without a new
    file format. ``oversample`` weights the agent phase's turns by role."""
    if init_adapter and stack_on:
        raise ValueError("--init-adapter and --stack-on are exclusive: continue or stack, not both")
    deadline = time.time() + max_seconds if max_seconds else None
    torch.manual_seed(seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = load_pair_tokenizer(base_dir)
    model = build_from_base(
        base_dir,
        kind,
        block_size=block,
        mask_token_id=tok.mask_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        lora_rank=rank,
        lora_alpha=alpha,
        context_tokens=context_tokens,
    )
    below: dict[str, torch.Tensor] = {}
    below_rank = 0
    history: list[dict[str, Any]] = []
    marks: list[int] = []  # where the agent phase (or a stacked adapter) began, for the plot
    if stack_on:
        below, history, below_rank = _merge_below(model, Path(stack_on), kind, alpha / rank)
        marks.append(history[-1]["step"] if history else 0)
    attach_lora(model, rank, alpha)
    extra = ["embed.mask_embedding"] if kind == "diffusion" else []
    for name, p in model.named_parameters():
        if name in extra:
            p.requires_grad_(True)
    if init_adapter:
        history = _start_from(model, Path(init_adapter), kind, rank)
    model.to(dev)
    ids = SpecialIds(tok.pad_token_id, tok.mask_token_id, tok.eos_token_id)
    t0 = time.time()
    if kind == "diffusion" and adapt_steps:
        prose = PackedExamples.load(str(data) + ".prose.pt")
        train_phase(
            model,
            kind,
            prose,
            ids,
            steps=adapt_steps,
            lr=lr,
            tokens_per_batch=tokens_per_batch,
            block=block,
            seed=seed + 1,
            history=history,
            phase="adapt",
            deadline=deadline,
            micro_batches=micro_batches,
        )
    agent = PackedExamples.load(data)
    if steps and history and history[-1]["phase"] != "agent":
        marks.append(history[-1]["step"])
    steps_done = train_phase(
        model,
        kind,
        agent,
        ids,
        steps=steps,
        lr=lr,
        tokens_per_batch=tokens_per_batch,
        block=block,
        seed=seed,
        history=history,
        phase="agent",
        deadline=deadline,
        micro_batches=micro_batches,
        oversample=oversample,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = adapter_state(model, extra)
    if below:  # one adapter of the summed rank at the same scale
        state = stack_adapters(below, state)
        rank, alpha = below_rank + rank, alpha / rank * (below_rank + rank)
        model.config.lora_rank, model.config.lora_alpha = rank, alpha
    model.config.save_pretrained(str(out))
    save_adapter_state(state, out / ADAPTER_FILE, kind=kind, rank=rank, alpha=alpha)
    (out / "loss_history.json").write_text(json.dumps(history))
    plot_loss(history, out / "loss_curve.png", title=f"smollm2-135m {kind}", marks=marks)
    summary = {
        "kind": kind,
        "steps": steps,
        "steps_done": steps_done,
        "adapt_steps": adapt_steps,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "stack_on": str(stack_on) if stack_on else None,
        "examples": len(agent),
        "tokens_per_batch": tokens_per_batch,
        "micro_batches": micro_batches,
        "oversample": oversample or {},
        "lr": lr,
        "lora_rank": rank,
        "lora_alpha": alpha,
        "seconds": round(time.time() - t0, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_summary(out_dir: Path, flag: str) -> dict[str, Any]:
    summary_path = out_dir / "train_summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{flag} {out_dir}: no train_summary.json (not a run dir)")
    return json.loads(summary_path.read_text())


def _merge_below(
    model, out_dir: Path, kind: str, scale: float
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], int]:
    """Merge an earlier run's adapter into the plain ``model`` (--stack-on);
    -> (that adapter, its loss history, its rank)."""
    summary = _run_summary(out_dir, "--stack-on")
    below_rank, below_alpha = int(summary["lora_rank"]), float(summary["lora_alpha"])
    if summary["kind"] != kind:
        raise ValueError(f"--stack-on {out_dir} is a {summary['kind']} adapter; this run is {kind}")
    if not math.isclose(below_alpha / below_rank, scale):
        raise ValueError(
            f"--stack-on {out_dir} has alpha / rank {below_alpha / below_rank:g}; the new "
            f"adapter's is {scale:g}, and stacked factors share one scale"
        )
    below = load_adapter(out_dir / ADAPTER_FILE)
    merge_adapter(model, below, below_alpha)
    return below, json.loads((out_dir / "loss_history.json").read_text()), below_rank


def _start_from(model, out_dir: Path, kind: str, rank: int) -> list[dict[str, Any]]:
    """Load an earlier run's adapter into the wrapped ``model``; -> its loss history."""
    summary = _run_summary(out_dir, "--init-adapter")
    if (summary["kind"], summary["lora_rank"]) != (kind, rank):
        raise ValueError(
            f"--init-adapter {out_dir} is a {summary['kind']} adapter of rank "
            f"{summary['lora_rank']}; this run is {kind} with rank {rank}"
        )
    state = load_adapter(out_dir / ADAPTER_FILE)
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"--init-adapter {out_dir}: tensors the model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return json.loads((out_dir / "loss_history.json").read_text())


def _parse_oversample(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        role, sep, factor = item.partition("=")
        if not sep or not role or not factor.isdigit():
            parser.error(f"--oversample {item!r}: expected ROLE=N, e.g. planner=3")
        out[role] = int(factor)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dllmflow.training.pair")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("prepare", help="tokenize agent episodes (+ prose for adaptation)")
    d.add_argument("--episodes", required=True)
    d.add_argument("--prose")
    d.add_argument("--base", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--context-tokens", type=int, default=DEFAULT_CONTEXT_TOKENS)
    d.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    t = sub.add_parser("train", help="train one half of the pair")
    t.add_argument("--kind", choices=["ar", "diffusion"], required=True)
    t.add_argument("--base", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--adapt-steps", type=int, default=0)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--rank", type=int, default=24)
    t.add_argument("--tokens-per-batch", type=int, default=32_768)
    t.add_argument("--max-seconds", type=float, help="stop early to finish inside this time")
    t.add_argument("--init-adapter", help="start from the adapter in this output directory")
    t.add_argument(
        "--stack-on",
        help="merge the adapter in this output directory and train a new --rank one above it",
    )
    t.add_argument(
        "--micro-batches", type=int, default=1, help="passes per step (same tokens, less memory)"
    )
    t.add_argument(
        "--oversample",
        action="append",
        default=[],
        metavar="ROLE=N",
        help="draw ROLE's turns N times per epoch (repeatable), e.g. planner=3",
    )
    a = p.parse_args(argv)
    if a.cmd == "prepare":
        counts = prepare(
            a.episodes,
            a.base,
            a.out,
            prose=a.prose,
            context_tokens=a.context_tokens,
            workers=a.workers,
        )
        print(json.dumps(counts))
    else:
        summary = train(
            a.kind,
            a.base,
            a.data,
            a.out,
            steps=a.steps,
            adapt_steps=a.adapt_steps,
            lr=a.lr,
            rank=a.rank,
            alpha=2.0 * a.rank,
            tokens_per_batch=a.tokens_per_batch,
            max_seconds=a.max_seconds,
            init_adapter=a.init_adapter,
            stack_on=a.stack_on,
            micro_batches=a.micro_batches,
            oversample=_parse_oversample(p, a.oversample),
        )
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
