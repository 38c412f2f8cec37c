"""The fault campaign's plan and the replica-liveness rule, without a stack."""

from __future__ import annotations

import pytest

from dllmflow.config import load_settings
from dllmflow.stack.components import StackError
from dllmflow.stack.faults import (
    FAULTS_QUEUE,
    Campaign,
    EpisodeRun,
    Fault,
    FaultReport,
    loopback_only,
    parse_faults,
)
from dllmflow.workers.serving.pool import lost


def test_the_default_campaign_has_the_issue_outage_lengths() -> None:
    plan = parse_faults("redis:120,postgres:60,temporal:60,worker,ray-node")
    assert plan == [
        Fault("redis", 120),
        Fault("postgres", 60),
        Fault("temporal", 60),
        Fault("worker", 0),
        Fault("ray-node", 0),
    ]
    assert [f.during for f in plan] == ["run", "run", "submit", "run", "run"]
    assert plan[2].label == "temporal down 60s during submit"
    assert parse_faults("none") == [Fault("none", 0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("redis:120,disk:5", "unknown fault 'disk'"),
        ("postgres:soon", "must be a number"),
        ("redis", "redis needs a positive outage"),
        ("", "no faults given"),
    ],
)
def test_a_bad_fault_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_faults(text)


def test_the_campaign_refuses_external_servers() -> None:
    loopback_only(load_settings())  # the embedded stack is fine
    with pytest.raises(StackError, match="DLLMFLOW_REDIS_URL"):
        loopback_only(load_settings(redis_url="redis://cache.internal:6379/0"))


def test_a_replica_counts_as_lost_when_it_died_restarted_or_moved() -> None:
    alive = ("ALIVE", 0, "node-a")
    assert not lost(alive, alive)
    assert lost(alive, ("RESTARTING", 1, "node-a"))  # its node died; Ray restarts it
    assert lost(alive, ("ALIVE", 1, "node-b"))  # restarted elsewhere already
    assert lost(alive, ("ALIVE", 1, "node-a"))  # its process crashed, restarted in place
    assert lost(alive, ("DEAD", 0, "node-a"))
    assert lost(alive, ("ALIVE", 0, "node-b"))
    # A call made while the replica was restarting waits for it to come up.
    assert not lost(("RESTARTING", 1, ""), ("ALIVE", 1, "node-b"))
    assert not lost(None, ("DEAD", 3, "node-a"))  # unknown at the start: only the deadline


def test_an_episode_that_ran_on_another_task_queue_makes_the_fault_unclean(monkeypatch) -> None:
    """`dllmflow up` once started queued campaign episodes on the stack's own queue, where they
    searched a corpus without the campaign's documents; the judgement must catch that."""
    import dllmflow.store.executions as executions

    campaign = Campaign(load_settings(), [{"question": "q"}], episodes=2, concurrency=2)
    runs = [EpisodeRun(i, f"ep-{i}", submitted=True) for i in range(2)]
    queues = {"ep-0": FAULTS_QUEUE, "ep-1": "dllmflow-episodes"}

    async def described(ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        return {i: ("COMPLETED", queues[i]) for i in ids}

    monkeypatch.setattr(campaign, "_statuses", lambda ids: dict.fromkeys(ids, "completed"))
    monkeypatch.setattr(campaign, "_errors", lambda ids: dict.fromkeys(ids))
    monkeypatch.setattr(campaign, "_temporal_statuses", described)
    monkeypatch.setattr(campaign, "_snapshot", lambda runs: {})
    monkeypatch.setattr(executions, "executions_for", lambda settings, ids: {})
    report = FaultReport("none", "none", 0.0)
    campaign._judge(runs, {}, report)
    assert (report.completed, report.off_queue) == (2, 1)
    assert not report.clean
    assert report.problems == ["ep-1: ran on task queue 'dllmflow-episodes'"]

    queues["ep-1"] = FAULTS_QUEUE
    report = FaultReport("none", "none", 0.0)
    campaign._judge(runs, {}, report)
    assert report.off_queue == 0 and report.clean
