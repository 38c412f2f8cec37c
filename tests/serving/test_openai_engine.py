"""The openai-compatible slot backend against a scripted engine on a real HTTP port.

The engine below speaks the OpenAI chat/completions wire format (SSE chunks, error bodies) and
answers each request as its script says: stream a turn, 429, 500, 401, 404, or cut the stream.
That tests what a real engine (vLLM, SGLang, llama.cpp) cannot be made to do on demand; the
llama.cpp test and the stack tests run against real servers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from dllmflow.models.sampling.base import GenerationRequest
from dllmflow.workers.serving.backends import make_backends
from dllmflow.workers.serving.errors import EngineUnavailable, GenerationFailed
from dllmflow.workers.serving.openai_engine import OpenAICompatibleBackend
from dllmflow.workers.serving.pool import ReplicaPool
from dllmflow.workers.serving.router import Router
from dllmflow.workers.serving.settings import BackendSettingsError, ServingSettings
from tests.conftest import free_ports

KEY = "sk-test-secret-4242"
TURN = ["<think>The answer is ", 'in d1.</think>\n<action>{"tool": "answer", ', '"args": {}}']


class Engine:
    """A scripted OpenAI-compatible server; ``script`` is consumed one entry per request."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.handle, methods=["POST"]),
                Route("/v1/completions", self.handle, methods=["POST"]),
            ]
        )
        (port,) = free_ports(1)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "scripted engine did not start"
            time.sleep(0.02)

    async def handle(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("authorization"))
        mode = self.script.pop(0) if self.script else "turn"
        if mode in ("429", "500", "503", "401", "404", "400"):
            return JSONResponse(
                {"error": {"message": f"scripted {mode}", "type": "x"}},
                status_code=int(mode),
                headers={"retry-after-ms": "10"},
            )
        chat = request.url.path.endswith("chat/completions")
        pieces = TURN if mode in ("turn", "cut") else ["no action here"]

        async def stream() -> Iterator[str]:
            for i, piece in enumerate(pieces):
                if mode == "cut" and i == 2:
                    raise RuntimeError("engine died mid-stream")
                choice = {"index": 0, "finish_reason": None}
                choice.update({"delta": {"content": piece}} if chat else {"text": piece})
                yield f"data: {json.dumps({'id': 'c', 'object': 'x', 'choices': [choice]})}\n\n"
            done = {"index": 0, "finish_reason": "stop"}
            done.update({"delta": {}} if chat else {"text": ""})
            yield f"data: {json.dumps({'id': 'c', 'choices': [done]})}\n\n"
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            yield f"data: {json.dumps({'id': 'c', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = Engine()
    yield e
    e.stop()


def backend_for(engine: Engine, **overrides: Any) -> OpenAICompatibleBackend:
    serving = ServingSettings(
        ar_kind="openai-compatible",
        ar_base_url=engine.base_url,
        ar_model="served-model",
        ar_api_key=KEY,
        ar_max_retries=overrides.pop("max_retries", 3),
        ar_timeout_s=overrides.pop("timeout_s", 10),
        **{f"ar_{k}": v for k, v in overrides.items()},
    )
    backend = make_backends(serving, ReplicaPool(serving))["ar"]
    assert isinstance(backend, OpenAICompatibleBackend)
    return backend


def test_streams_deltas_as_token_events_and_restores_the_stop(engine: Engine) -> None:
    engine.script[:] = ["turn"]
    backend = backend_for(engine)
    events: list[tuple[str, str, dict]] = []
    out = backend.generate(
        GenerationRequest(prompt="Role: writer\n", max_new_tokens=64),
        lambda *a: events.append(a),
    )
    sent = engine.requests[-1]
    assert sent["model"] == "served-model" and sent["stream"] is True
    assert sent["stop"] == ["</action>"] and sent["max_tokens"] == 64
    assert sent["messages"][-1] == {"role": "user", "content": "Role: writer\n"}
    assert engine.auth[-1] == f"Bearer {KEY}"
    # The engine dropped the stop string; the turn gets it back and ends "action_closed".
    assert out.result["text"] == "".join(TURN) + "</action>"
    assert out.result["stop_reason"] == "action_closed"
    assert out.result["tokens_generated"] == 7 and out.result["prompt_tokens"] == 11
    assert out.engine == "openai-compatible" and out.backend == "ar"
    assert out.metadata()["engine"] == "openai-compatible"
    assert [e[2]["kind"] for e in events] == ["tokens"] * len(events)
    assert "".join(e[2]["text"] for e in events) == out.result["text"]
    assert events[-1][2]["done"] and not any(e[2]["done"] for e in events[:-1])
    assert sum(e[2]["action_text"] is not None for e in events) == 1


def test_completions_endpoint_sends_the_raw_context(engine: Engine) -> None:
    engine.script[:] = ["turn"]
    out = backend_for(engine, endpoint="completions").generate(
        GenerationRequest(prompt="Role: seeker\n", max_new_tokens=32)
    )
    assert engine.requests[-1]["prompt"] == "Role: seeker\n"
    assert out.result["text"].endswith("</action>")


def test_429_and_5xx_are_retried_with_backoff(engine: Engine) -> None:
    engine.script[:] = ["429", "503", "turn"]
    before = len(engine.requests)
    out = backend_for(engine, max_retries=3).generate(GenerationRequest(prompt="x"))
    assert len(engine.requests) - before == 3 and out.result["stop_reason"] == "action_closed"


def test_exhausted_retries_are_a_retryable_error(engine: Engine) -> None:
    engine.script[:] = ["429", "429", "429"]
    with pytest.raises(EngineUnavailable, match="429 after 2 retries") as info:
        backend_for(engine, max_retries=2).generate(GenerationRequest(prompt="x"))
    assert info.value.retryable and "DLLMFLOW_AR_MAX_RETRIES" in str(info.value)


