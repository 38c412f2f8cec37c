"""Serving on the stack's Ray: both backends, routing policies, shadow, replica death, status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

from dllmflow.agent.prompting import Step
from dllmflow.cli import app
from dllmflow.config import Settings
from dllmflow.models.sampling.base import GenerationRequest
from dllmflow.workers.model_client import ModelTurnGenerator
from dllmflow.workers.serving import (
    GenerationFailed,
    ReplicaUnavailable,
    ServingSettings,
    choose,
    serving_status,
)
from dllmflow.workers.serving.replicas import replica_name
from dllmflow.workers.serving.settings import BACKENDS, NAMESPACE
from dllmflow.workers.turns import GenerateRequest, NotConverged

pytestmark = pytest.mark.integration

QUESTION = {"question": "Where was Alma Verner born?"}


@pytest.fixture(scope="module")
def serving(tiny_checkpoints: dict[str, Path]) -> ServingSettings:
    return ServingSettings(
        ar_checkpoint=str(tiny_checkpoints["ar"]),
        diffusion_checkpoint=str(tiny_checkpoints["diffusion"]),
        replica_num_cpus=0,
        max_new_tokens=32,
        shadow_share=1.0,
        call_timeout_s=120,
    )


@pytest.fixture(scope="module")
def generator(stack: Settings, serving: ServingSettings) -> Iterator[ModelTurnGenerator]:
    gen = ModelTurnGenerator(stack, serving)
    yield gen
    for backend in BACKENDS:
        for handle in gen.pool.handles(backend):
            ray.kill(handle, no_restart=True)
    ray.shutdown()


def turn(role: str, policy: str, episode: str = "ep-1", **kw) -> GenerateRequest:
    history = [Step("planner", '<think>plan</think>\n<action>{"tool": "search"}</action>')]
    return GenerateRequest(
        episode_id=episode,
        step=len(history) + 1,
        role=role,
        policy=policy,
        question=QUESTION,
        history=history if role != "planner" else [],
        max_denoise_steps=kw.pop("max_denoise_steps", 256),
        **kw,
    )


def test_routed_plan_goes_to_diffusion_and_write_to_ar(generator: ModelTurnGenerator) -> None:
    events: list[dict] = []
    plan = generator.generate(turn("planner", "routed"), events.append)
    assert plan.backend == "diffusion" and plan.routing["backend"] == "diffusion"
    assert plan.routing["replica"] == replica_name("diffusion", 0)
    assert (
        plan.refinement_passes > 0 and plan.routing["refinement_passes"] == plan.refinement_passes
    )
    refinements = [e for e in events if e["event"] == "refinement"]
    assert refinements and all(0 <= e["committed_fraction"] <= 1 for e in refinements)
    assert refinements[-1]["done"]

    events.clear()
    write = generator.generate(turn("writer", "routed"), events.append)
    assert write.backend == "ar" and write.routing["backend"] == "ar"
    assert write.refinement_passes == 0 and write.tokens > 0
    assert all(e["event"] == "tokens" for e in events)
    assert "".join(e["text"] for e in events) == write.text  # the deltas add up to the turn
    for t in (plan, write):
        for key in ("queue_s", "decode_s", "tokens", "forward_passes", "ttfuo_s", "mean_batch"):
            assert t.routing[key] is not None, key
        assert t.routing["ttfuo_s"] <= t.routing["latency_s"]


def test_ab_follows_the_episode_hash(generator: ModelTurnGenerator) -> None:
    for episode in ("ab-1", "ab-2", "ab-3"):
        expected = choose("write", "ab", episode, generator.serving).primary
        assert generator.generate(turn("writer", "ab", episode), lambda e: None).backend == expected


def test_shadow_records_both_without_changing_output(generator: ModelTurnGenerator) -> None:
    routed = generator.generate(turn("seeker", "routed"), lambda e: None)
    shadow_events: list[dict] = []
    shadowed = generator.generate(turn("seeker", "shadow"), shadow_events.append)
    assert shadowed.text == routed.text and shadowed.backend == "diffusion"
    record = shadowed.routing["shadow"]
    assert record["backend"] == "ar" and "error" not in record
    assert record["text"] and record["latency_s"] > 0 and record["tokens"] > 0
    alone_ar = generator.generate(turn("seeker", "ar"), lambda e: None)
    assert record["text"] == alone_ar.text  # the shadow decoded the same turn on AR
    assert {e["backend"] for e in shadow_events} == {"diffusion"}  # only the served one streams


def test_repair_prefix_and_denoise_budget(generator: ModelTurnGenerator) -> None:
    prefix = "<think>known</think>\n<action>"
    repaired = generator.generate(turn("writer", "ar", repair_prefix=prefix), lambda e: None)
    assert repaired.text.startswith(prefix)
    with pytest.raises(NotConverged, match="denoising budget"):
        generator.generate(turn("planner", "diffusion", max_denoise_steps=1), lambda e: None)


def test_bad_request_fails_cleanly(generator: ModelTurnGenerator) -> None:
    with pytest.raises(GenerationFailed, match="max_new_tokens") as info:
        generator.pool.generate("ar", GenerationRequest(prompt="x", max_new_tokens=100_000))
    assert not info.value.retryable


def test_killed_replica_fails_retryably_and_is_replaced(generator: ModelTurnGenerator) -> None:
    pool = generator.pool
    before = pool.info("ar")  # loaded and alive
    handle = ray.get_actor(replica_name("ar", 0), namespace=NAMESPACE)
    killed: list[bool] = []

    def kill_on_first_event(backend: str, replica: str, event: dict) -> None:
        if not killed:
            killed.append(True)
            ray.kill(handle, no_restart=False)  # Ray restarts it (max_restarts)

    long = GenerationRequest(prompt="Role: seeker\n", max_new_tokens=700)
    with pytest.raises(ReplicaUnavailable) as info:
        pool.generate("ar", long, kill_on_first_event)
    assert info.value.retryable and killed

    served = pool.generate("ar", GenerationRequest(prompt="Role: seeker\n", max_new_tokens=8))
    assert served.result["tokens_generated"] > 0
    after = ray.get(handle.describe.remote())
    assert after["pid"] != before["pid"] and after["restarted"]


def test_serving_status_lists_replicas(generator: ModelTurnGenerator, stack: Settings) -> None:
    rows = serving_status(stack)
    by_backend = {r["backend"]: r for r in rows}
    assert set(by_backend) == {"ar", "diffusion"}
    assert all(r["alive"] for r in rows)
    assert by_backend["diffusion"]["device"] == "cpu"
    # The stack page's load columns: queue depth, running batch, mean batch and memory.
    for r in rows:
        assert r["waiting"] >= 0 and r["running"] >= 0, r
        assert r["memory_mb"] > 50, r  # a replica process with torch and a model loaded
        assert (r["mean_batch"] >= 1) == (r["steps"] > 0), r


def test_models_status_command_lists_the_live_replicas(generator: ModelTurnGenerator) -> None:
    """`dllmflow models status` (JSON and table) finds the replicas the generator started."""
    for backend in BACKENDS:  # created on first use; wait until loaded, as `models warm` does
        ray.get([handle.describe.remote() for handle in generator.pool.handles(backend)])
    result = CliRunner().invoke(app, ["models", "status", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    serving = ServingSettings()
    expected = [(b, replica_name(b, i)) for b in BACKENDS for i in range(serving.replicas(b))]
    assert [(r["backend"], r["replica"]) for r in rows] == expected
    assert all(r["alive"] and r["state"] == "alive" and r["pair"] == "tiny" for r in rows), rows
    assert {r["device"] for r in rows} == {"cpu"}
    table = CliRunner().invoke(app, ["models", "status"])
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "pair: tiny" in text and text.count("alive") >= len(rows)
