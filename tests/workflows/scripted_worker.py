"""A Temporal worker process whose model turns follow a script instead of a model.

Everything but the text of a turn is the product's: EpisodeWorkflow and its activities, the
action parser, the one-shot repair and writer_check, checkpoints in Postgres, the dead-letter
queue and progress in Redis, the real search/fetch tools. The script is chosen per episode by
its question record's "script" (see ScriptedGenerator); a test spawns this module with
spawn_scripted_worker on a task queue of its own, so the stack's worker never sees these
episodes.

    python -m tests.workflows.scripted_worker     (DLLMFLOW_* settings from the environment)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from dllmflow.config import Settings, get_settings
from dllmflow.workers.turns import GeneratedTurn, GenerateRequest, ProgressCallback

ROOT = Path(__file__).resolve().parents[2]
# Set in the worker's environment: the first planner turn it decodes freezes the whole process
# (SIGSTOP to itself) after its first progress event, like a worker stuck mid-decode.
STALL_ENV = "DLLMFLOW_TEST_STALL_FIRST_DECODE"
DENOISE_STEPS_NEEDED = 512  # "denoise-hungry": the seeker's action settles only with this many


def turn(thinking: str, action: dict[str, Any] | str) -> str:
    body = action if isinstance(action, str) else json.dumps(action)
    return f"<think>{thinking}</think><action>{body}</action>"


def search(query: str) -> dict[str, Any]:
    return {"tool": "search", "args": {"query": query}}


ANSWER = {"tool": "answer", "args": {"answer": "scripted answer", "sources": []}}
UNSETTLED = '{"tool": "fetch", "args": {'  # an action span that never closed its JSON
NO_VALUE = '"}}</action>'  # a repair that closes the skeleton's value empty


class ScriptedGenerator:
    """Turn text by script (question_record["script"]):

    - "denoise-hungry": the planner searches; the seeker's action is broken JSON (and its repair
      writes no value) unless the turn's denoising budget is at least DENOISE_STEPS_NEEDED,
      then it answers; the writer answers.
    - "repair": the planner's first decode has a schema error and its repair (the value written
      after the same thinking and the search skeleton, agent.repair) is the question; the
      seeker answers; the writer's first decode calls search (writer_check refuses it) and its
      repair (after the answer skeleton) writes the answer.
    - "no-answer": the planner searches, the seeker answers, the writer only ever calls search
      and its repairs write no answer.

    A repair's text is its prefix plus what follows it, as the model client returns it.
    - anything else: the planner searches, the seeker answers, the writer answers.
    """

    def __init__(self) -> None:
        self.stall = os.environ.get(STALL_ENV) == "1"

    def generate(self, request: GenerateRequest, on_progress: ProgressCallback) -> GeneratedTurn:
        script = request.question.get("script")
        query = request.question["question"]
        on_progress({"event": "refinement", "pass": 1})
        if self.stall and request.role == "planner":
            os.kill(os.getpid(), signal.SIGSTOP)  # frozen mid-decode: no heartbeats either
        prefix = request.repair_prefix
        role = request.role
        if script == "denoise-hungry" and role == "seeker":
            if request.max_denoise_steps >= DENOISE_STEPS_NEEDED:
                text = turn("The budget let the action settle.", ANSWER)
            else:
                text = turn("The action span has not settled.", UNSETTLED)
                if prefix:
                    text = prefix + NO_VALUE
        elif script == "repair" and role == "planner":
            text = turn("Search for the question first.", {"tool": "search", "args": {"query": 7}})
            if prefix:
                text = prefix + query + '"}}</action>'
        elif script == "repair" and role == "writer":
            text = turn("Write the answer.", search(query))
            if prefix:
                text = prefix + ANSWER["args"]["answer"] + '", "sources": []}}</action>'
        elif script == "no-answer" and role == "writer":
            text = turn("Maybe one more search.", search(query))
            if prefix:
                text = prefix + NO_VALUE
        elif role == "planner":
            text = turn("Search for the question first.", search(query))
        else:
            text = turn("That is enough to answer.", ANSWER)
        return GeneratedTurn(text=text, backend="scripted", model=f"scripted-{script}")


async def run(settings: Settings) -> None:
    from temporalio.worker import Worker

    from dllmflow.workers.episode_worker import (
        MAX_CONCURRENT_ACTIVITIES,
        heartbeat_forever,
        preload_activity_modules,
        temporal_client,
        workflow_runner,
    )
    from dllmflow.workflows.activities import EpisodeActivities
    from dllmflow.workflows.episode import EpisodeWorkflow

    preload_activity_modules()
    client = await temporal_client(settings)
    scripted = ScriptedGenerator()
    activities = EpisodeActivities(settings, {"ar": scripted, "diffusion": scripted})
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_ACTIVITIES) as pool:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[EpisodeWorkflow],
            workflow_runner=workflow_runner(),
            activities=activities.all(),
            activity_executor=pool,
            max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
            # Few outstanding polls and a short sticky wait: a frozen worker holds at most one
            # activity task and one workflow task it never starts, so the next attempt reaches
            # the other worker soon.
            max_concurrent_activity_task_polls=1,
            max_concurrent_workflow_task_polls=2,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            beating = asyncio.create_task(heartbeat_forever(settings))
            try:
                await stop.wait()
            finally:
                beating.cancel()


def spawn_scripted_worker(
    settings: Settings, extra_env: dict[str, str] | None = None, timeout: float = 90.0
) -> subprocess.Popen:
    """This module as a worker process on settings.task_queue, returned once it is live."""
    from dllmflow.stack.components import StackError, settings_env
    from dllmflow.stack.health import check_worker
    from dllmflow.stack.liveness import live_workers
    from dllmflow.stack.process import wait_until

    env = {**os.environ, **settings_env(settings), **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.workflows.scripted_worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def live() -> bool:
        return check_worker(settings).healthy and proc.pid in {
            beat.pid for beat in live_workers(settings)
        }

    if not wait_until(live, timeout):
        proc.kill()
        raise StackError(f"scripted worker for {settings.task_queue!r} did not start polling")
    return proc


def stop_worker(proc: subprocess.Popen) -> None:
    proc.kill()  # also ends a worker frozen by SIGSTOP
    proc.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(run(get_settings()))
