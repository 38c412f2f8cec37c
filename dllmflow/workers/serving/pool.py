"""Caller side of the replicas: pick a replica, stream its progress, map failures to errors."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from dllmflow.models.sampling.base import GenerationRequest

from .errors import GenerationFailed, GenerationTimeout, ReplicaUnavailable
from .replicas import replica_actor, replica_name
from .settings import ServingSettings

# (backend, replica name, ProgressEvent as a dict)
EventCallback = Callable[[str, str, dict[str, Any]], None]
POLL_S = 1.0  # how often a waiting caller re-checks its deadline
LIVENESS_S = 3.0  # how often a waiting caller asks the GCS whether its replica still lives


class _ReplicaLost(Exception):
    """The replica serving a stream died or was restarted; the stream will not go on."""


def incarnation(handle: Any) -> tuple[str, int, str] | None:
    """(state, restarts, node id) of the actor behind `handle`, from the GCS; None if unknown.

    A stream from an actor whose node was killed never ends by itself (its next item stays
    pending, no RayActorError), so a caller that is still waiting compares this with what it
    was when the call started."""
    try:
        info = ray._private.state.actors(actor_id=handle._actor_id.hex())
        return info["State"], int(info["NumRestarts"]), info["Address"]["NodeID"]
    except Exception:  # a private API; without it only the deadline applies
        return None


def lost(before: tuple[str, int, str] | None, now: tuple[str, int, str] | None) -> bool:
    if before is None or now is None:
        return False
    state, restarts, node = now
    if state == "DEAD" or restarts > before[1]:
        return True
    return before[0] == "ALIVE" and (state != "ALIVE" or node != before[2])


@dataclass
class Outcome:
    """One finished generation on one replica, with the replica's and the caller's timings."""

    backend: str
    replica: str
    model: str
    result: dict[str, Any]  # GenerationResult.to_dict()
    queue_s: float  # waiting in the replica for a batch slot
    latency_s: float  # in the replica: arrival -> done
    ttfuo_s: float | None  # in the replica: arrival -> first useful output
    mean_batch: float
    call_s: float  # at the caller: call -> result (adds Ray transport, replica start-up)
    call_ttfuo_s: float | None  # at the caller: call -> first useful output arrived
    engine: str = "local"  # the slot's backend kind: "local" replicas or "openai-compatible"

    def metadata(self) -> dict[str, Any]:
        r = self.result
        return {
            "backend": self.backend,
            "engine": self.engine,
            "replica": self.replica,
            "model": self.model,
            "queue_s": self.queue_s,
            "decode_s": r["decode_seconds"],
            "latency_s": self.call_s,
            "replica_latency_s": self.latency_s,
            "ttfuo_s": self.call_ttfuo_s if self.call_ttfuo_s is not None else self.ttfuo_s,
            "replica_ttfuo_s": self.ttfuo_s,
            "tokens": r["tokens_generated"],
            "prompt_tokens": r["prompt_tokens"],
            "forward_passes": r["forward_passes"],
            "refinement_passes": r["refinement_passes"],
            "mean_batch": self.mean_batch,
            "stop_reason": r["stop_reason"],
        }


class _NotStarted(ReplicaUnavailable):
    """The replica was down before the request produced anything: safe to resend."""


class ReplicaPool:
    """Handles to every replica of every backend, created on first use."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self._handles: dict[str, list[Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._tokenizers: dict[str, Any] = {}
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def handles(self, backend: str) -> list[Any]:
        with self._lock:
            if backend not in self._handles:
                n = self.settings.replicas(backend)
                self._handles[backend] = [
                    replica_actor(self.settings, backend, i) for i in range(n)
                ]
            return self._handles[backend]

    def forget(self, backend: str) -> None:
        """Drop the cached handles of ``backend``; the next call resolves them by name."""
        with self._lock:
            self._handles.pop(backend, None)

    def info(self, backend: str) -> dict[str, Any]:
        """describe() of the first replica (model limits, checkpoint); waits for it to load."""
        if backend not in self._info:
            self._info[backend] = self._get("describe", backend)
        return self._info[backend]

    def tokenizer(self, backend: str) -> Any:
        if backend not in self._tokenizers:
            self._tokenizers[backend] = self._get("tokenizer", backend)
        return self._tokenizers[backend]

    def _get(self, method: str, backend: str) -> Any:
        """``ray.get`` of the first replica's `method`, waiting out a replica that is
        restarting. A dead handle is dropped and the replica looked up again by name each
        try (created anew if it is gone for good: its owner exited or dropped it), instead of
        asking the dead one until the deadline."""
        deadline = time.perf_counter() + self.settings.call_timeout_s
        while True:
            handle = self.handles(backend)[0]
            try:
                call = getattr(handle, method).remote()
                return ray.get(call, timeout=max(0.1, deadline - time.perf_counter()))
            except RayActorError as exc:
                if time.perf_counter() + 1.0 > deadline:
                    raise ReplicaUnavailable(
                        f"{backend} replica unavailable ({method}): {exc}"
                    ) from None
                self.forget(backend)
                time.sleep(1.0)
            except GetTimeoutError:
                raise GenerationTimeout(
                    f"{backend} replica did not answer {method} in time"
                ) from None

    def _pick(self, backend: str) -> tuple[int, Any]:
        """The replica with the fewest calls in flight from this process."""
        handles = self.handles(backend)
        with self._lock:
            loads = [self._inflight.get(replica_name(backend, i), 0) for i in range(len(handles))]
            index = loads.index(min(loads))
            name = replica_name(backend, index)
            self._inflight[name] = self._inflight.get(name, 0) + 1
        return index, handles[index]

    def generate(
        self,
        backend: str,
        request: GenerationRequest,
        on_event: EventCallback | None = None,
        timeout_s: float | None = None,
    ) -> Outcome:
        """Decode ``request`` on the least-loaded replica of ``backend``.

        A replica that is down before the request produced anything (restarting after a
        crash) is waited for and retried; once progress has been streamed, a dying replica
        raises ReplicaUnavailable instead, so the caller's retry starts the turn cleanly.
        """
        deadline = time.perf_counter() + (timeout_s or self.settings.call_timeout_s)
        backoff = 0.25
        while True:
            index, handle = self._pick(backend)
            name = replica_name(backend, index)
            try:
                return self._stream(backend, name, handle, request, on_event, deadline)
            except _NotStarted as exc:
                if time.perf_counter() + backoff > deadline:
                    raise ReplicaUnavailable(str(exc)) from None
                # The handle may name an actor that is gone for good (killed without restart,
                # or its creator exited): look the replicas up again by name next time.
                self.forget(backend)
            finally:
                with self._lock:
                    self._inflight[name] -= 1
            time.sleep(backoff)
            backoff = min(2 * backoff, 4.0)

    def _stream(self, backend, name, handle, request, on_event, deadline) -> Outcome:
        t0 = time.perf_counter()
        useful_at: float | None = None
        received = False
        started = incarnation(handle)
        checked = time.perf_counter()
        stream = handle.generate.remote(asdict(request))
        try:
            while True:
                if time.perf_counter() > deadline:
                    raise GenerationTimeout(f"{backend} generation on {name} ran past its deadline")
                try:
                    ref = stream._next_sync(timeout_s=POLL_S)
                except StopIteration:
                    raise ReplicaUnavailable(f"{name} ended the stream without a result") from None
                if ref.is_nil():  # nothing yet; check the deadline and the replica again
                    if time.perf_counter() - checked >= LIVENESS_S:
                        checked = time.perf_counter()
                        now = incarnation(handle)
                        if lost(started, now):
                            raise _ReplicaLost(f"was {started}, now {now}")
                    continue
                item = ray.get(ref)
                received = True
                if isinstance(item, list):
                    for event in item:
                        if useful_at is None and (
                            event["kind"] == "tokens" or event.get("action_text")
                        ):
                            useful_at = time.perf_counter()
                        if on_event is not None:
                            on_event(backend, name, event)
                    continue
                if "failed" in item:
                    failed = item["failed"]
                    raise GenerationFailed(
                        f"{backend} replica {name}: {failed['error']}",
                        retryable=failed["retryable"],
                    )
                served = item["served"]
                info = self._info.get(backend, {})
                return Outcome(
                    backend=backend,
                    replica=name,
                    model=info.get("model", backend),
                    result=served["result"],
                    queue_s=served["queue_s"],
                    latency_s=served["latency_s"],
                    ttfuo_s=served["ttfuo_s"],
                    mean_batch=served["mean_batch"],
                    call_s=time.perf_counter() - t0,
                    call_ttfuo_s=None if useful_at is None else useful_at - t0,
                )
        except (RayActorError, _ReplicaLost) as exc:
            if not received:
                raise _NotStarted(f"{backend} replica {name} unavailable: {exc}") from None
            raise ReplicaUnavailable(
                f"{backend} replica {name} died mid-request; Ray restarts it, retry the call "
                f"({type(exc).__name__})"
            ) from None
        except RayTaskError as exc:
            raise GenerationFailed(
                f"{backend} replica {name} raised: {exc}", retryable=True
            ) from None
        except BaseException:
            # Stop the replica decoding for nobody (it may already be gone).
            with contextlib.suppress(Exception):
                ray.cancel(stream)
            raise
