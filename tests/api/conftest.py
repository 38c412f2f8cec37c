"""The API served by a real uvicorn on a free port against the session's embedded stack, plus
seeded episodes, checkpoints, a dead letter and an eval run to look at."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from dllmflow.api.app import create_app
from dllmflow.api.auth import ensure_api_token
from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.db import transaction
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import EvalRun
from dllmflow.store.streams import DeadLetter, DeadLetterQueue
from tests.conftest import free_ports
from tests.workflows import conftest as workflow_fixtures

# Backend labels used only by the seeded rows, so metric assertions are exact.
SEEDED_DLLM = "seed-dllm"
SEEDED_AR = "seed-ar"


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def api_token(stack: Settings) -> str:
    return ensure_api_token(stack)


@pytest.fixture(scope="session")
def api_url(stack: Settings, api_token: str) -> Iterator[str]:
    server = LiveServer(stack).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def client(api_url: str, api_token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
def anon(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as c:
        yield c


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream body into {"event", "id", "data"} dicts (comments skipped)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data" and "data" in event:
                event["data"] += "\n" + value
            else:
                event[name] = value


@dataclass
class Seeded:
    completed: str
    running: str
    dead: str
    dead_entry: str
    eval_run: str
    checkpoint_ids: list[int]


def _turn(
    text: str,
    tool: str | None,
    args: dict[str, Any],
    backend: str,
    valid: bool = True,
    tokens: int = 0,
    passes: int = 0,
) -> dict[str, Any]:
    return {
        "text": text,
        "thinking": text,
        "action": {"tool": tool, "args": args} if valid else None,
        "valid": valid,
        "error": None if valid else "the action is not valid JSON",
        "repaired": False,
        "stats": {
            "backend": backend,
            "tokens": tokens,
            "forward_passes": passes,
            "refinement_passes": passes,
            "decode_s": 0.5,
        },
    }


def seed(settings: Settings) -> Seeded:
    episodes, checkpoints = EpisodeRepository(settings), CheckpointStore(settings)
    tag = uuid.uuid4().hex[:8]
    ep = episodes.create(question=f"Which seeded world is {tag}?", policy="routed", budgets={})
    # step, kind, role, backend, payload, timings, tool result (None: no tool call)
    plan = _turn("Plan: search it.", "search", {"query": tag}, SEEDED_DLLM, tokens=48, passes=12)
    seek = _turn("Fetch the hit.", "fetch", {"id": "d1"}, SEEDED_DLLM, tokens=32, passes=8)
    bad = _turn("<action>{oops", None, {}, SEEDED_DLLM, valid=False, tokens=16, passes=4)
    write = _turn(
        "Answer.", "answer", {"answer": "blue", "sources": ["d1"]}, SEEDED_AR, tokens=20, passes=20
    )
    steps = [
        (0, "plan", "planner", SEEDED_DLLM, plan, 0.40, [{"id": "d1", "title": "Seeded doc"}]),
        (1, "seek", "seeker", SEEDED_DLLM, seek, 0.30, {"id": "d1", "text": "It is blue."}),
        (2, "seek", "seeker", SEEDED_DLLM, bad, 0.20, None),
        (3, "write", "writer", SEEDED_AR, write, 0.90, None),
    ]
    ids, waterfall = [], []
    for step, kind, role, backend, payload, decode_s, result in steps:
        cp, _ = checkpoints.save(
            episode_id=ep.id,
            step=step,
            kind=kind,
            key=f"{ep.id}/{step}/{kind}",
            payload=payload,
            role=role,
            backend=backend,
            model=f"{backend}-model",
            timings={"queue_s": 0.05, "decode_s": decode_s},
        )
        ids.append(cp.id)
        tool_s = 0.0
        if result is not None:
            tool_s = 0.25
            tool, _ = checkpoints.save(
                episode_id=ep.id,
                step=step,
                kind="tool",
                key=f"{ep.id}/{step}/tool",
                payload={
                    "action": payload["action"],
                    "ok": True,
                    "result": result,
                    "error": None,
                    "latency_s": tool_s,
                },
                role=role,
                backend="tool",
                model=payload["action"]["tool"],
                timings={"tool_s": tool_s},
            )
            ids.append(tool.id)
        waterfall.append(
            {
                "step": step,
                "role": role,
                "backend": backend,
                "tool": (payload["action"] or {}).get("tool"),
                "timings": {
                    "queue": 0.05,
                    "decode": decode_s,
                    "tool": tool_s,
                    "checkpoint": 0.01,
                    "orchestration": 0.02,
                },
            }
        )
    episodes.update(
        ep.id,
        status="completed",
        answer="blue",
        sources=["d1"],
        metrics={"turns": 4, "tool_calls": 2, "invalid_actions": 1, "waterfall": waterfall},
    )

    running = episodes.create(question=f"Still thinking {tag}?", policy="diffusion", budgets={})
    episodes.update(running.id, status="running")

    dead = episodes.create(question=f"Doomed {tag}?", policy="diffusion", budgets={})
    episodes.update(dead.id, status="dead_lettered", error="invalid action repeated 3 times")
    entry = DeadLetterQueue(settings).add(
        DeadLetter(
            episode_id=dead.id,
            step=2,
            kind="seek",
            error="invalid action repeated 3 times",
            attempts=3,
            last_checkpoint_id=None,
            policy="diffusion",
            budgets={},
            at=time.time(),
        )
    )

    run_id = f"eval-{tag}"
    summary = {
        "accuracy": 0.5,
        "latency_mean_s": 10.0,
        "turns_per_episode": 13.0,
        "waterfall_mean_s": {
            "queue": 1.0,
            "decode": 6.0,
            "tool": 2.0,
            "checkpoint": 0.5,
            "orchestration": 0.5,
        },
    }
    with transaction(settings) as session:
        session.add(
            EvalRun(
                id=run_id,
                name=f"seeded comparison {tag}",
                status="completed",
                config={},
                metrics={
                    "policies": {
                        "ar": {**summary, "latency_mean_s": 14.0},
                        "diffusion": summary,
                    },
                    "ab_shadow": {"arms": {}, "recommendation": "not enough data"},
                },
            )
        )
    return Seeded(ep.id, running.id, dead.id, entry, run_id, ids)


@pytest.fixture(scope="session")
def seeded(stack: Settings) -> Seeded:
    return seed(stack)


# --- a real episode, run by a Temporal worker, followed over SSE ----------------------------

# The workflow tests' generated world (loaded into the default corpus) gives the oracle real
# multi-hop questions; sharing the fixture keeps one world per session.
world_questions = workflow_fixtures.world_questions


@pytest.fixture(scope="session")
def episode_worker(stack: Settings) -> str:
    """The stack's own worker process, live on the task queue; a missing one fails the test
    (it is part of what these tests check) rather than being stood in for."""
    from dllmflow.stack.health import check_worker
    from dllmflow.stack.process import wait_until

    if not wait_until(lambda: check_worker(stack).healthy, 60):
        pytest.fail(f"the stack's episode worker is not running: {check_worker(stack).detail}")
    return "stack"


@dataclass
class FollowedEpisode:
    id: str
    record: dict[str, Any]
    events: list[dict[str, Any]]


def submit(client: httpx.Client, record: dict[str, Any], policy: str, **budgets: int) -> str:
    """Submit one world question over HTTP; returns the new episode's id."""
    body = {"question": record["question"], "policy": policy, "question_record": record}
    reply = client.post("/api/episodes", json={**body, "budgets": budgets})
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def follow(
    client: httpx.Client,
    episode_id: str,
    timeout: float = 120.0,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    events = []
    with client.stream(
        "GET",
        f"/api/episodes/{episode_id}/events",
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=10),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response):
            events.append(event)
            if event["event"] == "end":
                break
    return events


@pytest.fixture(scope="session")
def oracle_episode(
    api_url: str, api_token: str, episode_worker: str, world_questions: list[dict[str, Any]]
) -> FollowedEpisode:
    """One oracle episode submitted over HTTP and followed over SSE until it ended."""
    record = world_questions[0]  # the most hops
    headers = {"Authorization": f"Bearer {api_token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as c:
        episode_id = submit(c, record, "oracle")
        return FollowedEpisode(episode_id, record, follow(c, episode_id))
