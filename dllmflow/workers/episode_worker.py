"""The Temporal worker process: runs EpisodeWorkflow and its activities (`dllmflow worker`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from dllmflow.config import Settings, get_settings
from dllmflow.stack.liveness import HEARTBEAT_S, clear_heartbeat, write_heartbeat
from dllmflow.workers.turns import TurnGenerator
from dllmflow.workflows.activities import EpisodeActivities
from dllmflow.workflows.episode import EpisodeWorkflow

MAX_CONCURRENT_ACTIVITIES = 32
# Modules the activities import on first use. The workflow sandbox swaps the import machinery
# while it builds a workflow instance, and an activity thread importing a module for the first
# time at that moment deadlocked the worker on the two module locks (a model turn's first
# import of model_client while a new workflow started). Importing them up front avoids that.
ACTIVITY_MODULES = (
    "dllmflow.workers.model_client",
    "dllmflow.workers.tools",
    "dllmflow.world.oracle",
    "dllmflow.agent.actions",
    "dllmflow.world.generator",
    "dllmflow.store.executions",
)


def preload_activity_modules() -> None:
    import importlib

    for name in ACTIVITY_MODULES:
        importlib.import_module(name)


async def temporal_client(settings: Settings) -> Client:
    return await Client.connect(
        settings.effective_temporal_address, namespace=settings.temporal_namespace
    )


def workflow_runner() -> WorkflowRunner:
    """How EpisodeWorkflow runs in the worker (also used to replay histories in tests)."""
    return SandboxedWorkflowRunner()


def build_worker(  # called on the worker's running event loop
    client: Client,
    settings: Settings,
    pool: ThreadPoolExecutor,
    generators: dict[str, TurnGenerator] | None = None,
) -> Worker:
    activities = EpisodeActivities(settings, generators)
    # Model turns signal their workflow when a P-ReAct action is committed; the client's
    # calls run on this (the worker's) event loop.
    activities.connect_workflows(client, asyncio.get_running_loop())
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[EpisodeWorkflow],
        workflow_runner=workflow_runner(),
        activities=activities.all(),
        activity_executor=pool,
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
    )


async def run_worker(settings: Settings) -> None:
    preload_activity_modules()
    client = await temporal_client(settings)
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_ACTIVITIES) as pool:
        worker = build_worker(client, settings, pool)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            print(
                f"worker polling task queue {settings.task_queue!r} on "
                f"{settings.effective_temporal_address}",
                flush=True,
            )
            beating = asyncio.create_task(heartbeat_forever(settings))
            try:
                await stop.wait()
            finally:
                beating.cancel()
                clear_heartbeat(settings)


async def heartbeat_forever(settings: Settings) -> None:
    """This worker's own liveness record (stack.liveness), rewritten while it polls."""
    while True:
        try:
            await asyncio.to_thread(write_heartbeat, settings)
        except OSError as exc:
            print(f"worker heartbeat not written: {exc}", flush=True)
        await asyncio.sleep(HEARTBEAT_S)


def main() -> None:
    asyncio.run(run_worker(get_settings()))


if __name__ == "__main__":
    main()


def spawn_worker(
    settings: Settings,
    extra_env: dict[str, str] | None = None,
    timeout: float = 90.0,
    log_path: Path | None = None,
) -> subprocess.Popen:
    """Start a worker process for `settings` (its task queue) and wait until it polls.

    Used for dedicated workers: a load run with injected tool latency, fault tests that kill one.
    Its output goes to `log_path` (appended) when given, else nowhere.
    """
    from dllmflow.stack.components import StackError, settings_env
    from dllmflow.stack.health import check_worker
    from dllmflow.stack.process import wait_until

    env = {**os.environ, **settings_env(settings), **(extra_env or {})}
    log = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dllmflow.workers.episode_worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT if log_path is not None else subprocess.DEVNULL,
        )
    finally:
        if log_path is not None:
            log.close()  # the child keeps its own descriptor
    from dllmflow.stack.liveness import live_workers

    def polling() -> bool:  # this process's own heartbeat, not only another worker's
        mine = any(beat.pid == proc.pid for beat in live_workers(settings))
        return mine and check_worker(settings).healthy

    if not wait_until(polling, timeout):
        proc.kill()
        raise StackError(f"worker for task queue {settings.task_queue!r} did not start polling")
    return proc
