"""An OpenAI-compatible face for the model slots: /v1/models and /v1/chat/completions.

Any OpenAI client (the official SDK unmodified: ``OpenAI(base_url="http://host:8420/v1",
api_key=<the API token>)``) can call dllmflow's replicas. Bearer auth is the API's own token.

Models: ``dllmflow-ar`` and ``dllmflow-diffusion``, one per slot, served by whatever the slot is
configured with (our Ray replicas, which batch concurrent requests step by step, or an external
engine behind DLLMFLOW_<SLOT>_KIND). The messages' text (user and assistant turns, in order,
joined by newlines; system messages dropped, since the agent models bring their own system
prompt) is the context the model continues; decoding is greedy and, as for every agent turn,
stops after the ``</action>`` span. ``max_tokens`` (or ``max_completion_tokens``) caps the turn;
``tau`` and ``max_denoise_steps`` are accepted as extensions for the diffusion model.

Streaming (``stream=true``), as ``chat.completion.chunk`` server-sent events ending in
``data: [DONE]``:

- AR (and any external engine): each chunk's ``delta.content`` is the new text; concatenated
  they are the answer, as with any OpenAI server.
- local diffusion: a model that refines a whole block at once has no token stream. Each
  refinement pass is one chunk whose ``delta.content`` is the *whole* partial turn after that
  pass (U+2591 where a position is still masked) and whose ``delta.dllmflow`` extension says so:
  ``{"replace": true, "refinement_pass": n, "committed_fraction": f, "tokens_generated": k}``.
  A client shows the latest content instead of appending; the last content chunk is the final
  text, identical to the ``stream=false`` answer.

The final chunk (with ``finish_reason``) and every non-streamed completion carry a top-level
``dllmflow`` object: slot, engine, replica, queue and decode seconds, forward and refinement
passes, the replica's mean batch size while this request ran, and the stop reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from dllmflow.api.deps import require_token
from dllmflow.config import Settings
from dllmflow.models.sampling.base import GenerationRequest

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(require_token)])

MODEL_PREFIX = "dllmflow-"
MAX_TOKENS = 4096
FINISH = {"budget_exhausted": "length", "not_converged": "length"}  # else "stop"
# Generations run on their own threads (a blocking Ray stream each): the default pool has
# min(32, cores + 4) threads, which would cap how many requests a replica can batch.
MAX_CONCURRENT = 256


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # other OpenAI fields are accepted and ignored
    model: str = Field(description="dllmflow-ar or dllmflow-diffusion (see /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=1)
    tau: float | None = Field(default=None, gt=0, le=1, description="extension: diffusion")
    max_denoise_steps: int | None = Field(default=None, ge=1, description="extension: diffusion")


class ModelFace:
    """The slots' backends for this API process, created (and Ray connected) on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends: dict[str, Any] | None = None
        self._serving: Any = None
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(MAX_CONCURRENT, thread_name_prefix="v1-generate")

    def backends(self) -> tuple[Any, dict[str, Any]]:
        with self._lock:
            if self._backends is None:
                from dllmflow.workers.serving.backends import make_backends
                from dllmflow.workers.serving.connect import connect
                from dllmflow.workers.serving.pool import ReplicaPool
                from dllmflow.workers.serving.settings import ServingSettings

                serving = ServingSettings()
                backends = make_backends(serving, ReplicaPool(serving))
                if serving.local_backends():
                    connect(self.settings)
                self._serving, self._backends = serving, backends
            return self._serving, self._backends

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def face(request: Request) -> ModelFace:
    return request.app.state.models


def slot_of(model: str) -> str:
    slot = model.removeprefix(MODEL_PREFIX)
    if slot not in ("ar", "diffusion"):
        raise HTTPException(
            404, f"model {model!r} not found; models: dllmflow-ar, dllmflow-diffusion"
        )
    return slot


def _error(exc: Exception) -> HTTPException:
    """A serving error as an HTTP status the OpenAI clients understand (5xx/429: retry)."""
    from dllmflow.config import SettingsError
    from dllmflow.workers.serving.errors import GenerationTimeout, ServingError

    if isinstance(exc, SettingsError):
        return HTTPException(500, str(exc))
    if isinstance(exc, GenerationTimeout):
        return HTTPException(504, str(exc))
    if isinstance(exc, ServingError):
        return HTTPException(503 if exc.retryable else 400, str(exc))
    raise exc


