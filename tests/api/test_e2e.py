"""Submit over HTTP, follow over SSE to completion, then resume, replay and retry."""

from __future__ import annotations

import httpx
import pytest

from dllmflow.models.world import answer_matches
from tests.api.conftest import follow

pytestmark = pytest.mark.integration


def test_submitted_episode_is_followed_to_completion(client: httpx.Client, oracle_episode):
    names = [e["event"] for e in oracle_episode.events]
    assert names[0] == "started"
    assert names[-2:] == ["finished", "end"]
    assert {"model_progress", "turn", "tool"} <= set(names)
    end = oracle_episode.events[-1]["data"]
    assert end == {"episode_id": oracle_episode.id, "status": "completed"}
    finished = oracle_episode.events[-2]["data"]
    assert answer_matches(finished["answer"], oracle_episode.record)

    episode = client.get(f"/api/episodes/{oracle_episode.id}").json()
    assert episode["status"] == "completed" and episode["sources"]
    turns = client.get(f"/api/episodes/{oracle_episode.id}/turns").json()
    assert len(turns) == episode["metrics"]["turns"] == names.count("turn")
    assert turns[0]["role"] == "planner" and turns[-1]["role"] == "writer"
    assert sum(1 for t in turns if t["tool"]) == episode["metrics"]["tool_calls"]
    audit = client.get("/api/audit", params={"target": oracle_episode.id}).json()
    assert [a["action"] for a in audit] == ["episode.submit"] and audit[0]["outcome"] == "ok"


def test_stream_resumes_after_last_event_id(client: httpx.Client, oracle_episode) -> None:
    finished = next(e for e in oracle_episode.events if e["event"] == "finished")
    rest = follow(client, oracle_episode.id, headers={"Last-Event-ID": finished["id"]})
    assert [e["event"] for e in rest] == ["end"]
    ids = [e["id"] for e in oracle_episode.events if "id" in e]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_replay_and_retry_over_http(client: httpx.Client, oracle_episode) -> None:
    replay = client.post(f"/api/episodes/{oracle_episode.id}/replay", json={"from_step": 2})
    assert replay.status_code == 201, replay.text
    new = replay.json()
    assert new["parent_episode_id"] == oracle_episode.id and new["replay_from_step"] == 2
    assert follow(client, new["id"])[-1]["data"]["status"] == "completed"
    turns = client.get(f"/api/episodes/{new['id']}/turns").json()
    copied = [t["step"] for t in turns if t["copied_from"]]
    fresh = [t["step"] for t in turns if not t["copied_from"]]
    assert copied == [0, 1]  # the steps before from_step come from the parent
    assert fresh and min(fresh) == 2  # and the run went on from step 2

    retry = client.post(f"/api/episodes/{oracle_episode.id}/retry")
    assert retry.status_code == 409 and "already completed" in retry.json()["error"]


def test_idempotency_key_submits_once(client: httpx.Client, oracle_episode) -> None:
    body = {
        "question": oracle_episode.record["question"],
        "policy": "oracle",
        "question_record": oracle_episode.record,
    }
    headers = {"Idempotency-Key": f"retry-safe-{oracle_episode.id}"}
    first = client.post("/api/episodes", json=body, headers=headers)
    second = client.post("/api/episodes", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert follow(client, first.json()["id"])[-1]["data"]["status"] == "completed"
