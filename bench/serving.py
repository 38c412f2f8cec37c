"""Serving throughput and latency: continuous batching vs one request at a time, per backend.

For each backend the same requests (rendered agent contexts for the demo questions) are decoded
one at a time, then in bursts of 1, 4, 16 and 32 concurrent requests through the batching
scheduler. Reported per level: requests/s and tokens/s, p50/p95 latency, and the throughput
ratio over one-at-a-time decoding of the same requests (the first N of the sequential run).

  --transport ray        replicas as Ray actors, called like the episode worker calls them
                         (a private local Ray; the replica streams progress to the caller)
  --transport inprocess  the BatchScheduler in this process (for machines without Ray)

Checkpoints (--weights, one or both): ``auto`` = the shipped pair when present (short trained
turns: the prompt prefill is a large share of the work), else random models of the shipped
size; ``random`` = random models of the shipped size (160-token turns; a random diffusion model
commits ~1 token per pass, the pessimistic end). Weights do not change the cost of a forward.

Warm-up (--warmup): ``all`` decodes every request alone and runs every burst once, untimed,
before timing (on a GPU new shapes compile kernels, which must not land in either timed run);
``one`` decodes one request. ``auto``: all on CUDA, one on CPU (nothing compiles there).

  PYTHONPATH=. python bench/serving.py --transport ray --weights auto,random --name serving_cpu
  PYTHONPATH=. python bench/serving.py --transport inprocess --device cuda --weights auto,random \
      --threads 4 --name serving_gpu --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

# The repository root first, this folder last: its kernels.py would otherwise shadow the
# `kernels` package that transformers imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

from dllmflow.agent.prompting import Step, render_context
from dllmflow.models.loader import CHECKPOINT_DIR, dtype_from_name, load_backend
from dllmflow.models.sampling.base import GenerationRequest
from dllmflow.world.oracle import oracle_turn

QUESTIONS = (
    Path(__file__).resolve().parent.parent / "dllmflow" / "data" / "demo" / "questions.jsonl"
)
LEVELS = (1, 4, 16, 32)
ROLES = ("planner", "seeker", "seeker", "writer")
# Embedding scale of the random models: peaked enough for stable greedy argmax; diffusion
# stays unsharpened so it commits ~1 token per pass (no better than AR: the pessimistic case).
SHARPEN = {"ar": 4.0, "diffusion": 1.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def random_checkpoint(root: Path, backend: str) -> Path:
    """A random model with the shipped architecture, saved like a shipped checkpoint."""
    from dllmflow.models.modeling_ar import ARConfig, ARForCausalLM
    from dllmflow.models.modeling_diffusion import BlockDiffusionLM, DiffusionConfig
    from dllmflow.models.tokenizer import load_tokenizer
    from dllmflow.training.tiny_pair import DEFAULT_TOKENIZER_DIR

    tok = load_tokenizer(DEFAULT_TOKENIZER_DIR)
    ids = dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        mask_token_id=tok.mask_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    if backend == "ar":
        model = ARForCausalLM(ARConfig(**ids))
    else:
        model = BlockDiffusionLM(DiffusionConfig(**ids))
    with torch.no_grad():
        model.embed.weight.mul_(SHARPEN[backend])
    out = root / backend
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def checkpoint_for(backend: str, given: str | None, root: Path, weights: str) -> tuple[str, str]:
    if weights == "random":
        return str(random_checkpoint(root, backend)), "random (shipped architecture)"
    if given:
        return given, "given"
    if (CHECKPOINT_DIR / backend / "config.json").is_file():
        return backend, "shipped"
    return str(random_checkpoint(root, backend)), "random (shipped architecture)"


def make_requests(n: int, max_new_tokens: int, tokenizer: Any) -> list[GenerationRequest]:
    records = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    out = []
    for i in range(n):
        question = records[i % len(records)]
        role = ROLES[i % len(ROLES)]
        history: list[Step] = []
        for past in ("planner", "seeker")[: i % 3]:  # 0-2 earlier turns: prompt lengths vary
            history.append(Step(past, oracle_turn(past, question, history)))
        prompt = render_context(
            role,
            question,
            history,
            max_tokens=640,
            count_tokens=lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]),
        )
        out.append(
            GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens, request_id=str(i))
        )
    return out


def fresh(r: GenerationRequest, tag: str) -> GenerationRequest:
    return GenerationRequest(
        prompt=r.prompt,
        max_new_tokens=r.max_new_tokens,
        tau=r.tau,
        request_id=f"{tag}-{r.request_id}",
    )


class InProcess:
    def __init__(
        self,
        checkpoint: str,
        device: str,
        max_batch: int,
        dtype: str = "auto",
        cuda_graphs: bool = False,
    ) -> None:
        from dllmflow.workers.serving.scheduler import BatchScheduler

        self.backend = load_backend(checkpoint, device=device, dtype=dtype_from_name(dtype))
        self.backend.sampler.cuda_graphs = cuda_graphs
        self.scheduler = BatchScheduler(self.backend.sampler, max_batch=max_batch)
        self.tokenizer = self.backend.tokenizer

    def alone(self, r: GenerationRequest) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        result = self.backend.sampler.generate(r)
        return time.perf_counter() - t0, result.to_dict()

    def burst(self, reqs: list[GenerationRequest]) -> list[tuple[float, dict[str, Any]]]:
        tickets = [self.scheduler.submit(r) for r in reqs]
        served = [t.result() for t in tickets]
        return [(s.latency_s, s.result.to_dict()) for s in served]

    def close(self) -> None:
        self.scheduler.stop()


class OverRay:
    def __init__(self, backend: str, checkpoint: str, max_batch: int, threads: int) -> None:
        import ray

        from dllmflow.workers.serving.pool import ReplicaPool
        from dllmflow.workers.serving.settings import NAMESPACE, ServingSettings

        if not ray.is_initialized():
            # A private local Ray like the stack's: no auth token (ray.init would otherwise
            # write ~/.ray/auth_token, which later `ray start` heads on this machine pick up).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                num_cpus=2,
                namespace=NAMESPACE,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=256 * 1024**2,
            )
        settings = ServingSettings(
            **{f"{backend}_checkpoint": checkpoint, f"{backend}_replicas": 1},
            replica_num_cpus=0,
            max_batch=max_batch,
            replica_torch_threads=threads,
            call_timeout_s=3600,
        )
        self.name = backend
        self.pool = ReplicaPool(settings)
        self.pool.info(backend)  # wait for the model to load
        self.tokenizer = self.pool.tokenizer(backend)

    def alone(self, r: GenerationRequest) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        out = self.pool.generate(self.name, r)
        return time.perf_counter() - t0, out.result

    def burst(self, reqs: list[GenerationRequest]) -> list[tuple[float, dict[str, Any]]]:
        with ThreadPoolExecutor(len(reqs)) as ex:
            return list(ex.map(self.alone, reqs))

    def close(self) -> None:
        import ray

        for handle in self.pool.handles(self.name):
            ray.kill(handle, no_restart=True)


def warm_up(server: Any, reqs: list[GenerationRequest], levels: tuple[int, ...], full: bool):
    """Untimed: the shapes the timed runs will see (all of them with ``full``)."""
    for r in reqs[: max(levels)] if full else reqs[:1]:
        server.alone(fresh(r, "warmup"))
    for n in levels if full else ():
        server.burst([fresh(r, f"warmup{n}") for r in reqs[:n]])


def bench_backend(
    server: Any, reqs: list[GenerationRequest], levels: tuple[int, ...], full_warmup: bool
) -> dict:
    warm_up(server, reqs, levels, full_warmup)
    sequential = [server.alone(fresh(r, "seq")) for r in reqs[: max(levels)]]
    seq_lat = [t for t, _ in sequential]
    rows = []
    for n in levels:
        t0 = time.perf_counter()
        served = server.burst([fresh(r, f"c{n}") for r in reqs[:n]])
        wall = time.perf_counter() - t0
        lat = [t for t, _ in served]
        tokens = sum(res["tokens_generated"] for _, res in served)
        seq_wall = sum(seq_lat[:n])
        seq_tokens = sum(res["tokens_generated"] for _, res in sequential[:n])
        identical = sum(
            a["token_ids"] == b["token_ids"]
            for (_, a), (_, b) in zip(served, sequential[:n], strict=True)
        )
        rows.append(
            {
                "concurrency": n,
                "wall_s": round(wall, 3),
                "requests_per_s": round(n / wall, 3),
                "tokens_per_s": round(tokens / wall, 1),
                "latency_p50_s": round(percentile(lat, 50), 3),
                "latency_p95_s": round(percentile(lat, 95), 3),
                "sequential_wall_s": round(seq_wall, 3),
                "sequential_requests_per_s": round(n / seq_wall, 3),
                "sequential_tokens_per_s": round(seq_tokens / seq_wall, 1),
                # one-at-a-time server, same burst: request k waits for the k-1 before it
                "sequential_latency_p50_s": round(percentile(_queued(seq_lat[:n]), 50), 3),
                "sequential_latency_p95_s": round(percentile(_queued(seq_lat[:n]), 95), 3),
                "throughput_ratio": round(seq_wall / wall, 2),
                "identical_to_alone": f"{identical}/{n}",
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "alone_latency_p50_s": round(percentile(seq_lat, 50), 3),
        "alone_latency_p95_s": round(percentile(seq_lat, 95), 3),
        "mean_tokens": round(statistics.mean(r["tokens_generated"] for _, r in sequential), 1),
        "mean_forward_passes": round(
            statistics.mean(r["forward_passes"] for _, r in sequential), 1
        ),
        "levels": rows,
    }


def _queued(latencies: list[float]) -> list[float]:
    total, out = 0.0, []
    for t in latencies:
        total += t
        out.append(total)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transport", choices=("ray", "inprocess"), default="ray")
    p.add_argument("--backends", default="diffusion,ar")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)))
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="in-process weights (auto: float32 on CPU, bf16 for the real pair on a GPU)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="in-process on a GPU: replay each pass from a CUDA graph (default: eager passes)",
    )
    p.add_argument("--weights", default="auto", help="auto and/or random, comma-separated")
    p.add_argument("--warmup", choices=("auto", "one", "all"), default="auto")
    p.add_argument("--ar-checkpoint")
    p.add_argument("--diffusion-checkpoint")
    p.add_argument("--name", default="serving_cpu", help="bench/results/<name>.json")
    p.add_argument("--out", help="write <name>.json here instead of bench/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = tuple(int(x) for x in args.levels.split(","))
    root = Path(tempfile.mkdtemp(prefix="dllmflow-bench-ckpt-"))
    full_warmup = args.warmup == "all" or (args.warmup == "auto" and args.device.startswith("cuda"))
    report: dict[str, Any] = {
        "transport": args.transport,
        "warmup": "all" if full_warmup else "one",
        "device": args.device if args.transport == "inprocess" else "cpu (Ray replica)",
        "torch_threads": args.threads,
        "dtype": args.dtype,
        "cuda_graphs": args.device.startswith("cuda") and args.cuda_graphs,
        "max_new_tokens": args.max_new_tokens,
        "max_batch": args.max_batch,
        "backends": {},
    }
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    for weights in args.weights.split(","):
        for backend in args.backends.split(","):
            given = getattr(args, f"{backend}_checkpoint")
            ckpt, origin = checkpoint_for(backend, given, root / weights, weights)
            if args.transport == "ray":
                server: Any = OverRay(backend, ckpt, args.max_batch, args.threads)
            else:
                server = InProcess(ckpt, args.device, args.max_batch, args.dtype, args.cuda_graphs)
            try:
                reqs = make_requests(max(levels), args.max_new_tokens, server.tokenizer)
                result = bench_backend(server, reqs, levels, full_warmup)
            finally:
                server.close()
            key = backend if weights == "auto" else f"{backend} ({weights} weights)"
            report["backends"][key] = {"checkpoint": origin, **result}
    if args.transport == "ray":
        import ray

        ray.shutdown()
    return _write(args, report)


def _write(args: argparse.Namespace, report: dict[str, Any]) -> int:
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        report = {"command": " ".join(["python", *sys.argv]), **report}
        text = json.dumps(report, indent=2)
        print(text)
        (Path(args.out) / f"{args.name}.json").write_text(text + "\n")
        return 0
    from bench.common import record

    record(args.name, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
