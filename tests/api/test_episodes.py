"""Reading episodes, turns, checkpoints and the waterfall; eval runs; the audit trail."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from dllmflow.store.episodes import EpisodeRepository
from tests.api.conftest import SEEDED_AR, SEEDED_DLLM

pytestmark = pytest.mark.integration


def test_list_filters_by_status(client: httpx.Client, seeded) -> None:
    everything = client.get("/api/episodes", params={"limit": 500}).json()
    ids = {e["id"] for e in everything}
    assert {seeded.completed, seeded.running, seeded.dead} <= ids
    dead = client.get("/api/episodes", params={"status": "dead_lettered"}).json()
    assert seeded.dead in {e["id"] for e in dead}
    assert {e["status"] for e in dead} == {"dead_lettered"}
    assert len(client.get("/api/episodes", params={"limit": 1}).json()) == 1


def test_get_episode_reads_the_row_as_it_is_now(client: httpx.Client, stack) -> None:
    # The record is read from Postgres on each request: a change to the row shows up in the
    # next GET, field by field, and the Temporal link is built from the row's workflow id.
    episodes = EpisodeRepository(stack)
    row = episodes.create(question="What colour is the round trip?", policy="ar", budgets={})
    before = client.get(f"/api/episodes/{row.id}").json()
    assert before["status"] == "queued" and before["answer"] is None
    assert before["question"] == "What colour is the round trip?" and before["policy"] == "ar"
    episodes.update(
        row.id,
        status="failed",
        answer="teal",
        sources=["d9"],
        error="writer produced no answer",
        metrics={"turns": 7, "invalid_actions": 2},
    )
    after = client.get(f"/api/episodes/{row.id}").json()
    assert (after["status"], after["answer"], after["sources"]) == ("failed", "teal", ["d9"])
    assert after["error"] == "writer produced no answer"
    assert after["metrics"] == {"turns": 7, "invalid_actions": 2}
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(
        before["updated_at"]
    )
    assert after["temporal_url"] == (
        f"{stack.temporal_ui_url}/namespaces/default/workflows/episode-{row.id}"
    )


def test_turns_fold_each_tool_call_into_its_step(client: httpx.Client, seeded) -> None:
    turns = client.get(f"/api/episodes/{seeded.completed}/turns").json()
    assert [t["step"] for t in turns] == [0, 1, 2, 3]
    assert [t["role"] for t in turns] == ["planner", "seeker", "seeker", "writer"]
    assert [t["valid"] for t in turns] == [True, True, False, True]
    assert turns[0]["action"]["tool"] == "search" and turns[0]["action"]["args"]["query"]
    assert turns[0]["tool"]["ok"] and "Seeded doc" in turns[0]["tool"]["result_preview"]
    assert turns[2]["tool"] is None and "not valid JSON" in turns[2]["error"]
    assert turns[3]["backend"] == SEEDED_AR and turns[3]["decode_s"] == 0.9


def test_checkpoint_is_returned_whole(client: httpx.Client, seeded) -> None:
    first = seeded.checkpoint_ids[0]
    cp = client.get(f"/api/episodes/{seeded.completed}/checkpoints/{first}").json()
    assert cp["kind"] == "plan" and cp["backend"] == SEEDED_DLLM
    assert cp["payload"]["stats"]["forward_passes"] == 12
    other = client.get(f"/api/episodes/{seeded.running}/checkpoints/{first}")
    assert other.status_code == 404  # a checkpoint is only reachable through its own episode


def test_waterfall_has_the_five_segments_per_step(client: httpx.Client, seeded) -> None:
    chart = client.get(f"/api/episodes/{seeded.completed}/waterfall").json()
    assert chart["provisional"] is False
    assert [s["step"] for s in chart["steps"]] == [0, 1, 2, 3]
    assert set(chart["steps"][0]["timings"]) == {
        "queue",
        "decode",
        "tool",
        "checkpoint",
        "orchestration",
    }
    # Sums of the seeded rows: queue 4 x 0.05, decode 0.4 + 0.3 + 0.2 + 0.9, tool 2 x 0.25,
    # checkpoint 4 x 0.01, orchestration 4 x 0.02.
    expected = {"queue": 0.2, "decode": 1.8, "tool": 0.5, "checkpoint": 0.04, "orchestration": 0.08}
    assert chart["by_segment"] == pytest.approx(expected)
    assert chart["total_s"] == pytest.approx(sum(expected.values()))
    empty = client.get(f"/api/episodes/{seeded.running}/waterfall").json()
    assert empty == {
        "provisional": True,
        "total_s": 0.0,
        "by_segment": dict.fromkeys(expected, 0.0),
        "steps": [],
    }


def test_eval_runs_are_listed_with_metrics_by_policy(client: httpx.Client, seeded) -> None:
    runs = client.get("/api/eval-runs").json()
    run = next(r for r in runs if r["id"] == seeded.eval_run)
    assert set(run["metrics"]["policies"]) == {"ar", "diffusion"}
    assert client.get(f"/api/eval-runs/{seeded.eval_run}").json()["id"] == seeded.eval_run


def test_refused_mutations_are_audited_with_a_fingerprint(client: httpx.Client, seeded) -> None:
    reply = client.post(f"/api/episodes/{seeded.completed}/cancel")
    assert reply.status_code == 409
    assert "already finished" in reply.json()["error"]
    entry = client.get("/api/audit", params={"target": seeded.completed}).json()[0]
    assert entry["action"] == "episode.cancel" and entry["via"] == "bearer"
    assert entry["outcome"] == "error" and "already finished" in entry["detail"]
    assert entry["actor"].startswith("sha256:")
    assert entry["finished_at"] is not None
