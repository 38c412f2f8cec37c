"""Activity dispatch latency: the gap from ActivityTaskScheduled to ActivityTaskStarted in the
event histories of oracle episodes (tests/workflows/test_dispatch.py checks the behaviour; the
timing lives here).

With eager activity execution (stack/components.py enables it on the embedded server) the server
marks the activity started while it completes the workflow task that scheduled it, so the gap is
tens of microseconds; an activity matched to a poller through the task queue takes milliseconds.

    python bench/dispatch.py [--episodes 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from common import bench_stack, percentile, record

from dllmflow.store.corpus import DEFAULT_CORPUS, load_documents
from dllmflow.workflows.service import EpisodeService
from dllmflow.world.generator import generate_world

EAGER_MEDIAN_S = 0.001  # above this the activities are not being dispatched eagerly


def scheduled_to_started(history) -> list[float]:
    scheduled, gaps = {}, []
    for event in history.events:
        kind = event.WhichOneof("attributes")
        at = event.event_time.ToMicroseconds() / 1e6
        if kind == "activity_task_scheduled_event_attributes":
            scheduled[event.event_id] = at
        elif kind == "activity_task_started_event_attributes":
            started = event.activity_task_started_event_attributes
            gaps.append(at - scheduled[started.scheduled_event_id])
    return gaps


async def run(settings, questions) -> list[float]:
    svc = await EpisodeService.connect(settings)
    gaps: list[float] = []
    for q in questions:
        episode = await svc.submit(q["question"], policy="oracle", question_record=q)
        result = await svc.wait(episode.id, timeout=300)
        if result.status != "completed":
            raise SystemExit(f"episode {episode.id} ended {result.status}")
        handle = svc.client.get_workflow_handle(episode.workflow_id)
        gaps += scheduled_to_started(await handle.fetch_history())
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    args = parser.parse_args()
    with bench_stack() as settings:
        world = generate_world(9002, n_questions=max(args.episodes, 8))
        load_documents(settings, world.documents, corpus=DEFAULT_CORPUS)
        gaps = asyncio.run(run(settings, world.questions[: args.episodes]))
    median = statistics.median(gaps)
    record(
        "dispatch",
        {
            "episodes": args.episodes,
            "activities": len(gaps),
            "scheduled_to_started_s": {
                "p50": median,
                "p95": percentile(gaps, 95),
                "max": max(gaps),
            },
            "eager": median < EAGER_MEDIAN_S,
        },
    )
    if median >= EAGER_MEDIAN_S:
        raise SystemExit(f"median dispatch gap {median * 1e3:.2f} ms: activities are not eager")


if __name__ == "__main__":
    main()
