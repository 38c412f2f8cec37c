"""Dead-letter endpoints: list, retry, purge, each audited."""

from __future__ import annotations

import time

import httpx
import pytest

from dllmflow.api.auth import COOKIE_NAME, CSRF_HEADER, CSRF_VALUE
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.streams import DeadLetter, DeadLetterQueue
from tests.api.conftest import follow

pytestmark = pytest.mark.integration


def _letter(episode_id: str, step: int, error: str) -> DeadLetter:
    return DeadLetter(
        episode_id=episode_id,
        step=step,
        kind="tool",
        error=error,
        attempts=step + 1,
        last_checkpoint_id=step * 10,
        policy="ar",
        budgets={"max_turns": step},
        at=time.time(),
    )


def test_list_is_oldest_first_with_every_field(client: httpx.Client, stack, seeded) -> None:
    dlq = DeadLetterQueue(stack)
    first = dlq.add(_letter(seeded.dead, 4, "listed first"))
    second = dlq.add(_letter(seeded.running, 5, "listed second"))
    letters = client.get("/api/dlq").json()
    ids = [d["id"] for d in letters]
    assert ids.index(seeded.dead_entry) < ids.index(first) < ids.index(second)
    by_id = {d["id"]: d for d in letters}
    assert by_id[second] == {
        "id": second,
        "episode_id": seeded.running,
        "step": 5,
        "kind": "tool",
        "error": "listed second",
        "attempts": 6,
        "last_checkpoint_id": 50,
        "policy": "ar",
        "budgets": {"max_turns": 5},
        "at": by_id[second]["at"],
    }
    assert abs(by_id[second]["at"] - time.time()) < 60
    assert by_id[seeded.dead_entry]["episode_id"] == seeded.dead
    # limit keeps the oldest entries
    assert [d["id"] for d in client.get("/api/dlq", params={"limit": 1}).json()] == ids[:1]


def _dead_lettered_oracle_episode(stack, record, kind: str, error: str) -> tuple[str, str]:
    episodes = EpisodeRepository(stack)
    episode = episodes.create(
        question=record["question"], policy="oracle", budgets={}, question_record=record
    )
    episodes.update(episode.id, status="dead_lettered", error=error)
    letter = DeadLetter(
        episode_id=episode.id,
        step=0,
        kind=kind,
        error=error,
        attempts=1,
        last_checkpoint_id=None,
        policy="oracle",
        budgets={},
        at=time.time(),
    )
    return episode.id, DeadLetterQueue(stack).add(letter)


def test_retry_runs_the_episode_to_completion(
    client: httpx.Client, stack, episode_worker, world_questions
) -> None:
    record = world_questions[1]
    episode_id, entry = _dead_lettered_oracle_episode(stack, record, "tool", "search timed out")
    reply = client.post(f"/api/dlq/{entry}/retry")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # The worker may already have picked the restarted workflow up by the time the row is read.
    assert body["id"] == episode_id and body["status"] in ("queued", "running")
    assert body["error"] is None
    assert body["workflow_id"] == f"episode-{episode_id}"
    assert entry not in {d["id"] for d in client.get("/api/dlq").json()}
    assert follow(client, episode_id)[-1]["data"] == {
        "episode_id": episode_id,
        "status": "completed",
    }
    done = client.get(f"/api/episodes/{episode_id}").json()
    assert done["status"] == "completed" and done["answer"]
    audit = client.get("/api/audit", params={"target": entry}).json()[0]
    assert audit["action"] == "dlq.retry" and audit["outcome"] == "ok"
    assert audit["payload"] == {"episode_id": episode_id, "step": 0, "kind": "tool", "budgets": {}}
    # Once it has run, a second retry of the same entry finds nothing.
    assert client.post(f"/api/dlq/{entry}/retry").status_code == 404


