"""Reading episodes, turns, checkpoints and the waterfall; eval runs; the audit trail."""

from __future__ import annotations

import httpx

from tests.api.conftest import SEEDED_AR, SEEDED_DLLM


def test_list_filters_by_status(client: httpx.Client, seeded) -> None:
    everything = client.get("/api/episodes", params={"limit": 500}).json()
    ids = {e["id"] for e in everything}
    assert {seeded.completed, seeded.running, seeded.dead} <= ids
    dead = client.get("/api/episodes", params={"status": "dead_lettered"}).json()
    assert seeded.dead in {e["id"] for e in dead}
    assert {e["status"] for e in dead} == {"dead_lettered"}
    assert len(client.get("/api/episodes", params={"limit": 1}).json()) == 1


def test_get_episode_links_the_temporal_workflow(client: httpx.Client, stack, seeded) -> None:
    episode = client.get(f"/api/episodes/{seeded.completed}").json()
    assert episode["status"] == "completed"
    assert episode["answer"] == "blue"
    assert episode["metrics"]["invalid_actions"] == 1
    assert episode["temporal_url"] == (
        f"{stack.temporal_ui_url}/namespaces/default/workflows/episode-{seeded.completed}"
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
    assert abs(chart["by_segment"]["tool"] - 0.5) < 1e-9
    empty = client.get(f"/api/episodes/{seeded.running}/waterfall").json()
    assert empty == {
        "provisional": True,
        "total_s": 0.0,
        "by_segment": empty["by_segment"],
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
