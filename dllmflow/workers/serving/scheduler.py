"""Step-level continuous batching over one sampler, in a background thread (no Ray needed).

Between two sampler steps, finished sequences leave the running batch and waiting requests join
it (up to ``max_batch``); each keeps its own tau, token and denoising budget, because the
samplers keep that state per sequence. A request's tokens never depend on its batch-mates, so
greedy outputs equal decoding the request alone.

Results and progress go to a per-request ``sink`` callable, called from the scheduler thread:
``sink(ProgressEvent)`` per step, then exactly one ``sink(Served)`` or ``sink(Failed)``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dllmflow.models.sampling.base import (
    GenerationRequest,
    GenerationResult,
    ProgressEvent,
    Sampler,
    SequenceState,
)


@dataclass
class Served:
    result: GenerationResult
    queue_s: float  # submitted -> joined the running batch
    latency_s: float  # submitted -> finished
    ttfuo_s: float | None  # submitted -> first useful output (see _Entry.useful_at)
    first_output_s: float | None  # submitted -> first progress event
    mean_batch: float  # running sequences per step this request took part in


@dataclass
class Failed:
    error: str
    retryable: bool


Item = ProgressEvent | Served | Failed
Sink = Callable[[Item], None]


@dataclass
class _Entry:
    request: GenerationRequest
    sink: Sink
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float | None = None
    first_event: float | None = None
    # AR: the first token; diffusion: the pass that completed the action span.
    useful_at: float | None = None
    batch_sum: int = 0
    steps: int = 0
    cancelled: bool = False
    state: SequenceState | None = None


class Ticket:
    """Handle of one submitted request; ``items()`` yields what the sink received, in order."""

    def __init__(self, entry: _Entry, inbox: queue.Queue[Item] | None) -> None:
        self._entry, self._inbox = entry, inbox

    def cancel(self) -> None:
        self._entry.cancelled = True

    def items(self, timeout_s: float | None = None) -> Iterator[Item]:
        if self._inbox is None:
            raise RuntimeError("items() needs a ticket submitted without a sink")
        while True:
            item = self._inbox.get(timeout=timeout_s)
            yield item
            if isinstance(item, Served | Failed):
                return

    def result(self, timeout_s: float | None = None) -> Served:
        for item in self.items(timeout_s):
            if isinstance(item, Failed):
                raise RuntimeError(item.error)
            if isinstance(item, Served):
                return item
        raise AssertionError("unreachable")


class BatchScheduler:
    def __init__(self, sampler: Sampler, *, max_batch: int = 32, name: str = "scheduler") -> None:
        self.sampler = sampler
        self.max_batch = max_batch
        self._waiting: deque[_Entry] = deque()
        self._running: list[_Entry] = []
        self._cv = threading.Condition()
        self._stopped = False
        self.served = 0
        self.failed = 0
        self.steps = 0
        self.sequence_steps = 0  # sum over steps of the batch size: mean batch = this / steps
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- public -----------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink | None = None) -> Ticket:
        inbox: queue.Queue[Item] | None = None
        if sink is None:
            inbox = queue.Queue()
            sink = inbox.put
        entry = _Entry(request=request, sink=sink)
        with self._cv:
            if self._stopped:
                raise RuntimeError("scheduler is stopped")
            self._waiting.append(entry)
            self._cv.notify()
        return Ticket(entry, inbox)

    def load(self) -> dict[str, int | float]:
        """Queue depth (``waiting``), the running batch, totals, and the mean batch per step."""
        with self._cv:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "served": self.served,
                "failed": self.failed,
                "steps": self.steps,
                "mean_batch": round(self.sequence_steps / self.steps, 2) if self.steps else 0.0,
            }

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=10)

    # -- loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and not self._waiting and not self._running:
                    self._cv.wait()
                if self._stopped:
                    pending = list(self._waiting) + self._running
                    self._waiting.clear()
                    self._running = []
                    break
                admitted = []
                while self._waiting and len(self._running) + len(admitted) < self.max_batch:
                    admitted.append(self._waiting.popleft())
            for entry in admitted:
                self._admit(entry)
            self._drop_cancelled()
            if self._running:
                self._step()
        for entry in pending:
            self._fail(entry, "replica is shutting down", retryable=True)

    def _drop_cancelled(self) -> None:
        for entry in [e for e in self._running if e.cancelled]:
            self._release(entry)
        self._running = [e for e in self._running if not e.cancelled]

    def _release(self, entry: _Entry) -> None:
        """Give the sequence's cache rows back now (in this thread, which owns them)."""
        state, entry.state = entry.state, None
        # After a failed step release may fail too; the row is reclaimed once state is collected.
        if state is not None:
            with contextlib.suppress(Exception):
                self.sampler.release(state)

    def _admit(self, entry: _Entry) -> None:
        if entry.cancelled:
            return
        entry.admitted = time.perf_counter()
        try:
            entry.state = self.sampler.start(entry.request)
        except Exception as exc:  # bad input: only this request fails
            self._fail(entry, f"{type(exc).__name__}: {exc}", retryable=False)
            return
        self._running.append(entry)

    def _step(self) -> None:
        batch = self._running
        by_id = {e.request.request_id: e for e in batch}
        try:
            events = self.sampler.step([e.state for e in batch])
        except Exception as exc:
            # The states of this step are in an unknown condition: fail them all, retryably
            # (a transient fault such as out-of-memory goes away when the batch is smaller).
            detail = traceback.format_exception_only(exc)[-1].strip()
            for entry in batch:
                self._fail(entry, f"decoding step failed: {detail}", retryable=True)
            self._running = []
            return
        self.steps += 1
        self.sequence_steps += len(batch)
        now = time.perf_counter()
        for event in events:
            entry = by_id.get(event.request_id)
            if entry is None:
                continue
            entry.first_event = entry.first_event or now
            if entry.useful_at is None and (event.kind == "tokens" or event.action_text):
                entry.useful_at = now
            entry.batch_sum += len(batch)
            entry.steps += 1
            entry.sink(event)
        still = []
        for entry in batch:
            assert entry.state is not None
            if entry.state.done:
                self._finish(entry, now)
            else:
                still.append(entry)
        self._running = still

    def _finish(self, entry: _Entry, now: float) -> None:
        assert entry.state is not None and entry.admitted is not None
        try:
            result = self.sampler.result(entry.state)
        except Exception as exc:
            self._fail(entry, f"{type(exc).__name__}: {exc}", retryable=False)
            return
        t0 = entry.submitted
        useful = entry.useful_at or entry.first_event
        entry.state = None  # drop the cache now, not when the client lets go of the ticket
        self.served += 1
        entry.sink(
            Served(
                result=result,
                queue_s=entry.admitted - t0,
                latency_s=now - t0,
                ttfuo_s=None if useful is None else useful - t0,
                first_output_s=None if entry.first_event is None else entry.first_event - t0,
                mean_batch=entry.batch_sum / max(1, entry.steps),
            )
        )

    def _fail(self, entry: _Entry, error: str, *, retryable: bool) -> None:
        self.failed += 1
        self._release(entry)
        entry.sink(Failed(error=error, retryable=retryable))
