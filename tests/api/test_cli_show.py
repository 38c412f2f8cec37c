"""`dllmflow episodes show`: what an operator reads about one episode (real Postgres)."""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from dllmflow.cli import app
from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore
from dllmflow.store.episodes import EpisodeRepository

pytestmark = pytest.mark.integration


def test_show_prints_the_shadow_backends_turn(stack: Settings) -> None:
    """policy=shadow decodes a turn on both backends and serves one: the other's text is kept
    in the checkpoint's routing record, and `show` prints it under the table (and in --json)."""
    ep = EpisodeRepository(stack).create(
        question=f"Shadowed {uuid.uuid4().hex[:6]}?", policy="shadow", budgets={}
    )
    shadow_text = '<think>Other view.</think><action>{"tool": "search"}</action>'
    payload = {
        "text": "<think>Plan.</think>",
        "valid": True,
        "action": {"tool": "search", "args": {"query": "x"}},
        "stats": {
            "routing": {
                "policy": "shadow",
                "served_text": "<think>Plan.</think>",
                "shadow": {"backend": "ar", "text": shadow_text},
            }
        },
    }
    CheckpointStore(stack).save(
        episode_id=ep.id,
        step=0,
        kind="plan",
        key=f"{ep.id}/0/plan",
        payload=payload,
        role="planner",
        backend="diffusion",
        model="m",
        timings={"decode_s": 0.1},
    )
    shown = CliRunner().invoke(app, ["episodes", "show", ep.id])
    assert shown.exit_code == 0, shown.output
    assert "step 0 shadow (ar): <think>Other view.</think>" in shown.output
    as_json = CliRunner().invoke(app, ["episodes", "show", ep.id, "--json"])
    assert '"backend": "ar"' in as_json.output and "Other view." in as_json.output
