"""A slot served by an external OpenAI-compatible engine (vLLM, SGLang, llama.cpp, a hosted API).

The official ``openai`` client does the HTTP: SSE parsing, timeouts, and retries with
exponential backoff on 408/409/429/5xx and connection errors (``max_retries``, before the
stream starts). What it cannot recover becomes a serving error the episode activity
understands: ``EngineUnavailable`` (retryable: the activity is tried again) for an engine that
is down, overloaded or cut the stream; ``GenerationFailed(retryable=False)`` for a request the
engine rejects (bad key, unknown model, bad input), with the DLLMFLOW_* variable to fix.

Streaming: every content delta becomes a ``"tokens"`` progress event, exactly like a local AR
replica's, so the episode's SSE stream shows them the same way. The turn ends where a local
turn would (``find_turn_end``); ``</action>`` is also sent as a stop sequence so the engine
stops there, and put back on the text (engines drop the stop string).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import openai

from dllmflow.agent.actions import ACTION_CLOSE, ACTION_OPEN
from dllmflow.models.sampling.base import (
    AGENT_SYSTEM_PROMPT,
    GenerationRequest,
    action_span,
    find_turn_end,
)

from .backends import SlotBackend
from .errors import EngineUnavailable, GenerationFailed, GenerationTimeout
from .pool import EventCallback, Outcome
from .settings import EngineSettings

log = logging.getLogger(__name__)
KIND = "openai-compatible"
BYTES_PER_TOKEN = 3  # token estimate without the engine's tokenizer: over-counts English (~4)
NO_KEY = "unset"  # the client needs some key; engines started without --api-key ignore it


def engine_label(base_url: str) -> str:
    """host:port of the engine, for the turn record (never credentials from the URL)."""
    parts = urlsplit(base_url)
    return f"{KIND}@{parts.hostname}{f':{parts.port}' if parts.port else ''}"


class OpenAICompatibleBackend(SlotBackend):
    kind = KIND

    def __init__(self, engine: EngineSettings, call_timeout_s: float = 600.0) -> None:
        engine.check()
        self.engine = engine
        self.slot = engine.slot
        self.call_timeout_s = call_timeout_s
        self.replica = engine_label(engine.base_url)
        key = engine.api_key.get_secret_value() if engine.api_key is not None else NO_KEY
        self.client = openai.OpenAI(
            base_url=engine.base_url,
            api_key=key or NO_KEY,
            timeout=openai.Timeout(engine.timeout_s, connect=min(engine.timeout_s, 10.0)),
            max_retries=engine.max_retries,
        )
        self._system_tokens = self.count_tokens(AGENT_SYSTEM_PROMPT) + 32

    def __repr__(self) -> str:
        return f"OpenAICompatibleBackend({self.engine!r})"

    def limits(self) -> dict[str, Any]:
        slack = self._system_tokens if self.engine.endpoint == "chat" else 0
        return {
            "max_position": self.engine.context_window,
            "prompt_slack": slack,
            "context_tokens": None,
        }

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)

    def describe(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "kind": self.kind,
            "model": f"{KIND}:{self.engine.model}",
            "engine": self.replica,
            "endpoint": self.engine.endpoint,
            "max_position": self.engine.context_window,
        }

    # --- one generation -------------------------------------------------------------------

    def _open(self, request: GenerationRequest, stop: list[str] | None) -> Any:
        common: dict[str, Any] = {
            "model": self.engine.model,
            "max_tokens": request.max_new_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": self.engine.extra_body or None,
        }
        if stop:
            common["stop"] = stop
        if self.engine.endpoint == "chat":
            messages = [
                {"role": "system", "content": AGENT_SYSTEM_PROMPT},
                # An external chat engine has no portable way to continue an assistant turn:
                # the turn's prefix stays at the end of the user message there.
                {"role": "user", "content": request.prompt + request.turn_prefix},
            ]
            return self.client.chat.completions.create(messages=messages, **common)
        return self.client.completions.create(prompt=request.prompt + request.turn_prefix, **common)

    def _rejected(self, exc: openai.APIStatusError) -> GenerationFailed | EngineUnavailable:
        e, status = self.engine, exc.status_code
        where = f"{self.slot} engine {e.base_url} ({e.variable('base_url')})"
        detail = _server_message(exc)
        if status == 429 or status >= 500 or status in (408, 409):
            return EngineUnavailable(
                f"{where} answered {status} after {e.max_retries} retries "
                f"({e.variable('max_retries')}): {detail}"
            )
        if status in (401, 403):
            return GenerationFailed(
                f"{where} rejected the API key ({status}); check {e.variable('api_key')}"
            )
        if status == 404:
            return GenerationFailed(
                f"{where} answered 404 for model {e.model!r} on /{_path(e.endpoint)}: check "
                f"{e.variable('model')} (its /v1/models lists the names), "
                f"{e.variable('base_url')} (it ends in /v1) and {e.variable('endpoint')}: "
                f"{detail}"
            )
        return GenerationFailed(f"{where} rejected the request ({status}): {detail}")

    def generate(
        self,
        request: GenerationRequest,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> Outcome:
        t0 = time.perf_counter()
        deadline = t0 + (timeout_s or self.call_timeout_s)
        e = self.engine
        use_stop = request.stop_at_action_close and not request.action_first
        try:
            stream = self._open(request, [ACTION_CLOSE] if use_stop else None)
        except openai.APIStatusError as exc:
            raise self._rejected(exc) from None
        except openai.APITimeoutError:
            raise EngineUnavailable(
                f"{self.slot} engine {e.base_url} did not answer within {e.timeout_s} s "
                f"({e.variable('timeout_s')}) after {e.max_retries} retries"
            ) from None
        except openai.APIConnectionError as exc:
            raise EngineUnavailable(
                f"{self.slot} engine {e.base_url} unreachable after {e.max_retries} retries "
                f"({e.variable('base_url')}): {exc.__cause__ or exc}"
            ) from None

        text, chunks, first_at = "", 0, None
        finish: str | None = None
        usage: Any = None
        stop_reason: str | None = None
        action_at: tuple[int, float] | None = None
        action_text: str | None = None

        def emit(delta: str, done: bool) -> None:
            nonlocal action_at, action_text
            span = action_span(text) if action_at is None else None
            if span is not None:
                action_at, action_text = (chunks, time.perf_counter() - t0), span
            if on_event is not None:
                on_event(
                    self.slot,
                    self.replica,
                    {
                        "request_id": request.request_id,
                        "kind": "tokens",
                        "text": delta,
                        "tokens_generated": chunks,
                        "committed_fraction": 1.0,
                        "forward_passes": chunks,
                        "refinement_passes": 0,
                        "action_text": span,
                        "done": done,
                        "stop_reason": stop_reason if done else None,
                    },
                )

        try:
            for chunk in stream:
                if time.perf_counter() > deadline:
                    raise GenerationTimeout(
                        f"{self.slot} engine {e.base_url} ran past the call deadline "
                        f"({self.call_timeout_s} s, DLLMFLOW_CALL_TIMEOUT_S)"
                    )
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = (
                    (choice.delta.content or "") if e.endpoint == "chat" else (choice.text or "")
                )
                finish = choice.finish_reason or finish
                if not delta or stop_reason is not None:  # after the turn ended: usage only
                    continue
                chunks += 1
                first_at = first_at or time.perf_counter()
                before = text
                text += delta
                end = find_turn_end(text, request.action_first, request.stop_at_action_close)
                if end is not None:
                    text = text[:end]
                    stop_reason = "turn_closed" if request.action_first else "action_closed"
                    emit(text[len(before) :], True)
                    if not use_stop:  # the engine would go on: stop reading
                        break
                    # It was told to stop here too: read on for its usage, content ignored.
                    continue
                emit(delta, False)
        except (GenerationTimeout, EngineUnavailable):
            raise
        except openai.APIStatusError as exc:
            raise self._rejected(exc) from None
        except Exception as exc:  # the connection broke mid-stream, or a read timed out
            raise EngineUnavailable(
                f"{self.slot} engine {e.base_url} stream broke after {chunks} deltas: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            stream.close()

        if stop_reason is None:
            if finish == "length" or (usage and usage.completion_tokens >= request.max_new_tokens):
                stop_reason = "budget_exhausted"
            elif use_stop and ACTION_OPEN in text and ACTION_CLOSE not in text:
                # The engine stopped on "</action>" and, as they all do, left it out.
                stop_reason = "action_closed"
                text += ACTION_CLOSE
                emit(ACTION_CLOSE, True)
            else:
                stop_reason = "eos"
            if stop_reason != "action_closed":
                emit("", True)
        end_at = time.perf_counter()
        tokens = usage.completion_tokens if usage is not None else chunks
        result = {
            "request_id": request.request_id or uuid.uuid4().hex,
            "text": text,
            "token_ids": [],
            "tokens_generated": tokens,
            "prompt_tokens": usage.prompt_tokens if usage is not None else 0,
            "forward_passes": chunks,
            "refinement_passes": 0,
            "decode_seconds": end_at - (first_at or end_at),
            "stop_reason": stop_reason,
            "action_ready_pass": action_at[0] if action_at else None,
            "action_ready_seconds": action_at[1] if action_at else None,
            "action_text": action_text,
            "tokens_per_forward": tokens / max(1, chunks),
        }
        queue_s = (first_at or end_at) - t0  # until the first delta: queue + prefill there
        return Outcome(
            backend=self.slot,
            replica=self.replica,
            model=f"{KIND}:{e.model}",
            result=result,
            queue_s=queue_s,
            latency_s=end_at - t0,
            ttfuo_s=None if first_at is None else first_at - t0,
            mean_batch=0.0,  # not reported by external engines
            call_s=end_at - t0,
            call_ttfuo_s=None if first_at is None else first_at - t0,
            engine=KIND,
        )


def _path(endpoint: str) -> str:
    return "chat/completions" if endpoint == "chat" else "completions"


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        message = err.get("message") if isinstance(err, dict) else err
        if message:
            return str(message)[:300]
    return str(exc.message)[:300]