def test_retry_takes_larger_budgets(
    client: httpx.Client, stack, episode_worker, world_questions
) -> None:
    """A budget failure retried with the same budget dead-letters again: the retry's body
    sets new budgets (validated like a submit's), which the re-run episode carries."""
    record = world_questions[2]
    episode_id, entry = _dead_lettered_oracle_episode(
        stack, record, "plan", "denoising budget exceeded"
    )
    bad = client.post(f"/api/dlq/{entry}/retry", json={"budgets": {"max_turns": 1}})
    assert bad.status_code == 422 and "max_turns" in bad.text
    assert entry in {d["id"] for d in client.get("/api/dlq").json()}  # nothing consumed
    reply = client.post(
        f"/api/dlq/{entry}/retry", json={"budgets": {"max_turns": 20, "max_denoise_steps": 512}}
    )
    assert reply.status_code == 200, reply.text
    assert follow(client, episode_id)[-1]["data"]["status"] == "completed"
    done = client.get(f"/api/episodes/{episode_id}").json()
    assert done["budgets"]["max_turns"] == 20 and done["budgets"]["max_denoise_steps"] == 512
    audit = client.get("/api/audit", params={"target": entry}).json()[0]
    assert audit["payload"]["budgets"] == {"max_turns": 20, "max_denoise_steps": 512}


def test_retry_of_a_finished_episode_is_refused_and_audited(client: httpx.Client, stack, seeded):
    letter = DeadLetter(
        episode_id=seeded.completed,
        step=3,
        kind="write",
        error="stale entry",
        attempts=1,
        last_checkpoint_id=None,
        policy="routed",
        budgets={},
        at=time.time(),
    )
    entry = DeadLetterQueue(stack).add(letter)
    reply = client.post(f"/api/dlq/{entry}/retry")
    assert reply.status_code == 409 and "already completed" in reply.json()["error"]
    assert entry in {d["id"] for d in client.get("/api/dlq").json()}  # kept for a look
    audit = client.get("/api/audit", params={"target": entry}).json()[0]
    assert audit["action"] == "dlq.retry" and audit["outcome"] == "error"


def test_purge_empties_the_queue(client: httpx.Client, stack, seeded) -> None:
    dlq = DeadLetterQueue(stack)
    dlq.add(
        DeadLetter(
            episode_id=seeded.dead,
            step=1,
            kind="tool",
            error="timeout",
            attempts=5,
            last_checkpoint_id=None,
            policy="ar",
            budgets={},
            at=time.time(),
        )
    )
    depth = dlq.depth()
    assert depth >= 2
    reply = client.delete("/api/dlq")
    assert reply.status_code == 200 and reply.json() == {"purged": depth}
    assert client.get("/api/dlq").json() == []
    entry = client.get("/api/audit", params={"target": "dlq"}).json()[0]
    assert entry["action"] == "dlq.purge" and entry["outcome"] == "ok"
    assert entry["payload"] == {"depth": depth, "purged": depth}


def test_retry_with_the_dashboard_session_is_audited_as_cookie(
    anon: httpx.Client, client: httpx.Client, api_token: str, stack, seeded
) -> None:
    # What the DLQ page's Retry button sends (tests/api/test_browser.py clicks it): the session
    # cookie and the dashboard header; without the header a cookie cannot write.
    letter = _letter(seeded.completed, 3, "stale entry")
    entry = DeadLetterQueue(stack).add(letter)
    login = anon.post("/login", data={"token": api_token, "next": "/dlq"})
    anon.cookies.set(COOKIE_NAME, login.cookies[COOKIE_NAME])
    assert anon.post(f"/api/dlq/{entry}/retry").status_code in (401, 403)
    reply = anon.post(f"/api/dlq/{entry}/retry", headers={CSRF_HEADER: CSRF_VALUE})
    assert reply.status_code == 409 and "already completed" in reply.json()["error"]
    audit = client.get("/api/audit", params={"target": entry}).json()
    assert [(a["action"], a["via"], a["outcome"]) for a in audit] == [
        ("dlq.retry", "cookie", "error")
    ]
