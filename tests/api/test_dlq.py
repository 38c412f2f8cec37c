"""Dead-letter endpoints: list, retry, purge, each audited."""

from __future__ import annotations

import time

import httpx

from dllmflow.store.streams import DeadLetter, DeadLetterQueue


def test_list_shows_the_entry(client: httpx.Client, seeded) -> None:
    letters = client.get("/api/dlq").json()
    letter = next(d for d in letters if d["id"] == seeded.dead_entry)
    assert letter["episode_id"] == seeded.dead
    assert letter["attempts"] == 3 and letter["kind"] == "seek"


def test_retry_reports_temporal_errors_as_json(client: httpx.Client, seeded) -> None:
    # The seeded episode never had a workflow, so Temporal cannot find it: a clear 502, the
    # entry stays, and the attempt is in the audit log.
    reply = client.post(f"/api/dlq/{seeded.dead_entry}/retry")
    assert reply.status_code == 502, reply.text
    assert reply.json()["error"].startswith("Temporal refused the request")
    assert seeded.dead_entry in {d["id"] for d in client.get("/api/dlq").json()}
    entry = client.get("/api/audit", params={"target": seeded.dead_entry}).json()[0]
    assert entry["action"] == "dlq.retry" and entry["outcome"] == "error"
    assert entry["payload"]["episode_id"] == seeded.dead


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