@router.get("/models", summary="The model slots, OpenAI style")
async def list_models(models: ModelFace = Depends(face)) -> dict[str, Any]:
    serving, _ = await run_in_threadpool(models.backends)
    data = []
    for slot in ("ar", "diffusion"):
        engine = serving.engine(slot)
        data.append(
            {
                "id": MODEL_PREFIX + slot,
                "object": "model",
                "created": 0,
                "owned_by": "dllmflow",
                "dllmflow": {
                    "slot": slot,
                    "kind": engine.kind,
                    "checkpoint": serving.checkpoint(slot) if engine.kind == "local" else None,
                    "engine_model": engine.model or None,
                },
            }
        )
    return {"object": "list", "data": data}


def _extension(outcome: Any) -> dict[str, Any]:
    meta = outcome.metadata()
    keep = (
        "backend",
        "engine",
        "replica",
        "model",
        "queue_s",
        "decode_s",
        "latency_s",
        "tokens",
        "prompt_tokens",
        "forward_passes",
        "refinement_passes",
        "mean_batch",
        "stop_reason",
    )
    return {k: meta[k] for k in keep if k in meta}


def _usage(outcome: Any) -> dict[str, int]:
    r = outcome.result
    prompt, completion = int(r["prompt_tokens"]), int(r["tokens_generated"])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@router.post("/chat/completions", summary="Chat completion on a model slot (stream or not)")
async def chat_completions(body: ChatCompletionRequest, models: ModelFace = Depends(face)):
    slot = slot_of(body.model)
    serving, backends = await run_in_threadpool(models.backends)
    backend = backends[slot]
    prompt = "\n".join(m.text() for m in body.messages if m.role not in ("system", "developer"))
    gen = GenerationRequest(
        prompt=prompt,
        max_new_tokens=body.max_completion_tokens or body.max_tokens or serving.max_new_tokens,
        tau=body.tau or serving.tau,
        max_denoise_steps=body.max_denoise_steps if slot == "diffusion" else None,
        request_id=f"v1:{uuid.uuid4().hex[:12]}",
    )
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    loop = asyncio.get_running_loop()
    if not body.stream:
        try:
            outcome = await loop.run_in_executor(models.executor, backend.generate, gen)
        except Exception as exc:
            raise _error(exc) from None
        text = outcome.result["text"]
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": FINISH.get(outcome.result["stop_reason"], "stop"),
                }
            ],
            "usage": _usage(outcome),
            "dllmflow": _extension(outcome),
        }

    queue: asyncio.Queue = asyncio.Queue()

    def on_event(_slot: str, _replica: str, event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("event", event))

    def run() -> None:
        try:
            outcome = backend.generate(gen, on_event)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", outcome))
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    models.executor.submit(run)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return StreamingResponse(
        _chunks(queue, cid, created, body.model, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _chunks(
    queue: asyncio.Queue, cid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload, default=str)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    last_replacement: dict[str, Any] | None = None
    while True:
        what, item = await queue.get()
        if what == "event":
            if item["kind"] == "refinement":
                last_replacement = item
                yield chunk(
                    {
                        "content": item["text"],
                        "dllmflow": {
                            "replace": True,
                            "refinement_pass": item["refinement_passes"],
                            "committed_fraction": item["committed_fraction"],
                            "tokens_generated": item["tokens_generated"],
                            "done": item["done"],
                        },
                    }
                )
            elif item["text"]:
                yield chunk({"content": item["text"]})
            continue
        if what == "error":
            try:
                err = _error(item)
                message, status = str(err.detail), err.status_code
            except Exception as exc:  # not a serving error: say what it was, keep the stream
                message, status = f"internal error ({type(exc).__name__})", 500
            # Headers are sent: the error goes in the stream, as OpenAI servers do.
            payload = {"error": {"message": message, "type": "server_error", "code": status}}
            yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"
            return
        outcome = item
        final = outcome.result["text"]
        if last_replacement is not None and last_replacement["text"] != final:
            # The sampler's last pass shows the block; the turn ends earlier (after its action).
            yield chunk(
                {
                    "content": final,
                    "dllmflow": {
                        "replace": True,
                        "refinement_pass": outcome.result["refinement_passes"],
                        "committed_fraction": 1.0,
                        "tokens_generated": outcome.result["tokens_generated"],
                        "done": True,
                    },
                }
            )
        finish = FINISH.get(outcome.result["stop_reason"], "stop")
        yield chunk({}, finish, dllmflow=_extension(outcome))
        if include_usage:
            payload = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(outcome),
            }
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"
        return
