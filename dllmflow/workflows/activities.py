"""Episode activities: all I/O of an episode (models, tools, Postgres, Redis) happens here.

Each activity that produces output checkpoints it whole in one transaction under an idempotency
key built from attempt-independent inputs, and returns the stored result when the key exists, so
retries and replays never recompute (or re-execute a tool) once a checkpoint is committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any

import redis
from sqlalchemy import exc as sa_exc
from temporalio import activity
from temporalio.exceptions import ApplicationError

from dllmflow.agent.actions import (
    ACTION_CLOSE,
    THINK_CLOSE,
    THINK_OPEN,
    Action,
    ActionError,
    parse_action,
)
from dllmflow.agent.prompting import Step
from dllmflow.agent.repair import check_turn, complete_repair, repair_prefix
from dllmflow.config import Settings
from dllmflow.store.checkpoints import (
    CheckpointStore,
    StoredCheckpoint,
    content_hash,
    idempotency_key,
)
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import EpisodeStatus
from dllmflow.store.streams import DeadLetter, DeadLetterQueue, ProgressStream, count_execution
from dllmflow.workers.turns import GenerateRequest, NotConverged, TurnGenerator, generator_for
from dllmflow.workflows.types import (
    ACTION_KIND,
    ACTION_READY_SIGNAL,
    ROLE_KIND,
    ActionReady,
    DeadLetterRequest,
    FinishRequest,
    StepTimings,
    ToolRequest,
    ToolSummary,
    TurnRequest,
    TurnSummary,
)

NOT_CONVERGED = "DenoisingBudgetExceeded"
HEARTBEAT_INTERVAL_S = 2.0  # well inside the activities' 15 s heartbeat timeout
# A checkpoint write waits this long for Postgres within its attempt (heartbeating), so work
# that already ran is not done again by a retry because its result could not be stored.
CHECKPOINT_OUTAGE_S = 600.0
QUESTION_CACHE_SIZE = 4096
BAD_EPISODE = "InvalidEpisode"
SIGNAL_TIMEOUT_S = 10.0
TURN_KINDS = frozenset(ROLE_KIND.values())
EARLY_TOOLS = ("search", "fetch")  # the tools a P-ReAct turn starts before its thinking ends
log = logging.getLogger(__name__)


class Beat:
    """What keep_alive reports in its heartbeats; the work updates `phase` as it goes."""

    def __init__(self, phase: str) -> None:
        self.phase = phase


@contextmanager
def keep_alive(phase: str | Beat, interval: float = HEARTBEAT_INTERVAL_S) -> Iterator[Beat]:
    """Heartbeat every `interval` seconds while the block runs, whatever it is waiting on.

    A tool call that takes longer than the heartbeat timeout, or a model turn waiting for its
    replica to load, keeps its attempt: the heartbeat timeout then only notices a worker that
    died. The beats come from a thread of their own (the activity's context copied into it), so
    the activity thread stays free for the work, and for a cancel that the SDK raises in it.
    """
    beat = phase if isinstance(phase, Beat) else Beat(phase)
    stop = threading.Event()
    context = contextvars.copy_context()

    def run() -> None:
        while not stop.wait(interval):
            try:
                context.run(activity.heartbeat, beat.phase)
            except Exception:  # the activity has finished; nothing left to keep alive
                return

    thread = threading.Thread(target=run, name="activity-heartbeat", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        stop.set()
        thread.join()


def history_steps(checkpoints: list[StoredCheckpoint]) -> list[Step]:
    """Rebuild the agent's history (turn text + what its tool returned) from checkpoints."""
    steps: list[Step] = []
    by_step: dict[int, Step] = {}
    for cp in checkpoints:
        if cp.kind == ACTION_KIND:  # the same action is in the step's turn checkpoint
            continue
        if cp.kind == "tool":
            if cp.step in by_step:
                outcome = cp.payload
                by_step[cp.step].observation = (
                    outcome["result"] if outcome.get("ok") else {"error": outcome["error"]}
                )
            continue
        observation = None if cp.payload.get("valid") else {"error": cp.payload.get("error")}
        step = Step(role=cp.role or "seeker", turn=cp.payload["text"], observation=observation)
        by_step[cp.step] = step
        steps.append(step)
    return steps


def episode_metrics(req: FinishRequest | DeadLetterRequest) -> dict[str, Any]:
    """The episode row's counters and per-step waterfall, finished or dead-lettered."""
    return {
        "turns": req.turns,
        "tool_calls": req.tool_calls,
        "invalid_actions": req.invalid_actions,
        "waterfall": [asdict(row) for row in req.waterfall],
    }


def _thinking_after(text: str) -> str:
    """The thinking of an action-first turn whose thinking span never closed."""
    rest = text.split(ACTION_CLOSE, 1)[-1]
    return rest.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()


class EpisodeActivities:
    """Activities bound to one worker's settings; the generators are created per policy."""

    def __init__(self, settings: Settings, generators: dict[str, TurnGenerator] | None = None):
        self.settings = settings
        self.episodes = EpisodeRepository(settings)
        self.checkpoints = CheckpointStore(settings)
        self.progress = ProgressStream(settings)
        self.dlq = DeadLetterQueue(settings)
        self._generators = dict(generators or {})
        self._tools = None
        self._questions: dict[str, dict[str, Any]] = {}
        self._questions_lock = threading.Lock()
        self._client: Any = None  # temporalio Client, for the P-ReAct signal
        self._loop: asyncio.AbstractEventLoop | None = None

    def connect_workflows(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Let activities signal their workflow (the worker's client, on the worker's loop)."""
        self._client, self._loop = client, loop

    def announce_action(self, ready: ActionReady) -> bool:
        """Tell this activity's workflow that its turn's action is committed (P-ReAct).

        Best effort: a signal that does not arrive only costs the overlap, since the workflow
        runs the tool after the turn either way and the tool call is idempotent.
        """
        if self._client is None or self._loop is None:
            return False
        info = activity.info()
        handle = self._client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        future = asyncio.run_coroutine_threadsafe(
            handle.signal(ACTION_READY_SIGNAL, ready), self._loop
        )
        try:
            future.result(timeout=SIGNAL_TIMEOUT_S)
        except Exception as exc:
            future.cancel()
            log.warning(
                "action_ready of %s step %s not signalled: %s", info.workflow_id, ready.step, exc
            )
            return False
        return True

    def notify(self, episode_id: str, kind: str, /, **data: Any) -> None:
        """Publish a progress event if Redis is up. Events are a live view, never the record
        (Postgres is), so an episode keeps going while Redis restarts."""
        try:
            self.progress.publish(episode_id, kind, **data)
        except redis.RedisError as exc:
            log.warning("progress event %s of %s not published: %s", kind, episode_id, exc)

    def question(self, episode_id: str) -> dict[str, Any]:
        """The episode's question record; it never changes, so it is read once per worker."""
        with self._questions_lock:  # activities run on a thread pool
            if episode_id in self._questions:
                return self._questions[episode_id]
        episode = self.episodes.get(episode_id)
        record = {**episode.question_record, "question": episode.question}
        with self._questions_lock:
            if len(self._questions) >= QUESTION_CACHE_SIZE:
                self._questions.pop(next(iter(self._questions)))
            self._questions[episode_id] = record
        return record

    def generator(self, policy: str) -> TurnGenerator:
        if policy not in self._generators:
            self._generators[policy] = generator_for(policy, self.settings)
        return self._generators[policy]

    def tools(self):
        if self._tools is None:
            from dllmflow.workers.tools import ToolExecutor

            self._tools = ToolExecutor(self.settings)
        return self._tools

    @activity.defn(name="start_episode")
    def start_episode(self, episode_id: str) -> None:
        self.episodes.update(episode_id, status=EpisodeStatus.RUNNING, error=None)
        self.notify(episode_id, "started")

    @activity.defn(name="model_turn")
    def model_turn(self, req: TurnRequest) -> TurnSummary:
        info = activity.info()
        queue_s = max(
            0.0, (info.started_time - info.current_attempt_scheduled_time).total_seconds()
        )
        question = self.question(req.episode_id)
        # One read for the history and for this step's own checkpoint, if a retry finds one.
        stored = self.checkpoints.for_episode(req.episode_id, before_step=req.step + 1)
        history = history_steps([cp for cp in stored if cp.step < req.step])
        kind = ROLE_KIND[req.role]
        # Attempt-independent inputs: who speaks, about what, after which history.
        inputs = content_hash(
            {"role": req.role, "question": question, "history": [s.to_dict() for s in history]}
        )
        key = idempotency_key(req.episode_id, req.step, kind, inputs)
        cached = next((cp for cp in stored if cp.idempotency_key == key), None)
        if cached is not None:
            return self._turn_summary(cached, cached=True, queue_s=queue_s, checkpoint_s=0.0)
        # P-ReAct: an earlier attempt committed this turn's action (and the workflow may have
        # run its tool): keep it, say so again (that signal may be what the crash lost) and
        # decode only the thinking after it.
        action_key = idempotency_key(req.episode_id, req.step, ACTION_KIND, inputs)
        early: list[StoredCheckpoint] = [cp for cp in stored if cp.idempotency_key == action_key]
        if early:
            tool = early[0].payload["action"]["tool"]
            self.announce_action(ActionReady(req.step, early[0].id, tool))

        beat = Beat("waiting for a replica")
        # Counted before the work, so a rerun of a turn that never committed is visible.
        execution = count_execution(self.settings, key, req.episode_id)

        def on_progress(event: dict[str, Any]) -> None:
            phase = event.get("event", "progress")
            beat.phase = phase  # keep_alive reports it with its next heartbeat
            span = event.get("action_text")
            if span and not early and event.get("action_first") and not event.get("done"):
                committed = self._commit_action(req, span, action_key, inputs, event, execution)
                if committed is not None:
                    early.append(committed)
                    self.announce_action(
                        ActionReady(req.step, committed.id, committed.payload["action"]["tool"])
                    )
            details = {k: v for k, v in event.items() if k not in ("event", "action_text")}
            self.notify(
                req.episode_id,
                "model_progress",
                step=req.step,
                role=req.role,
                phase=phase,
                **details,
            )

        request = GenerateRequest(
            episode_id=req.episode_id,
            step=req.step,
            role=req.role,
            policy=req.policy,
            question=question,
            history=history,
            max_denoise_steps=req.max_denoise_steps,
            action_prefix=early[0].payload["span"] if early else None,
        )
        with keep_alive(beat):
            generator = self.generator(req.policy)
            turn, parsed, error, repaired = self._generate(generator, request, on_progress, early)
        decode_ended_at = time.time()
        action = parsed.action if error is None else None
        payload = {
            "text": turn.text,
            "thinking": parsed.thinking,
            "action": {"tool": action.tool, "args": action.args} if action else None,
            "valid": error is None,
            "error": error,
            "repaired": repaired,
            "inputs_hash": inputs,
            "stats": turn.stats(),
            "execution": execution,
            "decode_ended_at": decode_ended_at,
        }
        if early:
            payload["action_checkpoint_id"] = early[0].id
            payload["resumed"] = request.action_prefix is not None
        write_start = time.perf_counter()
        stored, _ = self._save(
            f"{req.role} turn",
            episode_id=req.episode_id,
            step=req.step,
            kind=kind,
            key=key,
            payload=payload,
            role=req.role,
            backend=turn.backend,
            model=turn.model,
            timings={"queue_s": queue_s, "decode_s": turn.decode_s},
        )
        checkpoint_s = time.perf_counter() - write_start
        summary = self._turn_summary(
            stored, cached=False, queue_s=queue_s, checkpoint_s=checkpoint_s
        )
        self.notify(req.episode_id, "turn", **asdict(summary))
        return summary

    def _commit_action(
        self,
        req: TurnRequest,
        span: str,
        key: str,
        inputs: str,
        event: dict[str, Any],
        execution: int,
    ) -> StoredCheckpoint | None:
        """Checkpoint an action span committed before the turn ended, if its tool can start now
        (a valid search or fetch of a non-writer turn); None otherwise (the turn goes on as a
        think-first one would: its tool, if any, runs after it)."""
        if req.role == "writer":
            return None
        inner = span.removeprefix("<action>").removesuffix(ACTION_CLOSE).strip()
        try:
            action = parse_action(inner)
        except ActionError:
            return None
        if action.tool not in EARLY_TOOLS:
            return None
        stored, _ = self.checkpoints.save(
            episode_id=req.episode_id,
            step=req.step,
            kind=ACTION_KIND,
            key=key,
            payload={
                "span": span,
                "action": {"tool": action.tool, "args": action.args},
                "inputs_hash": inputs,
                "execution": execution,
                "committed_at": time.time(),
                "forward_passes": event.get("forward_passes"),
                "refinement_passes": event.get("refinement_passes"),
            },
            role=req.role,
            backend=event.get("backend"),
            model=action.tool,
        )
        self.notify(req.episode_id, "action_ready", step=req.step, tool=action.tool)
        return stored

    def _generate(
        self,
        generator: TurnGenerator,
        request: GenerateRequest,
        on_progress: Any,
        early: list[StoredCheckpoint],
    ) -> tuple[Any, Any, str | None, bool]:
        try:
            turn = generator.generate(request, on_progress)
            parsed, error = check_turn(request.role, turn.text)
            repaired = False
            if early:
                # The committed action is the turn's action (its tool may have run already);
                # the thinking is what followed it.
                committed = early[0].payload["action"]
                thinking = parsed.thinking or _thinking_after(turn.text)
                parsed = type(parsed)(thinking, Action(committed["tool"], committed["args"]), None)
                error = None
            prefix = repair_prefix(request.role, turn.text) if error else None
            if prefix and request.policy != "oracle":
                # One bounded repair: keep the thinking, re-decode the action's value from its
                # tool's skeleton (agent.repair).
                request.repair_prefix = prefix
                retry = generator.generate(request, on_progress)
                continuation = retry.text.removeprefix(prefix)
                retry = replace(retry, text=complete_repair(prefix, continuation))
                reparsed, retry_error = check_turn(request.role, retry.text)
                repaired = retry_error is None
                if repaired:
                    turn, parsed, error = retry, reparsed, None
        except NotConverged as exc:
            raise ApplicationError(str(exc), type=NOT_CONVERGED, non_retryable=True) from exc
        except Exception as exc:
            # Serving errors say whether a retry can help (a replica died) or not (bad input).
            if getattr(exc, "retryable", True) is False:
                raise ApplicationError(
                    str(exc), type=type(exc).__name__, non_retryable=True
                ) from exc
            raise
        return turn, parsed, error, repaired

    def _turn_summary(
        self, cp: StoredCheckpoint, *, cached: bool, queue_s: float, checkpoint_s: float
    ) -> TurnSummary:
        action = cp.payload.get("action") or {}
        stats = cp.payload.get("stats") or {}
        return TurnSummary(
            step=cp.step,
            kind=cp.kind,
            role=cp.role or "",
            idempotency_key=cp.idempotency_key,
            checkpoint_id=cp.id,
            valid=bool(cp.payload.get("valid")),
            tool=action.get("tool"),
            error=cp.payload.get("error"),
            cached=cached,
            backend=cp.backend or "",
            timings=StepTimings(
                queue=queue_s,
                decode=0.0 if cached else float(stats.get("decode_s", 0.0)),
                checkpoint=checkpoint_s,
            ),
        )

    @activity.defn(name="tool_call")
    def tool_call(self, req: ToolRequest) -> ToolSummary:
        # One read for the step's turn and, if a retry finds one, its committed tool call.
        started_at = time.time()
        at_step = self.checkpoints.at_step(req.episode_id, req.step)
        # The turn's checkpoint, or (P-ReAct, the turn still refining its thinking) the
        # checkpoint of its committed action: the same action, so the same tool-call key.
        turn = next((cp for cp in at_step if cp.kind in TURN_KINDS), None) or next(
            (cp for cp in at_step if cp.kind == ACTION_KIND), None
        )
        if turn is None or not turn.payload.get("action"):
            raise ApplicationError(
                f"episode {req.episode_id} step {req.step} has no valid action to execute",
                type=BAD_EPISODE,
                non_retryable=True,
            )
        action_payload = turn.payload["action"]
        key = idempotency_key(req.episode_id, req.step, "tool", content_hash(action_payload))
        cached = next((cp for cp in at_step if cp.idempotency_key == key), None)
        if cached is not None:
            return self._tool_summary(cached, cached=True, checkpoint_s=0.0)
        # Counted before the call, so a call that ran and never committed is visible as a rerun.
        execution = count_execution(self.settings, key, req.episode_id)
        with keep_alive(f"tool {action_payload['tool']}"):
            action = Action(action_payload["tool"], action_payload["args"])
            outcome = self.tools().run(action, key=key)
        payload = {
            "action": action_payload,
            "execution": execution,
            "ok": outcome.error is None,
            "result": outcome.result,
            "error": outcome.error,
            "corpus_version": outcome.corpus_version,
            "latency_s": outcome.latency_s,
            "injected_delay_s": outcome.injected_delay_s,
            "started_at": started_at,
            "early": turn.kind == ACTION_KIND,
        }
        write_start = time.perf_counter()
        stored, _ = self._save(
            f"tool {action_payload['tool']}",
            episode_id=req.episode_id,
            step=req.step,
            kind="tool",
            key=key,
            payload=payload,
            role=turn.role,
            backend="tool",
            model=action_payload["tool"],
            timings={"tool_s": outcome.latency_s},
        )
        summary = self._tool_summary(
            stored, cached=False, checkpoint_s=time.perf_counter() - write_start
        )
        self.notify(
            req.episode_id,
            "tool",
            step=req.step,
            tool=action_payload["tool"],
            ok=summary.ok,
            error=summary.error,
        )
        return summary

    def _save(self, phase: str, **fields: Any) -> tuple[StoredCheckpoint, bool]:
        """CheckpointStore.save, riding out a Postgres outage inside this attempt (heartbeating
        meanwhile): the write is idempotent, the work it records is not, so waiting here keeps
        a retry from doing the work again. Bounded by CHECKPOINT_OUTAGE_S."""
        deadline, delay = time.monotonic() + CHECKPOINT_OUTAGE_S, 0.5
        with keep_alive(f"{phase}: storing its checkpoint"):
            while True:
                try:
                    return self.checkpoints.save(**fields)
                except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                    if time.monotonic() + delay > deadline:
                        raise
                    log.warning("%s: checkpoint write failed, retrying: %s", phase, exc.orig)
                    time.sleep(delay)
                    delay = min(2 * delay, 5.0)

    def _tool_summary(
        self, cp: StoredCheckpoint, *, cached: bool, checkpoint_s: float
    ) -> ToolSummary:
        return ToolSummary(
            step=cp.step,
            idempotency_key=cp.idempotency_key,
            checkpoint_id=cp.id,
            ok=bool(cp.payload.get("ok")),
            error=cp.payload.get("error"),
            cached=cached,
            timings=StepTimings(
                tool=0.0 if cached else float(cp.payload.get("latency_s") or 0.0),
                checkpoint=checkpoint_s,
            ),
        )

    @activity.defn(name="finish_episode")
    def finish_episode(self, req: FinishRequest) -> None:
        answer, sources = None, []
        if req.writer_step is not None:
            writer = self.checkpoints.at(req.episode_id, req.writer_step, "write")
            action = (writer.payload.get("action") or {}) if writer else {}
            args = action.get("args") or {}
            answer, sources = args.get("answer"), list(args.get("sources") or [])
        self.episodes.update(
            req.episode_id,
            status=req.status,
            answer=answer,
            sources=sources,
            metrics=episode_metrics(req),
            error=req.error,
        )
        self.notify(req.episode_id, "finished", status=req.status, answer=answer, sources=sources)

    @activity.defn(name="dead_letter")
    def dead_letter(self, req: DeadLetterRequest) -> str:
        # Postgres first: the row is the record. The DLQ entry is added once (a retry after
        # Redis came back finds the entry of an attempt that got that far and adds no second).
        episode = self.episodes.get(req.episode_id)
        self.episodes.update(
            req.episode_id,
            status=EpisodeStatus.DEAD_LETTERED,
            metrics=episode_metrics(req),
            error=req.error,
        )
        existing = [
            letter for letter in self.dlq.for_episode(req.episode_id) if letter.step == req.step
        ]
        if existing:
            entry = existing[0].id
        else:
            entry = self.dlq.add(
                DeadLetter(
                    episode_id=req.episode_id,
                    step=req.step,
                    kind=req.kind,
                    error=req.error,
                    attempts=req.attempts,
                    last_checkpoint_id=req.last_checkpoint_id,
                    policy=episode.policy,
                    budgets=episode.budgets,
                    at=time.time(),
                )
            )
        self.notify(req.episode_id, "dead_lettered", step=req.step, error=req.error, dlq_id=entry)
        return entry

    def all(self) -> list[Any]:
        return [
            self.start_episode,
            self.model_turn,
            self.tool_call,
            self.finish_episode,
            self.dead_letter,
        ]
