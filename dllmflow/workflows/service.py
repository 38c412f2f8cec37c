"""Operator actions on episodes: submit, follow, retry, replay, cancel, inspect.

The CLI and the HTTP API both call this; it owns the mapping between episodes (Postgres rows)
and their Temporal workflows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from dllmflow.config import Settings
from dllmflow.store.checkpoints import CheckpointStore, content_hash, idempotency_key
from dllmflow.store.db import transaction
from dllmflow.store.episodes import EpisodeRepository, validate_question
from dllmflow.store.models import Checkpoint, Episode, EpisodeStatus
from dllmflow.store.streams import DeadLetterQueue
from dllmflow.workflows.types import POLICIES, Budgets, EpisodeInput, EpisodeResult

NOT_STARTED = "workflow not started"
TRANSIENT_RPC = (
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.CANCELLED,
)


class WorkflowNotStarted(RuntimeError):
    """The episode row exists but its workflow could not be started; the row says so (status
    failed, error "workflow not started: ...") and `episodes retry` starts it."""

    def __init__(self, episode_id: str, reason: str) -> None:
        super().__init__(
            f"episode {episode_id}: {NOT_STARTED} ({reason}); "
            f"start it later with: dllmflow episodes retry {episode_id}"
        )
        self.episode_id, self.reason = episode_id, reason


def rpc_reason(exc: BaseException) -> str:
    """One line for an RPC or connection error (no traceback, no multi-line gRPC detail)."""
    if isinstance(exc, RPCError):
        text = f"Temporal {exc.status.name}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0][:300]


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; policies: {', '.join(POLICIES)}")
    return policy


class EpisodeService:
    def __init__(self, settings: Settings, client: Client, outage_s: float | None = None) -> None:
        self.settings = settings
        self.client = client
        # How long an unreachable Temporal (a restart) is ridden out by a start or a wait.
        self.outage_s = settings.temporal_outage_s if outage_s is None else outage_s
        # Called (episode id, seconds down so far, reason) before each retried start.
        self.on_outage: Callable[[str, float, str], None] | None = None
        self.episodes = EpisodeRepository(settings)
        self.checkpoints = CheckpointStore(settings)
        self.dlq = DeadLetterQueue(settings)

    @classmethod
    async def connect(cls, settings: Settings, outage_s: float | None = None) -> EpisodeService:
        client = await Client.connect(
            settings.effective_temporal_address, namespace=settings.temporal_namespace
        )
        return cls(settings, client, outage_s)

    async def submit(
        self,
        question: str,
        policy: str = "routed",
        budgets: Budgets | None = None,
        question_record: dict[str, Any] | None = None,
        eval_run_id: str | None = None,
        episode_id: str | None = None,
    ) -> Episode:
        budgets = (budgets or Budgets()).validate()
        validate_question(question)
        if check_policy(policy) == "oracle" and not (question_record or {}).get("answer"):
            raise ValueError(
                'the oracle policy needs the question\'s ground truth (its "answer", and '
                '"hops" to search for); submit a questions file from a generated world, e.g. '
                "dllmflow submit questions.jsonl --policy oracle"
            )
        episode = self.episodes.create(
            question=question,
            policy=check_policy(policy),
            budgets=asdict(budgets),
            question_record=question_record,
            eval_run_id=eval_run_id,
            episode_id=episode_id,
            task_queue=self.settings.task_queue,
        )
        await self._start(episode, budgets)
        return episode

    async def _start(self, episode: Episode, budgets: Budgets, policy: str | None = None) -> None:
        """Start the episode's workflow (its id is fixed by the episode id, so this is
        idempotent: a workflow already running under it counts as started). If Temporal refuses
        or cannot be reached, the row is marked failed-to-start rather than left `queued` with
        no workflow behind it. It runs on the queue the row was submitted to: a reconciler with
        other settings must not move it to workers with another corpus, replicas and tools."""
        task_queue = episode.task_queue or self.settings.task_queue
        loop = asyncio.get_running_loop()
        down_since, delay = None, 0.5
        while True:
            try:
                await self.client.start_workflow(
                    "EpisodeWorkflow",
                    EpisodeInput(
                        episode.id,
                        policy or episode.policy,
                        budgets,
                        retry_budget_s=self.settings.activity_retry_budget_s,
                    ),
                    id=episode.workflow_id,
                    task_queue=task_queue,
                    # A closed episode's workflow id may run again (retry); a running one may not.
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    execution_timeout=None,
                )
                return
            except WorkflowAlreadyStartedError:
                # Started already: by an earlier attempt whose answer the outage swallowed.
                return
            except (RPCError, RuntimeError, OSError) as exc:
                # Temporal restarting: keep trying (same workflow id, so a start that did land
                # is not repeated) for up to outage_s, then give the row up as not started.
                transient = not isinstance(exc, RPCError) or exc.status in TRANSIENT_RPC
                down_since = down_since or loop.time()
                if transient and loop.time() - down_since + delay <= self.outage_s:
                    if self.on_outage is not None:
                        self.on_outage(episode.id, loop.time() - down_since, rpc_reason(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                reason = rpc_reason(exc)
                self.episodes.mark_not_started(episode.id, f"{NOT_STARTED}: {reason}")
                raise WorkflowNotStarted(episode.id, reason) from None

    async def workflow_status(self, episode: Episode) -> WorkflowExecutionStatus | None:
        """The status of the episode's latest workflow run; None when it never started."""
        try:
            return (await self.handle(episode).describe()).status
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def ensure_started(self, episode: Episode) -> bool:
        """Start a `queued` episode's workflow if it has none; True when this call started it."""
        if episode.status != EpisodeStatus.QUEUED or await self.workflow_status(episode):
            return False
        await self._start(episode, Budgets(**episode.budgets))
        return True

    async def reconcile(self) -> list[str]:
        """Start the workflow of every `queued` episode that has none (a submit that died
        between writing the row and starting the workflow); returns their ids."""
        started = []
        for episode in self.episodes.list(status=EpisodeStatus.QUEUED, limit=10_000):
            if await self.ensure_started(episode):
                started.append(episode.id)
        return started

    def handle(self, episode: Episode) -> WorkflowHandle:
        return self.client.get_workflow_handle(episode.workflow_id, result_type=EpisodeResult)

    async def wait(
        self, episode_id: str, timeout: float | None = None, outage_s: float | None = None
    ) -> EpisodeResult:
        """The episode's result. Temporal being unreachable for up to `outage_s` at a time (a
        restart; default self.outage_s) is waited out; longer, the last RPC error is raised."""
        episode = self.episodes.get(episode_id)
        outage_s = self.outage_s if outage_s is None else outage_s

        async def poll() -> EpisodeResult:
            down_since, delay = None, 0.5
            loop = asyncio.get_running_loop()
            while True:
                try:
                    return await self.handle(episode).result()
                except RPCError as exc:
                    if exc.status not in TRANSIENT_RPC:
                        raise
                    down_since = down_since or loop.time()
                    if loop.time() - down_since > outage_s:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        return await asyncio.wait_for(poll(), timeout)

    async def retry(self, episode_id: str, **budget_overrides: Any) -> Episode:
        """Continue a failed or dead-lettered episode from its last good checkpoint, on this
        service's task queue (an operator's retry runs where the operator's workers are)."""
        episode = self.episodes.get(episode_id)
        if await self.workflow_status(episode) == WorkflowExecutionStatus.RUNNING:
            raise ValueError(f"episode {episode_id} is still running; nothing to retry")
        if episode.status == EpisodeStatus.COMPLETED:
            raise ValueError(f"episode {episode_id} already completed")
        budgets = Budgets(
            **{**episode.budgets, **{k: v for k, v in budget_overrides.items() if v is not None}}
        ).validate()
        for letter in self.dlq.for_episode(episode_id):
            if letter.kind in ("plan", "seek", "write") and letter.error.startswith(
                "invalid action"
            ):
                # Recompute the invalid streak instead of replaying its cached turns.
                first = max(0, letter.step - letter.attempts + 1)
                self.checkpoints.supersede_from(episode_id, first)
            self.dlq.remove(letter.id)
        self.episodes.update(
            episode_id,
            status=EpisodeStatus.QUEUED,
            budgets=asdict(budgets),
            error=None,
            task_queue=self.settings.task_queue,
        )
        await self._start(self.episodes.get(episode_id), budgets)
        return self.episodes.get(episode_id)

    async def replay(self, episode_id: str, from_step: int, policy: str | None = None) -> Episode:
        """A new episode reusing the checkpoints before `from_step`; later steps recompute."""
        source = self.episodes.get(episode_id)
        if from_step < 0:
            raise ValueError(f"--from must be >= 0 (got {from_step})")
        steps = [cp.step for cp in self.checkpoints.for_episode(source.id)]
        # At least one step is recomputed: a completed episode's last step at most; an
        # unfinished one may also continue right after its last checkpoint.
        last = max(steps, default=-1) + (0 if source.status == EpisodeStatus.COMPLETED else 1)
        if from_step > max(last, 0):
            raise ValueError(
                f"episode {episode_id} has steps 0..{max(steps, default=0)}; --from {from_step} "
                f"would recompute nothing (use --from 0..{max(last, 0)})"
            )
        policy = check_policy(policy or source.policy)
        budgets = Budgets(**source.budgets)
        replay = self.episodes.create(
            question=source.question,
            policy=policy,
            budgets=source.budgets,
            question_record=source.question_record,
            parent_episode_id=source.id,
            replay_from_step=from_step,
            task_queue=self.settings.task_queue,
        )
        reused = self.checkpoints.for_episode(source.id, before_step=from_step)
        with transaction(self.settings) as session:
            for cp in reused:
                inputs = cp.payload.get("inputs_hash") or content_hash(cp.payload.get("action"))
                session.add(
                    Checkpoint(
                        episode_id=replay.id,
                        step=cp.step,
                        kind=cp.kind,
                        role=cp.role,
                        idempotency_key=idempotency_key(replay.id, cp.step, cp.kind, inputs),
                        payload={**cp.payload, "copied_from": cp.id},
                        backend=cp.backend,
                        model=cp.model,
                        timings=cp.timings,
                    )
                )
        await self._start(replay, budgets)
        return replay

    async def cancel(self, episode_id: str) -> None:
        episode = self.episodes.get(episode_id)
        if episode.status in EpisodeStatus.FINISHED:
            raise ValueError(f"episode {episode_id} already finished ({episode.status})")
        if await self.workflow_status(episode) != WorkflowExecutionStatus.RUNNING:
            raise ValueError(f"episode {episode_id} has no running workflow to cancel")
        await self.handle(episode).cancel()

    async def history(self, episode_id: str) -> list[dict[str, Any]]:
        """Temporal's event list: id, time, type and, for activity events, the activity's name
        (started/completed/failed events carry only the id of their scheduling event) and a
        failure's message."""
        episode = self.episodes.get(episode_id)
        events = []
        scheduled: dict[int, str] = {}  # scheduling event id -> activity name
        async for event in self.handle(episode).fetch_history_events():
            attrs = event.WhichOneof("attributes") or ""
            row: dict[str, Any] = {
                "id": event.event_id,
                "time": event.event_time.ToDatetime().isoformat(),
                "type": attrs.removesuffix("_event_attributes"),
            }
            body = getattr(event, attrs) if attrs else None
            if attrs == "activity_task_scheduled_event_attributes":
                scheduled[event.event_id] = body.activity_type.name
                row["activity"] = body.activity_type.name
            elif body is not None and hasattr(body, "scheduled_event_id"):
                row["activity"] = scheduled.get(body.scheduled_event_id)
            if body is not None and hasattr(body, "failure") and body.HasField("failure"):
                row["failure"] = body.failure.message
            events.append(row)
        return events
