"""End-to-end block-diffusion decode with the kernels vs the same loop with the torch references.

A plain transformer with random weights (built here, torch only) decodes block by block: the
prompt is prefilled with block-causal attention into a KV cache; each 32-token block starts fully
masked and is refined step by step (block attention over the cache, then confidence-gated commits
at tau) until no position is masked; its keys then stay in the cache. The same loop runs twice,
with DLLMFLOW_KERNELS=triton and DLLMFLOW_KERNELS=torch (the references).

    PYTHONPATH=. python bench/decode.py --out bench/results
    TRITON_INTERPRET=1 PYTHONPATH=. python bench/decode.py --smoke   # CPU check of this script
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dllmflow.kernels import block_causal_attention, block_decode_attention, confidence_commit


@dataclass
class Config:
    vocab: int = 151936
    d_model: int = 2048
    layers: int = 8
    heads: int = 16
    head_dim: int = 128
    mlp: int = 5632
    logit_scale: float = 6.0  # sharpens random-weight logits so that some positions pass tau


class Layer(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.norm1 = nn.RMSNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.heads * c.head_dim, bias=False)
        self.out = nn.Linear(c.heads * c.head_dim, c.d_model, bias=False)
        self.norm2 = nn.RMSNorm(c.d_model)
        self.up = nn.Linear(c.d_model, 2 * c.mlp, bias=False)
        self.down = nn.Linear(c.mlp, c.d_model, bias=False)

    def forward(self, x, cache_k, cache_v, start: int, block_size: int, prefill: bool):
        """x [B, N, d]; writes this chunk's keys/values at cache[:, :, start:start+N]."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.c.heads, self.c.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, D]
        cache_k[:, :, start : start + n] = k
        cache_v[:, :, start : start + n] = v
        if prefill:
            att = block_causal_attention(q, k, v, block_size)
        else:
            kv_lens = torch.full((b,), start + n, dtype=torch.int32, device=x.device)
            att = block_decode_attention(q, cache_k, cache_v, kv_lens)
        x = x + self.out(att.transpose(1, 2).reshape(b, n, -1))
        gate, up = self.up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class BlockDiffusionLM(nn.Module):
    """No positional encoding: this model exists to time the decode loop, not to be trained."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab + 1, c.d_model)  # last id is [MASK]
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.layers))
        self.norm = nn.RMSNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab, bias=False)

    @property
    def mask_id(self) -> int:
        return self.c.vocab

    def forward(self, tokens, cache, start: int, block_size: int, prefill: bool):
        x = self.embed(tokens)
        for layer, (ck, cv) in zip(self.layers, cache, strict=True):
            x = layer(x, ck, cv, start, block_size, prefill)
        return self.head(self.norm(x)) * self.c.logit_scale  # [B, N, V]


@torch.inference_mode()
def decode(model, prompt, n_blocks: int, block: int, tau: float) -> tuple[torch.Tensor, int]:
    """Returns the generated ids [B, n_blocks * block] and the number of denoising steps."""
    c = model.c
    b, p = prompt.shape
    total = p + n_blocks * block
    dtype = next(model.parameters()).dtype
    cache = [
        tuple(
            torch.empty(b, c.heads, total, c.head_dim, dtype=dtype, device=prompt.device)
            for _ in range(2)
        )
        for _ in range(c.layers)
    ]
    model(prompt, cache, 0, block, prefill=True)
    out, steps, pos = [], 0, p
    for _ in range(n_blocks):
        tokens = torch.full((b, block), model.mask_id, dtype=torch.int64, device=prompt.device)
        masked = torch.ones(b, block, dtype=torch.bool, device=prompt.device)
        for _ in range(block):  # each step commits at least one position per row
            logits = model(tokens, cache, pos, block, prefill=False)
            confidence_commit(logits, tokens, masked, tau)
            steps += 1
            if not masked.any():
                break
        out.append(tokens)
        pos += block
    return torch.cat(out, dim=1), steps


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(model, prompt, args, backend: str) -> dict:
    os.environ["DLLMFLOW_KERNELS"] = backend
    decode(model, prompt, 1, args.block, args.tau)  # warm-up: compiles the Triton kernels
    times, ids, steps = [], None, 0
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        ids, steps = decode(model, prompt, args.blocks, args.block, args.tau)
        sync()
        times.append(time.perf_counter() - start)
    med = statistics.median(times)
    new_tokens = ids.numel()
    return {
        "backend": backend,
        "median_s": round(med, 4),
        "times_s": [round(t, 4) for t in times],
        "steps": steps,
        "tokens_per_step": round(new_tokens / (steps * prompt.shape[0]), 2),
        "tokens_per_s": round(new_tokens / med, 1),
        "ids": ids,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        cfg = Config(vocab=300, d_model=64, layers=2, heads=2, head_dim=32, mlp=128)
        args.prompt, args.blocks, args.block, args.repeats, args.batches = 16, 2, 8, 1, "2"
        dtype = torch.float32
    else:
        cfg = Config()
        dtype = torch.bfloat16
    torch.manual_seed(0)
    with torch.device(dev):  # initialise on the GPU: a CPU init of ~1B weights takes a while
        model = BlockDiffusionLM(cfg).to(dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    result: dict = {
        "gpu": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "command": "PYTHONPATH=. python " + shlex.join(sys.argv),
        "torch": torch.__version__,
        "model": {**asdict(cfg), "params": params, "dtype": str(dtype)},
        "prompt": args.prompt,
        "blocks": args.blocks,
        "block": args.block,
        "tau": args.tau,
        "runs": [],
    }
    for batch in (int(x) for x in args.batches.split(",")):
        prompt = torch.randint(0, cfg.vocab, (batch, args.prompt), device=dev)
        kern = run(model, prompt, args, "triton")
        ref = run(model, prompt, args, "torch")
        agree = (kern.pop("ids") == ref.pop("ids")).float().mean().item()
        row = {
            "batch": batch,
            "kernels": kern,
            "reference": ref,
            "speedup": round(ref["median_s"] / kern["median_s"], 3),
            "token_agreement": round(agree, 4),  # bf16 numerics differ, so commits can too
        }
        result["runs"].append(row)
        print(
            f"batch {batch}: kernels {kern['median_s']}s ({kern['steps']} steps), "
            f"reference {ref['median_s']}s ({ref['steps']} steps), speedup {row['speedup']}x, "
            f"agreement {row['token_agreement']}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if "--smoke" in sys.argv:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    main()
