"""Orchestration overhead of durable episodes, against the same loop run in-process.

Per activity: the Temporal round trip not spent queueing, decoding or in tools ("orchestration")
and the checkpoint write, p50/p95, from the waterfall every episode records and, split into where
it goes, from the episodes' Temporal event histories (workflow task dispatch, workflow task
processing, activity execution less the measured work). Throughput: oracle
episodes per minute at 1, 8 and 32 concurrent episodes through Temporal, and the same questions
through the in-process loop (dllmflow.agent.episode.run_episode on the same Postgres tools) as
the baseline, so the ratio is the price of durability on this machine.

    python bench/orchestration.py [--episodes-per-level 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from datetime import timedelta

from common import bench_stack, percentile, record
from temporalio import activity, workflow
from temporalio.worker import Worker

from dllmflow.agent.episode import run_episode
from dllmflow.store.corpus import DEFAULT_CORPUS, load_documents
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.workers.episode_worker import temporal_client
from dllmflow.workers.tools import CorpusTools
from dllmflow.workflows.service import EpisodeService
from dllmflow.world.generator import generate_world
from dllmflow.world.oracle import oracle_turn

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


# Per activity type: the timings (seconds, in its result) that are work, not orchestration.
MEASURED_WORK = {
    "model_turn": ("queue", "decode", "checkpoint"),
    "tool_call": ("tool", "checkpoint"),
}
ATTRS = "_event_attributes"


async def history_breakdown(settings, workflow_ids: list[str]) -> dict[str, list[float]]:
    """Each model turn / tool call's round trip as the workflow times it (workflow task start to
    workflow task start), less its measured work, split by the server's event timestamps:

    - workflow_task_processing: the worker runs the activation, the server records the commands
      (and, eagerly, the activity's start) -- from WorkflowTaskStarted to WorkflowTaskCompleted;
    - activity_execution: ActivityTaskStarted to ActivityTaskCompleted less the measured work
      (thread dispatch, reads, Redis, the completion RPC);
    - workflow_task_dispatch: the next WorkflowTaskScheduled to WorkflowTaskStarted.
    """
    client = await temporal_client(settings)
    out: dict[str, list[float]] = defaultdict(list)
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        events = [e async for e in handle.fetch_history_events()]
        by_id = {e.event_id: e for e in events}
        at = {e.event_id: e.event_time.ToMicroseconds() / 1e6 for e in events}
        kind = {e.event_id: (e.WhichOneof("attributes") or "").removesuffix(ATTRS) for e in events}
        for e in events:
            if kind[e.event_id] != "activity_task_completed":
                continue
            done = e.activity_task_completed_event_attributes
            scheduled = by_id[done.scheduled_event_id].activity_task_scheduled_event_attributes
            name = scheduled.activity_type.name
            if name not in MEASURED_WORK:
                continue
            sent_wft = by_id[scheduled.workflow_task_completed_event_id]
            sent_started = sent_wft.workflow_task_completed_event_attributes.started_event_id
            back_started = next(
                x.event_id
                for x in events
                if x.event_id > e.event_id and kind[x.event_id] == "workflow_task_started"
            )
            back_scheduled = by_id[back_started].workflow_task_started_event_attributes
            timings = json.loads(done.result.payloads[0].data)["timings"]
            work = sum(timings[k] for k in MEASURED_WORK[name])
            orchestration = max(0.0, at[back_started] - at[sent_started] - work)
            out["orchestration"].append(orchestration)
            out[f"orchestration_{name}"].append(orchestration)
            out["checkpoint_write"].append(timings["checkpoint"])
            out["workflow_task_processing"].append(at[sent_wft.event_id] - at[sent_started])
            out["activity_schedule_to_start"].append(
                at[done.started_event_id] - at[done.scheduled_event_id]
            )
            out["activity_execution"].append(at[e.event_id] - at[done.started_event_id] - work)
            out["workflow_task_dispatch"].append(
                at[back_started] - at[back_scheduled.scheduled_event_id]
            )
    return out


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
        levels, orchestration, checkpoint, breakdown = [], [], [], {}
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
            if level == 1:  # overhead is measured without contention
                for episode_id in ids:
                    for row in repo.get(episode_id).metrics["waterfall"]:
                        orchestration.append(row["timings"]["orchestration"])
                        checkpoint.append(row["timings"]["checkpoint"])
                workflow_ids = [repo.get(i).workflow_id for i in ids]
                breakdown = asyncio.run(history_breakdown(settings, workflow_ids))
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
            "per_activity_overhead_ms": {
                "orchestration_p50": ms(breakdown["orchestration"], 50),
                "orchestration_p95": ms(breakdown["orchestration"], 95),
                "model_turn_orchestration_p50": ms(breakdown["orchestration_model_turn"], 50),
                "tool_call_orchestration_p50": ms(breakdown["orchestration_tool_call"], 50),
                "checkpoint_write_p50": ms(breakdown["checkpoint_write"], 50),
                "checkpoint_write_p95": ms(breakdown["checkpoint_write"], 95),
                "activities": len(breakdown["orchestration"]),
                "split_p50": {
                    part: ms(breakdown[part], 50)
                    for part in (
                        "workflow_task_processing",
                        "activity_schedule_to_start",
                        "activity_execution",
                        "workflow_task_dispatch",
                    )
                },
                "note": "one row per model turn or tool call of the concurrency-1 episodes, "
                "from their Temporal event histories: the round trip the workflow times "
                "(workflow task start to workflow task start) less the work the activity "
                "measured (queue, decode, tool, checkpoint). split_p50 parts add up to it: "
                "workflow task processing (worker activation + the server recording its "
                "commands and the eager activity start), schedule to start (0 when eager), "
                "activity execution less its measured work (thread dispatch, reads, Redis, the "
                "completion RPC), and the dispatch of the next workflow task.",
            },
            "targets": {"orchestration_p50_ms_per_activity": 15, "checkpoint_write_p50_ms": 5},
        },
    )


if __name__ == "__main__":
    main()
