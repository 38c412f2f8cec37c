"""Submit over HTTP, follow over SSE to completion, then resume, replay and retry."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dllmflow.store.episodes import EpisodeRepository
from dllmflow.world.generator import answer_matches
from tests.api.conftest import follow

pytestmark = pytest.mark.integration


def test_submitted_oracle_episode_is_followed_to_completion(client: httpx.Client, oracle_episode):
    # The oracle answers with the record's gold values: this checks the plumbing (submit, SSE,
    # the row and its turns), not answer quality.
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


def test_history_is_the_workflows_event_list(client: httpx.Client, oracle_episode) -> None:
    history = client.get(f"/api/episodes/{oracle_episode.id}/history").json()
    types = [e["type"] for e in history]
    assert types[0] == "workflow_execution_started"
    assert types[-1] == "workflow_execution_completed"
    assert [e["id"] for e in history] == list(range(1, len(history) + 1))
    metrics = client.get(f"/api/episodes/{oracle_episode.id}").json()["metrics"]
    # start + finish bookkeeping, one activity a turn and one a tool call.
    expected = 2 + metrics["turns"] + metrics["tool_calls"]
    assert types.count("activity_task_scheduled") == expected
    assert types.count("activity_task_completed") == expected
    assert client.get("/api/episodes/ep-missing/history").status_code == 404


def test_concurrent_submits_with_one_idempotency_key_make_one_episode(
    client: httpx.Client, api_url: str, api_token: str, oracle_episode
) -> None:
    body = {
        "question": oracle_episode.record["question"],
        "policy": "oracle",
        "question_record": oracle_episode.record,
    }
    headers = {
        "Authorization": f"Bearer {api_token}",
        "Idempotency-Key": f"race-{uuid.uuid4().hex}",
    }
    n = 6
    gate = threading.Barrier(n)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as c:
            gate.wait()
            return c.post("/api/episodes", json=body)

    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(post, range(n)))
    # One request created it (201); every other one found it already submitted (200).
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] * (n - 1) + [201], [(r.status_code, r.text) for r in replies]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    (episode_id,) = ids
    assert follow(client, episode_id)[-1]["data"]["status"] == "completed"
    history = client.get(f"/api/episodes/{episode_id}/history").json()
    assert [e["type"] for e in history].count("workflow_execution_started") == 1
    oks = client.get("/api/audit", params={"target": episode_id}).json()
    assert len(oks) >= 1 and all(a["outcome"] == "ok" for a in oks)


def test_retry_over_http_runs_a_failed_episode_to_completion(
    client: httpx.Client, stack, episode_worker, world_questions
) -> None:
    record = world_questions[2]
    episodes = EpisodeRepository(stack)
    row = episodes.create(
        question=record["question"], policy="oracle", budgets={}, question_record=record
    )
    episodes.update(row.id, status="failed", error="the writer produced no answer")
    reply = client.post(f"/api/episodes/{row.id}/retry", json={"budgets": {"max_turns": 12}})
    assert reply.status_code == 200, reply.text
    # The worker may already have picked the restarted workflow up by the time the row is read.
    assert reply.json()["status"] in ("queued", "running") and reply.json()["error"] is None
    assert reply.json()["budgets"]["max_turns"] == 12
    assert follow(client, row.id)[-1]["data"]["status"] == "completed"
    done = client.get(f"/api/episodes/{row.id}").json()
    assert done["status"] == "completed" and done["error"] is None
    audit = client.get("/api/audit", params={"target": row.id}).json()[0]
    assert audit["action"] == "episode.retry" and audit["outcome"] == "ok"
    assert audit["payload"] == {"budgets": {"max_turns": 12}}