def test_rejections_are_not_retryable_and_name_the_setting(engine: Engine) -> None:
    engine.script[:] = ["401"]
    with pytest.raises(GenerationFailed, match="DLLMFLOW_AR_API_KEY") as info:
        backend_for(engine).generate(GenerationRequest(prompt="x"))
    assert not info.value.retryable and KEY not in str(info.value)
    engine.script[:] = ["404"]
    with pytest.raises(GenerationFailed, match="DLLMFLOW_AR_MODEL") as info:
        backend_for(engine).generate(GenerationRequest(prompt="x"))
    assert not info.value.retryable


def test_a_stream_cut_short_is_retryable(engine: Engine) -> None:
    engine.script[:] = ["cut"]
    events: list = []
    with pytest.raises(EngineUnavailable, match="stream broke after 2 deltas") as info:
        backend_for(engine).generate(GenerationRequest(prompt="x"), lambda *a: events.append(a))
    assert info.value.retryable and len(events) == 2


def test_an_engine_that_is_down_is_retryable() -> None:
    (port,) = free_ports(1)
    serving = ServingSettings(
        diffusion_kind="openai-compatible",
        diffusion_base_url=f"http://127.0.0.1:{port}/v1",
        diffusion_model="m",
        diffusion_max_retries=1,
    )
    backend = make_backends(serving, ReplicaPool(serving))["diffusion"]
    with pytest.raises(EngineUnavailable, match="unreachable after 1 retries") as info:
        backend.generate(GenerationRequest(prompt="x"))
    assert info.value.retryable and "DLLMFLOW_DIFFUSION_BASE_URL" in str(info.value)


def test_no_action_ends_as_eos(engine: Engine) -> None:
    engine.script[:] = ["plain"]
    out = backend_for(engine).generate(GenerationRequest(prompt="x"))
    assert out.result["text"] == "no action here" and out.result["stop_reason"] == "eos"


def test_settings_errors_name_the_variable_and_hide_the_key() -> None:
    with pytest.raises(BackendSettingsError, match="DLLMFLOW_AR_BASE_URL must be set"):
        make_backends(ServingSettings(ar_kind="openai-compatible", ar_api_key=KEY), None)
    bad_url = ServingSettings(ar_kind="openai-compatible", ar_base_url="localhost:8000/v1")
    with pytest.raises(BackendSettingsError, match="DLLMFLOW_AR_BASE_URL must be an http"):
        make_backends(bad_url, None)
    no_model = ServingSettings(diffusion_kind="openai-compatible", diffusion_base_url="http://h/v1")
    with pytest.raises(BackendSettingsError, match="DLLMFLOW_DIFFUSION_MODEL must be set"):
        make_backends(no_model, None)
    with pytest.raises(ValidationError) as info:
        ServingSettings(ar_kind="vllm", ar_api_key=KEY)
    assert "ar_kind" in str(info.value) and KEY not in str(info.value)
    with pytest.raises(ValidationError) as info:
        ServingSettings(pair="nope", ar_api_key=KEY)
    assert KEY not in str(info.value)
    with pytest.raises(ValidationError, match="JSON object"):
        ServingSettings(ar_extra_body="[1]")
    s = ServingSettings(ar_api_key=KEY, ar_extra_body='{"grammar": "root ::= x"}')
    assert s.engine("ar").extra_body == {"grammar": "root ::= x"}
    assert KEY not in repr(s) and KEY not in repr(s.engine("ar"))


def test_the_key_is_never_logged(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    engine.script[:] = ["500", "turn"]
    with caplog.at_level(logging.DEBUG):
        backend = backend_for(engine, max_retries=2)
        backend.generate(GenerationRequest(prompt="x"))
    assert caplog.records and KEY not in caplog.text and KEY not in repr(backend)


def test_policies_mix_a_local_slot_and_an_external_one(engine: Engine) -> None:
    """The router calls whatever backs a slot: here AR is the engine, diffusion a stand-in."""
    from dllmflow.workers.serving.backends import SlotBackend
    from dllmflow.workers.serving.pool import Outcome

    class Local(SlotBackend):
        slot, kind = "diffusion", "local"

        def limits(self):
            return {"max_position": 1024, "prompt_slack": 0, "context_tokens": None}

        def count_tokens(self, text):
            return len(text)

        def describe(self):
            return {}

        def generate(self, request, on_event=None, timeout_s=None):
            result = {"text": "local", "decode_seconds": 0.0, "tokens_generated": 1}
            result |= {"prompt_tokens": 1, "forward_passes": 1, "refinement_passes": 1}
            result |= {"stop_reason": "action_closed"}
            return Outcome("diffusion", "d-0", "m", result, 0, 0, 0, 1.0, 0, 0)

    serving = ServingSettings(shadow_share=1.0)
    router = Router({"ar": backend_for(engine), "diffusion": Local()}, serving)
    engine.script[:] = []
    write = router.generate("write", "routed", "e1", lambda b: GenerationRequest(prompt=b))
    assert write.routing["engine"] == "openai-compatible" and write.outcome.backend == "ar"
    plan = router.generate("plan", "shadow", "e1", lambda b: GenerationRequest(prompt=b))
    assert plan.outcome.result["text"] == "local" and plan.routing["engine"] == "local"
    assert plan.routing["shadow"]["engine"] == "openai-compatible"
    assert plan.routing["shadow"]["text"].endswith("</action>")
    assert engine.requests[-1]["messages"][-1]["content"] == "ar"  # built for the AR slot
