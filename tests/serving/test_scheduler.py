"""Continuous batching in-process: greedy outputs equal decoding alone; failures stay local."""

from __future__ import annotations

import pytest

from dllmflow.models.sampling.base import GenerationRequest
from dllmflow.workers.serving.scheduler import BatchScheduler, Failed, Served


def requests(n: int) -> list[GenerationRequest]:
    # Different prompt lengths, budgets and thresholds in one batch.
    return [
        GenerationRequest(
            prompt=f"Role: seeker\nQuestion: where was person {i} born?\n" * (1 + i % 3),
            max_new_tokens=24 + 8 * (i % 4),
            tau=0.9 if i % 2 else 0.5,
            max_denoise_steps=None if i % 3 else 200,
            request_id=f"r{i}",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("backend", ["ar", "diffusion"])
def test_batched_greedy_equals_alone(tiny_backends, backend: str) -> None:
    sampler = tiny_backends[backend].sampler
    reqs = requests(6)
    alone = [sampler.generate(r) for r in reqs]
    scheduler = BatchScheduler(sampler, max_batch=4)  # 6 requests > 4 slots: some join later
    try:
        early = [scheduler.submit(r) for r in reqs[:4]]
        # The rest arrive once the first four are mid-decode: each has had a progress event.
        firsts = [next(t.items(timeout_s=60)) for t in early]
        assert not any(isinstance(f, Served | Failed) for f in firsts), firsts
        late = [scheduler.submit(r) for r in reqs[4:]]
        served = [t.result(timeout_s=60) for t in early + late]
    finally:
        scheduler.stop()
    assert [s.result.token_ids for s in served] == [a.token_ids for a in alone]
    assert [s.result.stop_reason for s in served] == [a.stop_reason for a in alone]
    assert scheduler.load()["served"] == 6 and scheduler.load()["failed"] == 0
    assert (
        2 < scheduler.load()["mean_batch"] <= 4
    )  # the replica's batch per step, at most max_batch
    # They really shared steps: fewer decoding steps than the six decoded one after another,
    # and the late ones joined sequences that were still running (a batch of more than the two
    # of them), having waited for a free slot.
    assert scheduler.steps < sum(a.forward_passes for a in alone)
    assert all(s.mean_batch > 2 for s in served[4:]), [s.mean_batch for s in served]
    assert all(s.queue_s > 0 for s in served[4:])
    assert all(s.ttfuo_s is not None and s.queue_s >= 0 for s in served)


def test_bad_request_fails_alone(tiny_backends) -> None:
    scheduler = BatchScheduler(tiny_backends["ar"].sampler)
    try:
        bad = scheduler.submit(GenerationRequest(prompt="x", max_new_tokens=100_000))
        good = scheduler.submit(GenerationRequest(prompt="Role: planner\n", max_new_tokens=8))
        items = list(bad.items(timeout_s=30))
        assert isinstance(items[-1], Failed) and not items[-1].retryable
        assert "max_new_tokens" in items[-1].error
        assert isinstance(good.result(timeout_s=30), Served)
    finally:
        scheduler.stop()


def test_step_failure_is_retryable_and_scheduler_survives(tiny_backends) -> None:
    sampler = tiny_backends["diffusion"].sampler

    class Flaky:
        """Raises on its first step, then behaves."""

        def __init__(self) -> None:
            self.failed = False

        def __getattr__(self, name):
            return getattr(sampler, name)

        def step(self, states):
            if not self.failed:
                self.failed = True
                raise RuntimeError("CUDA out of memory (simulated)")
            return sampler.step(states)

    scheduler = BatchScheduler(Flaky(), max_batch=4)  # type: ignore[arg-type]
    try:
        first = list(scheduler.submit(GenerationRequest(prompt="a", max_new_tokens=8)).items(30))
        assert isinstance(first[-1], Failed) and first[-1].retryable
        assert "out of memory" in first[-1].error
        again = scheduler.submit(GenerationRequest(prompt="a", max_new_tokens=8))
        assert again.result(timeout_s=30).result.tokens_generated > 0
    finally:
        scheduler.stop()


def test_cancelled_request_gives_its_cache_rows_back(tiny_backends) -> None:
    sampler = tiny_backends["ar"].sampler

    class Recording:
        """Delegates to the sampler; notes releases and the arena's rows after each step."""

        def __init__(self) -> None:
            self.released: list[str] = []
            self.rows: list[int] = []

        def __getattr__(self, name):
            return getattr(sampler, name)

        def step(self, states):
            events = sampler.step(states)
            self.rows.append(sampler.kv_arena().rows)  # the scheduler thread's arena
            return events

        def release(self, state):
            self.released.append(state.request_id)
            sampler.release(state)

    recording = Recording()
    scheduler = BatchScheduler(recording, max_batch=4)  # type: ignore[arg-type]
    tickets: list = []

    def cancel_on_first_event(item) -> None:
        tickets[0].cancel()

    try:
        req = GenerationRequest(prompt="Role: seeker\n", max_new_tokens=64, request_id="gone")
        tickets.append(scheduler.submit(req, sink=cancel_on_first_event))
        other = scheduler.submit(GenerationRequest(prompt="Role: planner\n", max_new_tokens=64))
        assert isinstance(other.result(timeout_s=60), Served)
    finally:
        scheduler.stop()
    assert recording.released == ["gone"]
    assert recording.rows[-1] == 0  # nothing left holding a row once the other one finished
