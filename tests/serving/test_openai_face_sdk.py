"""/v1/chat/completions and /v1/models read by the official `openai` SDK, unmodified, over real
HTTP (uvicorn on a free port), with each slot decoded by a real sampler in this process (the
shipped tiny pair), so the wire format is tested without booting the stack. The stack
tests (tests/api/test_openai_face.py) do the same against the Ray replicas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import openai
import pytest
import uvicorn

from dllmflow.api.app import create_app
from dllmflow.config import load_settings
from dllmflow.models.loader import Backend
from dllmflow.models.sampling.base import MASK_GLYPH, GenerationRequest
from dllmflow.workers.serving.backends import SlotBackend
from dllmflow.workers.serving.openai_engine import OpenAICompatibleBackend
from dllmflow.workers.serving.pool import Outcome
from dllmflow.workers.serving.settings import ServingSettings
from tests.conftest import free_ports

TOKEN = "face-test-token"
CONTEXT = "Role: seeker\nQuestion: Where was Alma Verner born?\nTurn 1 seeker:\n"


class InProcess(SlotBackend):
    """A slot decoded by a sampler in this process (what a Ray replica runs, minus Ray)."""

    kind = "local"

    def __init__(self, slot: str, backend: Backend) -> None:
        self.slot, self.backend = slot, backend
        self.lock = threading.Lock()

    def limits(self) -> dict[str, Any]:
        return {"max_position": 1024, "prompt_slack": 0, "context_tokens": None}

    def count_tokens(self, text: str) -> int:
        return len(self.backend.tokenizer(text)["input_ids"])

    def describe(self) -> dict[str, Any]:
        return {"slot": self.slot}

    def generate(self, request: GenerationRequest, on_event=None, timeout_s=None) -> Outcome:
        with self.lock:
            result = self.backend.sampler.generate(
                request,
                None
                if on_event is None
                else lambda e: on_event(self.slot, "in-process", asdict(e)),
            )
        return Outcome(self.slot, "in-process", "tiny", result.to_dict(), 0, 0, 0, 1.0, 0, 0)


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[str]:
    from dllmflow.models.loader import load_backend, resolve_checkpoint

    shipped = {s: load_backend(str(resolve_checkpoint(s))) for s in ("ar", "diffusion")}
    settings = load_settings(state_dir=tmp_path_factory.mktemp("face"), api_token=TOKEN)
    app = create_app(settings)
    face = app.state.models
    face._serving = ServingSettings(max_new_tokens=24)
    face._backends = {s: InProcess(s, shipped[s]) for s in ("ar", "diffusion")}
    (port,) = free_ports(1)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def sdk(api: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=api, api_key=TOKEN, max_retries=0)


def ask(sdk: openai.OpenAI, model: str, **kw: Any):
    return sdk.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": CONTEXT}],
        max_tokens=24,
        **kw,
    )


def test_models_auth_and_unknown_model(sdk: openai.OpenAI, api: str) -> None:
    assert [m.id for m in sdk.models.list().data] == ["dllmflow-ar", "dllmflow-diffusion"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=api, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="dllmflow-ar, dllmflow-diffusion"):
        ask(sdk, "gpt-4o")
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="dllmflow-ar", messages=[], max_tokens=4)


def test_ar_stream_is_token_deltas_adding_up_to_the_reply(sdk: openai.OpenAI) -> None:
    full = ask(sdk, "dllmflow-ar")
    text = full.choices[0].message.content
    assert text.strip() and full.object == "chat.completion"
    assert full.usage.completion_tokens == full.model_extra["dllmflow"]["tokens"] > 0
    chunks = list(ask(sdk, "dllmflow-ar", stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(bool(d) for d in deltas) > 3
    assert "".join(deltas) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].model_extra["dllmflow"]["backend"] == "ar"


def test_diffusion_stream_is_replacement_passes(sdk: openai.OpenAI) -> None:
    full = ask(sdk, "dllmflow-diffusion")
    text = full.choices[0].message.content
    passes = []
    for chunk in ask(sdk, "dllmflow-diffusion", stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        ext = (delta.model_extra or {}).get("dllmflow") if delta is not None else None
        if ext:
            assert ext["replace"] is True
            passes.append((ext["refinement_pass"], delta.content, ext["committed_fraction"]))
    assert len(passes) > 1 and [p[0] for p in passes] == sorted(p[0] for p in passes)
    assert any(MASK_GLYPH in p[1] for p in passes[:-1])
    assert passes[-1][1] == text and passes[-1][2] == 1.0


def test_our_face_serves_as_an_external_engine(sdk: openai.OpenAI, api: str) -> None:
    """The openai-compatible slot backend pointed at /v1 gets the same turn as the face."""
    serving = ServingSettings(
        ar_kind="openai-compatible", ar_base_url=api, ar_model="dllmflow-ar", ar_api_key=TOKEN
    )
    events: list = []
    out = OpenAICompatibleBackend(serving.engine("ar")).generate(
        GenerationRequest(prompt=CONTEXT, max_new_tokens=24), lambda *a: events.append(a[2])
    )
    assert out.result["text"] == ask(sdk, "dllmflow-ar").choices[0].message.content
    assert "".join(e["text"] for e in events) == out.result["text"]


def test_a_whole_turn_through_the_face_matches_the_face(sdk: openai.OpenAI, api: str) -> None:
    """A turn that closes its action: the engine backend ends it exactly where the face does."""
    from dllmflow.agent.prompting import Step, render_context

    history = [Step("planner", '<think>plan</think>\n<action>{"tool": "search"}</action>')]
    prompt = render_context("writer", "Where was Alma Verner born?", history)
    serving = ServingSettings(
        ar_kind="openai-compatible", ar_base_url=api, ar_model="dllmflow-ar", ar_api_key=TOKEN
    )
    events: list = []
    out = OpenAICompatibleBackend(serving.engine("ar")).generate(
        GenerationRequest(prompt=prompt, max_new_tokens=160), lambda *a: events.append(a[2])
    )
    assert "".join(e["text"] for e in events) == out.result["text"]
    assert [e["done"] for e in events].count(True) == 1 and events[-1]["done"]
    direct = sdk.chat.completions.create(
        model="dllmflow-ar", messages=[{"role": "user", "content": prompt}], max_tokens=160
    )
    assert direct.choices[0].message.content.endswith("</action>")
    assert out.result["text"] == direct.choices[0].message.content
    assert out.result["stop_reason"] == "action_closed"
