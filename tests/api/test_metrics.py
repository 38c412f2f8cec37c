"""Prometheus exposition computed from Postgres and Redis at scrape time."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetter, DeadLetterQueue
from tests.api.conftest import SEEDED_AR, SEEDED_DLLM, LiveServer
from tests.conftest import free_ports

pytestmark = pytest.mark.integration


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_are_counted_at_scrape_time(client: httpx.Client, stack, seeded) -> None:
    # Other tests add rows too, so the check is the change between two scrapes around writes
    # made here: one more completed episode, one more dead letter, one more tool call.
    completed = ("dllmflow_episodes", (("status", "completed"),))
    running = ("dllmflow_episodes", (("status", "running"),))
    depth = ("dllmflow_dlq_depth", ())
    tool = ("dllmflow_activity_seconds_count", (("backend", "tool"), ("kind", "tool")))
    before = scrape(client)
    assert before[running] >= 1 and before[depth] == DeadLetterQueue(stack).depth()
    episode = EpisodeRepository(stack).create(question="Counted?", policy="ar", budgets={})
    CheckpointStore(stack).save(
        episode_id=episode.id,
        step=0,
        kind="tool",
        key=f"{episode.id}/0/tool",
        payload={"action": None, "ok": True, "result": [], "error": None, "latency_s": 0.1},
        role="seeker",
        backend="tool",
        model="search",
        timings={"tool_s": 0.1},
    )
    EpisodeRepository(stack).update(episode.id, status="completed", answer="yes")
    DeadLetterQueue(stack).add(
        DeadLetter(
            episode_id=episode.id,
            step=0,
            kind="tool",
            error="counted",
            attempts=1,
            last_checkpoint_id=None,
            policy="ar",
            budgets={},
            at=time.time(),
        )
    )
    after = scrape(client)
    assert after[completed] == before[completed] + 1
    assert after[running] == before[running]
    assert after[depth] == before[depth] + 1
    assert after[tool] == before[tool] + 1


def test_metrics_cover_status_latency_adherence_and_tokens(client: httpx.Client, seeded) -> None:
    m = scrape(client)
    assert m[("dllmflow_metrics_source_up", (("source", "postgres"),))] == 1
    assert m[("dllmflow_metrics_source_up", (("source", "redis"),))] == 1

    # Seeded diffusion-like turns: decode 0.4, 0.3, 0.2 s; tokens 48+32+16 over 12+8+4 passes.
    plan = (("backend", SEEDED_DLLM), ("kind", "plan"))
    seek = (("backend", SEEDED_DLLM), ("kind", "seek"))
    assert m[("dllmflow_activity_seconds_count", plan)] == 1
    assert m[("dllmflow_activity_seconds_bucket", (*plan, ("le", "0.25")))] == 0
    assert m[("dllmflow_activity_seconds_bucket", (*plan, ("le", "0.5")))] == 1
    assert m[("dllmflow_activity_seconds_count", seek)] == 2
    assert abs(m[("dllmflow_activity_seconds_sum", seek)] - 0.5) < 1e-9

    dllm = (("backend", SEEDED_DLLM),)
    assert m[("dllmflow_turns_total", dllm)] == 3
    assert m[("dllmflow_valid_turns_total", dllm)] == 2
    assert abs(m[("dllmflow_tool_call_schema_adherence", dllm)] - 2 / 3) < 1e-9
    assert m[("dllmflow_tokens_per_forward_pass", dllm)] == 4.0
    assert m[("dllmflow_tokens_per_forward_pass", (("backend", SEEDED_AR),))] == 1.0


@pytest.mark.parametrize("down", ["redis", "postgres"])
def test_metrics_report_a_source_that_is_down(stack, api_token: str, down: str) -> None:
    # The same API against a port where nothing listens for one source: the scrape still
    # answers 200, says which source is down, and keeps what the other source gave.
    (dead_port,) = free_ports(1)
    settings = stack.model_copy(update={f"{down}_port": dead_port})
    server = LiveServer(settings).start()
    try:
        headers = {"Authorization": f"Bearer {api_token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            m = scrape(c)
    finally:
        server.stop()
    up = {s: m[("dllmflow_metrics_source_up", (("source", s),))] for s in ("postgres", "redis")}
    assert up == {"redis": 0 if down == "redis" else 1, "postgres": 0 if down == "postgres" else 1}
    has_episodes = ("dllmflow_episodes", (("status", "completed"),)) in m
    has_depth = ("dllmflow_dlq_depth", ()) in m
    assert (has_episodes, has_depth) == (down != "postgres", down != "redis")
