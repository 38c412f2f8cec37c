"""The API's OpenAI-compatible face, called with the official `openai` SDK, unmodified, against
the stack's real Ray replicas (the shipped tiny pair); and the openai-compatible slot backend
pointed at that face, so a turn crosses a real HTTP engine."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from dllmflow.agent.prompting import Step
from dllmflow.config import Settings
from dllmflow.models.sampling.base import MASK_GLYPH
from dllmflow.workers.model_client import ModelTurnGenerator
from dllmflow.workers.serving.settings import ServingSettings
from dllmflow.workers.turns import GenerateRequest

pytestmark = pytest.mark.integration

CONTEXT = (
    "Role: seeker\nTask: Find each fact with search and fetch, then answer with the fact and "
    "its source ids.\nQuestion: Where was Alma Verner born?\nTurn 1 seeker:\n"
)


@pytest.fixture(scope="module")
def sdk(api_url: str, api_token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_url}/v1", api_key=api_token, timeout=300)


def ask(sdk: openai.OpenAI, model: str, content: str = CONTEXT, **kw: Any):
    return sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=48, **kw
    )


def test_models_and_auth(sdk: openai.OpenAI, api_url: str) -> None:
    ids = [m.id for m in sdk.models.list().data]
    assert ids == ["dllmflow-ar", "dllmflow-diffusion"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{api_url}/v1", api_key="wrong").models.list()
    with pytest.raises(openai.NotFoundError, match="dllmflow-ar, dllmflow-diffusion"):
        ask(sdk, "gpt-4o")


def test_ar_streams_token_deltas(sdk: openai.OpenAI) -> None:
    full = ask(sdk, "dllmflow-ar")
    text = full.choices[0].message.content
    assert text and full.usage.completion_tokens > 0
    assert full.model_extra["dllmflow"]["backend"] == "ar"
    chunks = list(ask(sdk, "dllmflow-ar", stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert len([d for d in deltas if d]) > 3  # a token stream, not one blob
    assert "".join(d or "" for d in deltas) == text
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].model_extra["dllmflow"]["engine"] == "local"
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_diffusion_streams_refinement_passes_as_replacements(sdk: openai.OpenAI) -> None:
    full = ask(sdk, "dllmflow-diffusion")
    text = full.choices[0].message.content
    assert full.model_extra["dllmflow"]["refinement_passes"] > 1
    passes = []
    for chunk in ask(sdk, "dllmflow-diffusion", stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        ext = (delta.model_extra or {}).get("dllmflow") if delta else None
        if ext is not None:
            assert ext["replace"] is True
            passes.append((ext["refinement_pass"], ext["committed_fraction"], delta.content))
    assert len(passes) > 1
    numbers = [p[0] for p in passes]
    assert numbers == sorted(numbers) and numbers[0] >= 1
    assert any(MASK_GLYPH in p[2] for p in passes[:-1])  # partial passes show masked slots
    assert passes[-1][2] == text  # the last replacement is the final answer


def test_32_concurrent_clients_are_batched(sdk: openai.OpenAI) -> None:
    prompts = [CONTEXT.replace("Alma Verner", f"person {i}") for i in range(32)]
    alone = {p: ask(sdk, "dllmflow-ar", p).choices[0].message.content for p in prompts[:4]}

    def one(prompt: str):
        reply = ask(sdk, "dllmflow-ar", prompt)  # each call its own SDK request
        return reply.choices[0].message.content, reply.model_extra["dllmflow"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, prompts))
    assert time.perf_counter() - t0 < 300
    batches = [ext["mean_batch"] for _, ext in results]
    assert max(batches) > 4, batches  # the replica decoded them together
    for prompt, (text, _) in zip(prompts, results, strict=True):
        if prompt in alone:
            assert text == alone[prompt]  # batching changes nothing in the output


def test_a_slot_on_an_openai_compatible_engine(
    stack: Settings, api_url: str, api_token: str
) -> None:
    """The AR slot served over HTTP by an OpenAI-compatible engine (here: this API's /v1),
    planning on local diffusion replicas: routed and shadow across local and external."""
    external = ServingSettings(
        ar_kind="openai-compatible",
        ar_base_url=f"{api_url}/v1",
        ar_model="dllmflow-ar",
        ar_api_key=api_token,
        shadow_share=1.0,
    )
    local = ModelTurnGenerator(stack, ServingSettings(shadow_share=1.0))
    mixed = ModelTurnGenerator(stack, external)
    history = [Step("planner", '<think>plan</think>\n<action>{"tool": "search"}</action>')]

    def turn(role: str, policy: str) -> GenerateRequest:
        q = {"question": "Where was Alma Verner born?"}
        return GenerateRequest("ep-x", 1, role, policy, q, history, max_denoise_steps=256)

    events: list[dict] = []
    write = mixed.generate(turn("writer", "routed"), events.append)
    assert write.backend == "ar" and write.routing["engine"] == "openai-compatible"
    assert write.model == "openai-compatible:dllmflow-ar"
    alone = local.generate(turn("writer", "routed"), lambda e: None)
    assert write.text == alone.text, (write.text, alone.text, write.routing, alone.routing)
    assert events and {e["event"] for e in events} == {"tokens"}
    assert {e["engine"] for e in events} == {"openai-compatible"}
    assert "".join(e["text"] for e in events) == write.text

    plan = mixed.generate(turn("planner", "shadow"), lambda e: None)
    assert plan.routing["engine"] == "local" and plan.backend == "diffusion"
    assert plan.routing["shadow"]["engine"] == "openai-compatible"
    assert "error" not in plan.routing["shadow"]
