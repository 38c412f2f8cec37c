"""Every CLI write lands in the same audit_log as the API's: run, submit, cancel, dlq retry and
purge, eval (one row per run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dllmflow.api.audit import recent
from dllmflow.cli import app
from dllmflow.config import Settings
from dllmflow.store.streams import DLQ_STREAM, DeadLetter, DeadLetterQueue

pytestmark = pytest.mark.integration


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    return result.output


def cli_rows(stack: Settings, since: int) -> list[dict[str, Any]]:
    return [r for r in reversed(recent(stack, 500)) if r["id"] > since and r["via"] == "cli"]


def test_cli_writes_are_audited(
    stack: Settings, episode_worker: str, world_questions, tmp_path: Path
) -> None:
    start = max((r["id"] for r in recent(stack, 1)), default=0)
    record = world_questions[1]

    out = cli("run", record["question"], "--policy", "ar", "--no-wait", "--json")
    assert "{" in out, out
    run_id = json.loads(out[out.index("{") :])["id"]
    cli("episodes", "cancel", run_id)

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps(record) + "\n")
    cli("submit", str(questions), "--policy", "oracle")

    entry = DeadLetterQueue(stack).add(
        DeadLetter(
            episode_id=run_id,
            step=0,
            kind="plan",
            error="seeded for the audit test",
            attempts=1,
            last_checkpoint_id=None,
            policy="ar",
            budgets={},
            at=time.time(),
        )
    )
    cli("dlq", "retry", entry, "--no-wait")
    # The purge empties the shared stack's whole queue: put back what other tests seeded
    # (same ids: purge deletes the stream, so the old ids are valid again).
    dlq = DeadLetterQueue(stack)
    kept = [(i, f) for i, f in dlq.redis.xrange(DLQ_STREAM) if i != entry]
    cli("dlq", "purge", "--yes")
    assert dlq.depth() == 0
    for entry_id, fields in kept:
        dlq.redis.xadd(DLQ_STREAM, fields, id=entry_id)
    cli(
        "eval",
        "--questions",
        str(questions),
        "--out",
        str(tmp_path / "eval"),
        "--policies",
        "oracle",
    )

    rows = cli_rows(stack, start)
    actions = [r["action"] for r in rows]
    assert actions == [
        "episode.submit",
        "episode.cancel",
        "episode.submit",
        "dlq.retry",
        "dlq.purge",
        "eval.run",
    ], rows
    by_action = {r["action"]: r for r in rows}
    assert rows[0]["target"] == run_id and rows[0]["payload"]["policy"] == "ar"
    assert rows[1]["target"] == run_id
    assert rows[2]["target"] and rows[2]["target"] != run_id
    assert by_action["dlq.retry"]["target"] == entry
    assert by_action["dlq.retry"]["payload"]["episode_id"] == run_id
    assert by_action["dlq.purge"]["payload"]["purged"] >= 0
    assert by_action["eval.run"]["target"] and by_action["eval.run"]["payload"]["records"] == 1
    for row in rows:
        assert row["actor"].startswith("cli:")
        assert row["outcome"] in ("ok", "error")  # completed, never left "pending"
        assert row["finished_at"] is not None
