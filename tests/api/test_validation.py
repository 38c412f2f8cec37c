"""Bad input: 422 with the field named, as JSON; unknown ids: 404 JSON."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

NEGATIVE = "greater than 0"
CASES = [
    ({"question": "q", "policy": "gpt-9"}, "policy", "unknown policy 'gpt-9'"),
    ({"question": "q", "budgets": {"max_tool_calls": -1}}, "budgets.max_tool_calls", NEGATIVE),
    ({"question": "q", "budgets": {"deadline_s": 0}}, "budgets.deadline_s", "greater than 0"),
    ({"question": "q", "budgets": {"max_turns": 1}}, "budgets.max_turns", "equal to 2"),
    ({"question": "   "}, "question", "non-empty"),
    ({"question": "x" * 4001}, "question", "limit is 4000"),
    ({"policy": "ar"}, "question", "Field required"),
    ({"question": "q", "polcy": "ar"}, "polcy", "Extra inputs"),
    ({"question": "q", "budgets": {"max_turn": 3}}, "budgets.max_turn", "Extra inputs"),
    ({"question": "q", "policy": "oracle"}, "question_record", "expected 'answer'"),
]


@pytest.mark.parametrize(("body", "field", "message"), CASES)
def test_bad_submissions_name_the_field(client: httpx.Client, body, field, message) -> None:
    reply = client.post("/api/episodes", json=body)
    assert reply.status_code == 422, reply.text
    payload = reply.json()
    fields = {f["field"]: f["message"] for f in payload["fields"]}
    assert field in fields, payload
    assert message in fields[field]
    assert payload["error"].startswith("invalid request: ")
    assert field in payload["error"]


def test_non_json_body_is_422(client: httpx.Client) -> None:
    reply = client.post(
        "/api/episodes", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    assert reply.json()["fields"]


def test_query_and_path_parameters_are_named(client: httpx.Client) -> None:
    status = client.get("/api/episodes", params={"status": "finished-ish"})
    assert status.status_code == 422
    assert status.json()["fields"][0]["field"] == "status"
    assert status.json()["fields"][0]["in"] == "query"
    limit = client.get("/api/episodes", params={"limit": 0})
    assert limit.json()["fields"][0]["field"] == "limit"
    entry = client.post("/api/dlq/not-an-id/retry")
    assert entry.status_code == 422
    assert entry.json()["fields"][0]["field"] == "entry_id"
    replay = client.post("/api/episodes/ep-x/replay", json={"from_step": -1})
    assert replay.status_code == 422
    assert replay.json()["fields"][0]["field"] == "from_step"


def test_unknown_ids_are_404_json(client: httpx.Client, seeded) -> None:
    # Each 404 names the id that was not found.
    paths = {
        "/api/episodes/ep-missing": "ep-missing",
        "/api/episodes/ep-missing/turns": "ep-missing",
        "/api/episodes/ep-missing/events": "ep-missing",
        f"/api/episodes/{seeded.completed}/checkpoints/0": "has no checkpoint 0",
        "/api/eval-runs/nope": "no eval run with id 'nope",
    }
    for path, named in paths.items():
        reply = client.get(path)
        assert reply.status_code == 404, path
        assert named in reply.json()["error"], (path, reply.json())
    assert client.post("/api/dlq/1-0/retry").status_code == 404
