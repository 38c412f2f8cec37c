"""Prometheus exposition computed from Postgres and Redis at scrape time."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import SEEDED_AR, SEEDED_DLLM


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_cover_status_latency_adherence_and_tokens(client: httpx.Client, seeded) -> None:
    m = scrape(client)
    assert m[("dllmflow_episodes", (("status", "completed"),))] >= 1
    assert m[("dllmflow_episodes", (("status", "running"),))] >= 1
    assert ("dllmflow_dlq_depth", ()) in m
    assert m[("dllmflow_metrics_source_up", (("source", "postgres"),))] == 1
    assert m[("dllmflow_metrics_source_up", (("source", "redis"),))] == 1

    # Seeded diffusion-like turns: decode 0.4, 0.3, 0.2 s; tokens 48+32+16 over 12+8+4 passes.
    plan = (("backend", SEEDED_DLLM), ("kind", "plan"))
    seek = (("backend", SEEDED_DLLM), ("kind", "seek"))
    assert m[("dllmflow_activity_seconds_count", plan)] >= 1
    assert m[("dllmflow_activity_seconds_bucket", (*plan, ("le", "0.25")))] == 0
    assert m[("dllmflow_activity_seconds_bucket", (*plan, ("le", "0.5")))] == 1
    assert m[("dllmflow_activity_seconds_count", seek)] == 2
    assert abs(m[("dllmflow_activity_seconds_sum", seek)] - 0.5) < 1e-9
    tool = (("backend", "tool"), ("kind", "tool"))
    assert m[("dllmflow_activity_seconds_count", tool)] >= 2

    dllm = (("backend", SEEDED_DLLM),)
    assert m[("dllmflow_turns_total", dllm)] == 3
    assert m[("dllmflow_valid_turns_total", dllm)] == 2
    assert abs(m[("dllmflow_tool_call_schema_adherence", dllm)] - 2 / 3) < 1e-9
    assert m[("dllmflow_tokens_per_forward_pass", dllm)] == 4.0
    assert m[("dllmflow_tokens_per_forward_pass", (("backend", SEEDED_AR),))] == 1.0
