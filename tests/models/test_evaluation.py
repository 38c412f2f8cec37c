"""The offline evaluation loop and its metrics."""

from __future__ import annotations

from dllmflow.agent.policy import OraclePolicy
from dllmflow.models.evaluation import evaluate
from dllmflow.world.generator import generate_world

SMALL = dict(n_people=30, n_orgs=12, n_cities=10, n_countries=4, n_works=20, n_questions=12)


def test_oracle_scores_perfectly_evaluation_plumbing():
    # The oracle answers with the gold hop values: this checks the loop and its counters;
    # answer quality is test_answer_quality.py's.
    world = generate_world(31, **SMALL)
    summary, episodes = evaluate(OraclePolicy(), world.questions, world.documents)
    assert summary["episodes"] == 12 and summary["accuracy"] == 1.0
    assert summary["valid_action_rate"] == 1.0 and summary["invalid_action_rate"] == 0.0
    hops = sum(len(q["hops"]) for q in world.questions)
    assert summary["tool_calls_per_episode"] == 2 * hops / 12
    assert all(ep.hops == len(q["hops"]) for ep, q in zip(episodes, world.questions, strict=True))


def test_broken_policy_counts_invalid_turns_and_stops():
    world = generate_world(32, **SMALL)
    calls = []

    def garbage(role, question, history):
        calls.append(role)
        return "<think>hmm</think> no action here"

    summary, episodes = evaluate(garbage, world.questions[:2], world.documents)
    assert summary["accuracy"] == 0.0 and summary["valid_action_rate"] == 0.0
    assert summary["answered"] == 0.0
    # Four invalid planner turns in a row end an episode; each got an error observation.
    assert all(len(ep.turns) == 4 for ep in episodes)
    assert all(s.observation and "error" in s.observation for s in episodes[0].steps)
    assert set(calls) == {"planner"}
