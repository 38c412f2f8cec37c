"""Orchestration overhead of durable episodes, against the same loop run in-process.

Per activity: the Temporal round trip not spent queueing, decoding or in tools ("orchestration")
and the checkpoint write, p50/p95, from the waterfall every episode records. Throughput: oracle
episodes per minute at 1, 8 and 32 concurrent episodes through Temporal, and the same questions
through the in-process loop (dllmflow.models.episode.run_episode on the same Postgres tools) as
the baseline, so the ratio is the price of durability on this machine.

    python bench/orchestration.py [--episodes-per-level 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta

from common import bench_stack, percentile, record
from temporalio import activity, workflow
from temporalio.worker import Worker

from dllmflow.models.episode import run_episode
from dllmflow.models.oracle import oracle_turn
from dllmflow.models.world import generate_world
from dllmflow.store.corpus import DEFAULT_CORPUS, load_documents
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.workers.episode_worker import temporal_client
from dllmflow.workers.tools import CorpusTools
from dllmflow.workflows.service import EpisodeService

LEVELS = (1, 8, 32)
NOOP_ACTIVITIES = 40


@activity.defn(name="bench_noop")
async def noop_activity(value: int) -> int:
    return value


@workflow.defn(name="BenchNoopWorkflow", sandboxed=False)
class NoopWorkflow:
    """The floor: Temporal round trips of an activity that does nothing, timed in the workflow."""

    @workflow.run
    async def run(self, count: int) -> list[float]:
        trips = []
        for i in range(count):
            sent = workflow.time()
            await workflow.execute_activity(
                noop_activity, i, start_to_close_timeout=timedelta(seconds=30)
            )
            trips.append(workflow.time() - sent)
        return trips


async def temporal_floor(settings) -> list[float]:
    client = await temporal_client(settings)
    queue = "bench-noop"
    async with Worker(
        client, task_queue=queue, workflows=[NoopWorkflow], activities=[noop_activity]
    ):
        return await client.execute_workflow(
            NoopWorkflow.run, NOOP_ACTIVITIES, id=f"bench-noop-{time.time_ns()}", task_queue=queue
        )


async def durable_run(settings, questions, concurrency: int) -> tuple[float, list[str]]:
    svc = await EpisodeService.connect(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(record_: dict) -> str:
        async with gate:
            ep = await svc.submit(record_["question"], policy="oracle", question_record=record_)
            result = await svc.wait(ep.id, timeout=600)
            assert result.status == "completed", result
            return ep.id

    start = time.perf_counter()
    ids = await asyncio.gather(*(one(q) for q in questions))
    return time.perf_counter() - start, list(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-level", type=int, default=32)
    args = parser.parse_args()

    with bench_stack() as settings:
        world = generate_world(9001, n_questions=max(args.episodes_per_level, 32))
        load_documents(settings, world.documents, corpus=DEFAULT_CORPUS)
        questions = world.questions[: args.episodes_per_level]

        tools = CorpusTools(settings)
        start = time.perf_counter()
        for q in questions:
            run_episode(
                lambda role, question, history: oracle_turn(role, question, history), q, tools
            )
        baseline_s = time.perf_counter() - start
        baseline_rate = len(questions) / baseline_s * 60

        floor = asyncio.run(temporal_floor(settings))
        levels, orchestration, checkpoint = [], [], []
        repo = EpisodeRepository(settings)
        for level in LEVELS:
            seconds, ids = asyncio.run(durable_run(settings, questions, level))
            rate = len(ids) / seconds * 60
            levels.append(
                {
                    "concurrency": level,
                    "episodes": len(ids),
                    "seconds": seconds,
                    "episodes_per_minute": rate,
                    "ratio_vs_in_process": rate / baseline_rate,
                }
            )
            for episode_id in ids:
                for row in repo.get(episode_id).metrics["waterfall"]:
                    if level == 1:  # overhead is measured without contention
                        orchestration.append(row["timings"]["orchestration"])
                        checkpoint.append(row["timings"]["checkpoint"])
            print(f"concurrency {level}: {rate:.1f} episodes/min", flush=True)

    ms = lambda xs, q: round(percentile(xs, q) * 1000, 2)  # noqa: E731
    record(
        "orchestration",
        {
            "in_process_baseline": {
                "episodes": len(questions),
                "seconds": baseline_s,
                "episodes_per_minute": baseline_rate,
            },
            "durable": levels,
            "per_step_overhead_ms": {
                "orchestration_p50": ms(orchestration, 50),
                "orchestration_p95": ms(orchestration, 95),
                "checkpoint_write_p50": ms(checkpoint, 50),
                "checkpoint_write_p95": ms(checkpoint, 95),
                "steps": len(orchestration),
                "temporal_noop_activity_round_trip_p50": ms(floor, 50),
                "temporal_noop_activity_round_trip_p95": ms(floor, 95),
                "note": "a step = model turn + its tool call (2 activities); orchestration is "
                "summed over both activities' round trips minus queue, decode, tool and "
                "checkpoint time. The no-op round trip (same server, an activity that does "
                "nothing) is the floor for one activity.",
            },
            "targets": {"orchestration_p50_ms_per_activity": 15, "checkpoint_write_p50_ms": 5},
        },
    )


if __name__ == "__main__":
    main()
