"""What a `dllmflow bench faults` batch's episodes ran on, and whether batching changed a turn.

Reads the rows the campaign left in the embedded stack (run it with the campaign's DLLMFLOW_*
settings; the rows of earlier runs are kept).

  queues FILE   per workflow task queue: episodes by status, and the batch's searches (empty)
                and fetches (failed): the campaign's corpus or another one
  decode FILE   rebuilds each diffusion turn's prompt from its checkpoints (question + history,
                rendered as the worker renders it) and decodes it alone, all at once
                (generate_batch) and through the BatchScheduler with staggered arrivals; prints
                how many token-id lists match, and how many texts match the checkpoint's

FILE is the campaign's JSON; --fault picks one of its faults (default: the first), --status
keeps the episodes of one final status (e.g. dead_lettered), --limit caps the turns decoded.

  PYTHONPATH=. python bench/faults_forensics.py queues bench/results/faults_200x32_temporal.json
  PYTHONPATH=. python bench/faults_forensics.py decode bench/results/faults_200x32_rest.json \\
      --limit 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# The repository root first, this folder last: its kernels.py would otherwise shadow the
# `kernels` package that transformers imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)

from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.workflows.activities import history_steps
from dllmflow.workflows.types import Budgets


def batch_ids(path: Path, fault: int) -> list[str]:
    return json.loads(path.read_text())["faults"][fault]["episode_ids"]


def queues(settings: Settings, ids: list[str]) -> None:
    from dllmflow.workflows.service import EpisodeService

    repo, store = EpisodeRepository(settings), CheckpointStore(settings)

    async def described() -> dict[str, str]:
        svc = await EpisodeService.connect(settings)
        return {i: (await svc.handle(repo.get(i)).describe()).task_queue for i in ids}

    on_queue = asyncio.run(described())
    episodes: Counter[tuple[str, str]] = Counter()
    tools: Counter[tuple[str, str, str]] = Counter()
    for episode_id in ids:
        queue = on_queue[episode_id]
        episodes[(queue, repo.get(episode_id).status)] += 1
        for cp in store.for_episode(episode_id):
            if cp.kind != "tool":
                continue
            p = cp.payload
            empty = not p["ok"] or not p.get("result")
            tools[(queue, p["action"]["tool"], "empty/failed" if empty else "found")] += 1
    for (queue, status), n in sorted(episodes.items()):
        print(f"{queue:24} {status:14} {n:5} episodes")
    for (queue, tool, outcome), n in sorted(tools.items()):
        print(f"{queue:24} {tool:14} {n:5} {outcome}")


def diffusion_turns(settings: Settings, ids: list[str], status: str | None) -> list[dict[str, Any]]:
    repo, store = EpisodeRepository(settings), CheckpointStore(settings)
    turns = []
    for episode_id in ids:
        episode = repo.get(episode_id)
        if status is not None and episode.status != status:
            continue
        stored = store.for_episode(episode_id)
        question = {**episode.question_record, "question": episode.question}
        for cp in stored:
            routing = (cp.payload.get("stats") or {}).get("routing") or {}
            # A repaired turn's checkpoint holds the second decode (its prompt has a prefix).
            if cp.backend != "diffusion" or routing.get("repair_prefix_chars"):
                continue
            history = history_steps([c for c in stored if c.step < cp.step])
            turns.append(
                {
                    "cp": cp,
                    "question": question,
                    "history": history,
                    "max_denoise_steps": Budgets(**episode.budgets).max_denoise_steps,
                }
            )
    return turns


def decode(turns: list[dict[str, Any]]) -> None:
    import torch

    from dllmflow.agent.prompting import CONTEXT_TOKENS, render_context
    from dllmflow.models.loader import load_backend
    from dllmflow.models.sampling.base import GenerationRequest
    from dllmflow.workers.serving.scheduler import BatchScheduler
    from dllmflow.workers.serving.settings import ServingSettings

    torch.set_num_threads(1)  # as a replica runs on CPU (replica_torch_threads)
    serving = ServingSettings()
    backend = load_backend("diffusion", device="cpu", slot="diffusion")
    sampler, tokenizer = backend.sampler, backend.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # ModelTurnGenerator.build_request's sizing, for the local diffusion slot.
    room = sampler.max_position - serving.max_new_tokens - sampler.prompt_slack - 16
    budget = getattr(backend.model.config, "context_tokens", None) or CONTEXT_TOKENS

    def requests() -> list[GenerationRequest]:
        return [
            GenerationRequest(
                prompt=render_context(
                    t["cp"].role,
                    t["question"],
                    t["history"],
                    max_tokens=max(32, min(budget, room)),
                    count_tokens=count,
                ),
                max_new_tokens=serving.max_new_tokens,
                tau=serving.tau,
                max_denoise_steps=t["max_denoise_steps"],
                request_id=f"turn-{i}",
            )
            for i, t in enumerate(turns)
        ]

    t0 = time.perf_counter()
    alone = [sampler.generate(r) for r in requests()]
    t1 = time.perf_counter()
    together = sampler.generate_batch(requests(), max_batch=serving.max_batch)
    t2 = time.perf_counter()
    scheduler, rng = BatchScheduler(sampler, max_batch=serving.max_batch), random.Random(0)
    tickets = []
    for request in requests():
        tickets.append(scheduler.submit(request))
        time.sleep(rng.uniform(0, 0.05))
    staggered = [ticket.result().result for ticket in tickets]
    scheduler.stop()
    t3 = time.perf_counter()
    invalid = [not t["cp"].payload.get("valid") for t in turns]
    same_text = [a.text == t["cp"].payload["text"] for a, t in zip(alone, turns, strict=True)]
    print(f"{len(turns)} turns ({sum(invalid)} invalid in the run)")
    print(f"  batched == alone (token ids):   {_same(alone, together)}  ({t2 - t1:.0f}s)")
    print(f"  staggered == alone (token ids): {_same(alone, staggered)}  ({t3 - t2:.0f}s)")
    print(f"  alone == checkpoint's text:     {sum(same_text)}  ({t1 - t0:.0f}s alone)")
    stops = Counter(a.stop_reason for a, bad in zip(alone, invalid, strict=True) if bad)
    print(f"  stop reasons of the invalid turns, alone: {dict(stops)}")


def _same(a: list[Any], b: list[Any]) -> int:
    return sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("queues", "decode"))
    parser.add_argument("file", type=Path)
    parser.add_argument("--fault", type=int, default=0)
    parser.add_argument("--status", default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    settings = Settings()
    ids = batch_ids(args.file, args.fault)
    if args.what == "queues":
        queues(settings, ids)
        return
    turns = diffusion_turns(settings, ids, args.status)
    random.Random(0).shuffle(turns)
    decode(turns[: args.limit])


if __name__ == "__main__":
    main()
