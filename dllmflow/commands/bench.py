"""`dllmflow bench load`: many oracle episodes at once with realistic tool latency.

A dedicated worker (its own task queue, with DLLMFLOW_TOOL_LATENCY set) serves the load so the
stack's regular worker is untouched. Reports throughput, latency percentiles, dead letters, lost
episodes (must be 0) and the memory high-water mark of the stack's and the worker's processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import typer

from dllmflow.commands.common import console, err_console, run_async, settings, user_errors

app = typer.Typer(help="Benchmarks that need the running stack.", no_args_is_help=True)

LOAD_CORPUS = "loadbench"
LOAD_QUEUE = "dllmflow-loadbench"


class MemoryWatch:
    """Samples the summed RSS of a set of process trees; keeps the maximum."""

    def __init__(self, pids: list[int], interval: float = 0.5) -> None:
        self.pids, self.interval, self.peak = pids, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@app.command("load")
@user_errors
def load(
    episodes: int = typer.Option(200, min=1),
    concurrency: int = typer.Option(32, min=1),
    tool_latency: str = typer.Option(
        "search=lognormal:0.4:1.2,fetch=lognormal:0.2:0.6",
        help="DLLMFLOW_TOOL_LATENCY for the load's worker.",
    ),
    out: Path = typer.Option(Path("bench/results/load.json"), help="Where to write the JSON."),
) -> None:
    """Run EPISODES oracle episodes, CONCURRENCY at a time, and report what happened."""
    from dllmflow.stack import manager
    from dllmflow.store.corpus import load_documents
    from dllmflow.store.streams import DeadLetterQueue
    from dllmflow.workers.episode_worker import spawn_worker
    from dllmflow.workers.tools.latency import LatencyProfile
    from dllmflow.world.generator import generate_world

    LatencyProfile.parse(tool_latency)  # fail fast, naming the bad entry
    base = settings()
    manager.up(base, progress=lambda m: err_console.print(f"[dim]{m}[/]"))
    load_settings = base.model_copy(update={"task_queue": LOAD_QUEUE})
    world = generate_world(31337, n_questions=min(episodes, 200))
    load_documents(base, world.documents, corpus=LOAD_CORPUS)
    questions = [world.questions[i % len(world.questions)] for i in range(episodes)]

    worker = spawn_worker(
        load_settings, {"DLLMFLOW_CORPUS": LOAD_CORPUS, "DLLMFLOW_TOOL_LATENCY": tool_latency}
    )
    try:
        dlq_before = DeadLetterQueue(base).depth()
        pids = [r.pid for r in manager.StackState(base.state_dir).load().values()] + [worker.pid]
        with MemoryWatch(pids) as memory:
            started = time.perf_counter()
            results = run_async(_drive(load_settings, questions, concurrency))
            wall = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    latencies = [r["seconds"] for r in results if r["status"] == "completed"]
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    report: dict[str, Any] = {
        "command": " ".join(["dllmflow", *sys.argv[1:]]),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "episodes": episodes,
        "concurrency": concurrency,
        "tool_latency": tool_latency,
        "wall_s": wall,
        "episodes_per_minute": len(results) / wall * 60,
        "by_status": by_status,
        "lost": episodes - len(results),
        "dead_lettered": DeadLetterQueue(base).depth() - dlq_before,
        "latency_s": {q: percentile(latencies, q) for q in (50, 95, 99)} if latencies else {},
        "memory_high_water_mb": round(memory.peak / 2**20, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print_json(data=report)
    if report["lost"]:
        raise typer.Exit(1)


async def _drive(s, questions: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    from dllmflow.workflows.service import EpisodeService

    svc = await EpisodeService.connect(s)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(record: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        async with gate:
            t0 = time.perf_counter()
            ep = await svc.submit(record["question"], policy="oracle", question_record=record)
            result = await svc.wait(ep.id, timeout=1800)
            done += 1
            if done % 10 == 0:
                err_console.print(f"[dim]{done}/{len(questions)} episodes finished[/]")
            return {
                "episode_id": ep.id,
                "status": result.status,
                "seconds": time.perf_counter() - t0,
            }

    return await asyncio.gather(*(one(q) for q in questions))


@app.command("faults")
@user_errors
def faults(
    episodes: int = typer.Option(200, min=1, help="Episodes per fault (a fresh batch each)."),
    concurrency: int = typer.Option(32, min=1, help="Episodes submitted and waited on at once."),
    fault_list: str = typer.Option(
        "redis:120,postgres:60,temporal:60,worker,ray-node",
        "--faults",
        help="component[:seconds down], comma-separated: redis, postgres, temporal (while "
        "submitting), worker (one of --workers SIGKILLed), ray-node (a second Ray node killed), "
        "none (a batch with no fault, for reference).",
    ),
    policy: str = typer.Option("routed", help="Episode policy; routed/ar/diffusion use models."),
    workers: int = typer.Option(2, min=1, help="Workers on the campaign's task queue."),
    ray_nodes: int = typer.Option(1, min=0, help="Extra Ray nodes on this host."),
    tool_latency: str = typer.Option(
        "search=fixed:0.5,fetch=fixed:0.5", help="DLLMFLOW_TOOL_LATENCY for the workers."
    ),
    deadline_s: float = typer.Option(1800.0, min=1, help="Per fault: the batch's time limit."),
    submit_interval_s: float = typer.Option(
        0.05, min=0, help="Question i is submitted no earlier than i x this many seconds."
    ),
    out: Path = typer.Option(Path("bench/results/faults.json"), help="Where to write the JSON."),
) -> None:
    """Break each component while a batch of episodes runs and count, from Postgres and
    Temporal, what completed, was dead-lettered, got stuck, ran twice or was lost.

    Embedded stack only (every server on 127.0.0.1); each outage lasts its full length with
    the supervisor paused; every wait is bounded by --deadline-s. Exit status 1 unless every
    fault ends with 0 stuck, 0 duplicated, 0 lost, 0 off the campaign's task queue and
    nothing refused.
    """
    from rich.table import Table

    from dllmflow.stack import faults as campaign
    from dllmflow.stack import manager
    from dllmflow.store.corpus import load_documents
    from dllmflow.workers.tools.latency import LatencyProfile
    from dllmflow.workflows.service import check_policy
    from dllmflow.world.generator import generate_world

    plan = campaign.parse_faults(fault_list)
    check_policy(policy)
    LatencyProfile.parse(tool_latency)
    base = settings()
    campaign.loopback_only(base)
    manager.up(base, progress=lambda m: err_console.print(f"[dim]{m}[/]"))
    world = generate_world(4242, n_questions=min(episodes, 200))
    load_documents(base, world.documents, corpus=campaign.FAULTS_CORPUS)
    runner = campaign.Campaign(
        base,
        world.questions,
        episodes=episodes,
        concurrency=concurrency,
        policy=policy,
        workers=workers,
        ray_nodes=ray_nodes,
        worker_env={
            "DLLMFLOW_CORPUS": campaign.FAULTS_CORPUS,
            "DLLMFLOW_TOOL_LATENCY": tool_latency,
        },
        deadline_s=deadline_s,
        submit_interval_s=submit_interval_s,
        progress=lambda m: err_console.print(f"[dim]{m}[/]", highlight=False),
    )
    started = time.perf_counter()

    def record(reports: list[campaign.FaultReport]) -> dict[str, Any]:
        report = describe(reports)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        return report

    def describe(reports: list[campaign.FaultReport]) -> dict[str, Any]:
        return {
            "command": " ".join(["dllmflow", *sys.argv[1:]]),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count()},
            "episodes_per_fault": episodes,
            "concurrency": concurrency,
            "policy": policy,
            "pair": os.environ.get("DLLMFLOW_PAIR", "tiny"),
            "workers": workers,
            "ray_nodes": ray_nodes,
            "tool_latency": tool_latency,
            "submit_interval_s": submit_interval_s,
            "wall_s": round(time.perf_counter() - started, 1),
            "faults_planned": [f.label for f in plan],
            "faults_done": len(reports),
            **campaign.summary(reports),
        }

    reports = runner.run(plan, on_report=record)  # written after each fault
    result = record(reports)
    columns = (
        "submitted",
        "completed",
        "dead_lettered",
        "stuck",
        "duplicated",
        "lost",
        "off_queue",
    )
    table = Table("fault", *columns, "wall s")
    for r in reports:
        table.add_row(r.fault, *(str(getattr(r, c)) for c in columns), f"{r.wall_s:.0f}")
    console.print(table)
    console.print(f"written to {out}", highlight=False)
    if not result["clean"]:
        for r in reports:
            for problem in r.problems[:10]:
                err_console.print(f"[red]{r.fault}[/]: {problem}", highlight=False)
        raise typer.Exit(1)
