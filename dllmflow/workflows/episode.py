"""EpisodeWorkflow: one research job as a DeepDiver loop of durable activities.

Planner turn -> InformationSeeker turns (each a model turn, then a search/fetch tool call) ->
Writer turn. The workflow only decides what runs next; every byte of output is checkpointed by
the activities, and history carries keys and small summaries.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from dllmflow.store.models import EpisodeStatus
    from dllmflow.workflows.types import (
        ACTION_READY_SIGNAL,
        DEFAULT_RETRY_BUDGET_S,
        ROLE_KIND,
        ActionReady,
        DeadLetterRequest,
        EpisodeInput,
        EpisodeResult,
        FinishRequest,
        StepTimings,
        ToolRequest,
        ToolSummary,
        TurnRequest,
        TurnSummary,
        WaterfallRow,
    )

# One retry schedule for every activity: exponential backoff capped at OUTAGE_MAX_INTERVAL,
# bounded by the episode's retry budget (EpisodeInput.retry_budget_s, 15 minutes by default) of
# retrying in total (schedule_to_close). It rides out a Postgres, Redis or replica restart of
# several minutes; an error that retrying cannot fix is non-retryable and dead-letters at once.
OUTAGE_BUDGET = timedelta(seconds=DEFAULT_RETRY_BUDGET_S)
OUTAGE_MAX_INTERVAL = timedelta(seconds=15)


def outage_retry(*non_retryable: str) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=OUTAGE_MAX_INTERVAL,
        maximum_attempts=0,  # bounded by schedule_to_close_timeout instead
        non_retryable_error_types=list(non_retryable),
    )


# Every activity heartbeats at least every HEARTBEAT_INTERVAL_S (activities.keep_alive) while
# it runs, whatever it waits on (a replica loading, a slow tool), so the heartbeat timeout only
# notices a lost (or frozen) worker and never cuts a long call short.
HEARTBEAT_TIMEOUT = timedelta(seconds=15)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
TURN_TIMEOUT = timedelta(minutes=10)
TOOL_TIMEOUT = timedelta(minutes=2)

# Each activity's schedule_to_close is `budget` of retrying plus room for one last attempt: its
# start_to_close, or `budget` itself when that is shorter (a small budget also ends a run of
# slow attempts soon).


def bookkeeping_options(budget: timedelta = OUTAGE_BUDGET) -> dict[str, object]:
    return {
        "start_to_close_timeout": BOOKKEEPING_TIMEOUT,
        "schedule_to_close_timeout": min(BOOKKEEPING_TIMEOUT, budget) + budget,
        "retry_policy": outage_retry(),
    }


def turn_options(budget: timedelta = OUTAGE_BUDGET) -> dict[str, object]:
    return {
        "start_to_close_timeout": TURN_TIMEOUT,
        "schedule_to_close_timeout": min(TURN_TIMEOUT, budget) + budget,
        "heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "retry_policy": outage_retry("DenoisingBudgetExceeded", "InvalidEpisode"),
    }


def tool_options(budget: timedelta = OUTAGE_BUDGET) -> dict[str, object]:
    return {
        "start_to_close_timeout": TOOL_TIMEOUT,
        "schedule_to_close_timeout": min(TOOL_TIMEOUT, budget) + budget,
        "heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "retry_policy": outage_retry("InvalidEpisode"),
    }


BOOKKEEPING = bookkeeping_options()
TURN_OPTIONS = turn_options()
TOOL_OPTIONS = tool_options()


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


class DeadLettered(Exception):
    def __init__(self, step: int, kind: str, error: str, attempts: int) -> None:
        super().__init__(error)
        self.step, self.kind, self.error, self.attempts = step, kind, error, attempts


def _cause(exc: ActivityError) -> str:
    """The activity's own last failure: when Temporal gives up on a retry schedule (e.g. "not
    enough time to schedule next retry"), that failure sits deeper in the cause chain."""
    cause = exc.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        deeper = getattr(cause, "cause", None)
        if deeper is None:
            break
        cause = deeper
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'error'}: {cause.message}"
    return str(cause or exc)


def _attempts(exc: ActivityError) -> int:
    """How many attempts the activity made before giving up (1 for a non-retryable error)."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.non_retryable:
        return 1
    return 0  # retried until its schedule ran out; the activity's history has the count


@workflow.defn(name="EpisodeWorkflow")
class EpisodeWorkflow:
    def __init__(self) -> None:
        self._step = 0
        self._role = "planner"
        self._tool_calls = 0
        self._invalid = 0
        self._last_checkpoint: int | None = None
        self._waterfall: list[WaterfallRow] = []
        self._bookkeeping = BOOKKEEPING
        self._turn_options = TURN_OPTIONS
        self._tool_options = TOOL_OPTIONS
        # P-ReAct: actions committed before their turn ended, by step (from the signal), and
        # the tool call started for the current step while its turn still decodes.
        self._ready: dict[int, ActionReady] = {}
        self._early_tool: asyncio.Task[ToolSummary] | None = None
        self._early_tool_start = 0.0

    @workflow.signal(name=ACTION_READY_SIGNAL)
    def action_ready(self, ready: ActionReady) -> None:
        """model_turn committed step ``ready.step``'s action: its tool may start now."""
        if ready.step >= self._step:  # a late repeat for a finished step changes nothing
            self._ready.setdefault(ready.step, ready)

    @workflow.query
    def progress(self) -> dict[str, object]:
        return {
            "step": self._step,
            "role": self._role,
            "tool_calls": self._tool_calls,
            "invalid_actions": self._invalid,
        }

    @workflow.run
    async def run(self, inp: EpisodeInput) -> EpisodeResult:
        budget = timedelta(seconds=inp.retry_budget_s)
        self._bookkeeping = bookkeeping_options(budget)
        self._turn_options = turn_options(budget)
        self._tool_options = tool_options(budget)
        try:
            await workflow.execute_activity("start_episode", inp.episode_id, **self._bookkeeping)
            writer_step = await self._loop(inp)
        except DeadLettered as dead:
            self._drop_early_tool()
            await self._dead_letter(inp, dead)
            return self._result(inp, EpisodeStatus.DEAD_LETTERED, dead.error)
        except BaseException as exc:
            # A cancel reaches the workflow as asyncio.CancelledError, or as the ActivityError
            # that wraps the cancelled activity in flight: both end the episode `cancelled`.
            self._drop_early_tool()
            if not is_cancelled_exception(exc):
                raise
            await self._finish(inp, EpisodeStatus.CANCELLED, None, "cancelled by an operator")
            raise
        status = EpisodeStatus.COMPLETED if writer_step is not None else EpisodeStatus.FAILED
        error = None if writer_step is not None else "the writer produced no answer"
        await self._finish(inp, status, writer_step, error)
        return self._result(inp, status, error)

    async def _dead_letter(self, inp: EpisodeInput, dead: DeadLettered) -> None:
        request = DeadLetterRequest(
            inp.episode_id,
            dead.step,
            dead.kind,
            dead.error,
            dead.attempts,
            self._last_checkpoint,
            self._step,
            self._tool_calls,
            self._invalid,
            self._waterfall,
        )
        await workflow.execute_activity("dead_letter", request, **self._bookkeeping)

    async def _loop(self, inp: EpisodeInput) -> int | None:
        budgets = inp.budgets
        started = workflow.now()
        invalid_streak = 0
        # Hard stop: every turn either advances or counts towards the invalid streak. With
        # validated budgets it is never reached (at most max_turns - 1 research turns, then at
        # most max_consecutive_invalid + 1 writer turns), so the `return None` below, which
        # ends the episode FAILED "the writer produced no answer", is a guard only.
        max_steps = budgets.max_turns * (budgets.max_consecutive_invalid + 1)
        while self._step < max_steps:
            elapsed = (workflow.now() - started).total_seconds()
            if self._role != "writer" and (
                self._step >= budgets.max_turns - 1
                or self._tool_calls >= budgets.max_tool_calls
                or elapsed >= budgets.deadline_s
            ):
                self._role = "writer"
            step, role = self._step, self._role
            turn = await self._turn(inp, step, role)
            self._step += 1
            if not turn.valid:
                self._invalid += 1
                invalid_streak += 1
                if invalid_streak > budgets.max_consecutive_invalid:
                    raise DeadLettered(
                        step,
                        turn.kind,
                        f"invalid action repeated {invalid_streak} times: {turn.error}",
                        invalid_streak,
                    )
                continue
            invalid_streak = 0
            if role == "writer":
                return step
            if turn.tool == "answer":
                self._role = "writer"
                continue
            if self._early_tool is not None:  # P-ReAct: started while the turn decoded
                early, self._early_tool = self._early_tool, None
                tool = await early
                self._record(step, role, turn, tool, self._early_tool_start)
            else:
                tool = await self._tool(inp, step)
                self._record(step, role, turn, tool)
            self._tool_calls += 1
            self._role = "seeker"
        return None

    async def _turn(self, inp: EpisodeInput, step: int, role: str) -> TurnSummary:
        sent = workflow.now()
        decoding = workflow.start_activity(
            "model_turn",
            TurnRequest(inp.episode_id, step, role, inp.policy, inp.budgets.max_denoise_steps),
            result_type=TurnSummary,
            **self._turn_options,
        )
        if role != "writer":
            # P-ReAct: the activity signals once the turn's action is committed; its tool call
            # starts then, while the model keeps refining the thinking.
            try:
                await workflow.wait_condition(lambda: decoding.done() or step in self._ready)
            except BaseException:  # cancelled while waiting: the turn is cancelled with it
                decoding.cancel()
                raise
            if not decoding.done():
                self._early_tool_start = _seconds(workflow.now() - sent)
                self._early_tool = asyncio.ensure_future(self._tool(inp, step))
        try:
            turn: TurnSummary = await decoding
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            raise DeadLettered(step, ROLE_KIND[role], _cause(exc), _attempts(exc)) from exc
        self._last_checkpoint = turn.checkpoint_id
        round_trip = (workflow.now() - sent).total_seconds()
        t = turn.timings
        t.orchestration = max(0.0, round_trip - t.queue - t.decode - t.checkpoint)
        if role == "writer" or turn.tool == "answer" or not turn.valid:
            self._drop_early_tool()  # cannot happen: only a valid search/fetch is signalled
            self._record(step, role, turn, None)
        return turn

    def _drop_early_tool(self) -> None:
        if self._early_tool is not None and not self._early_tool.done():
            self._early_tool.cancel()
        self._early_tool = None

    async def _tool(self, inp: EpisodeInput, step: int) -> ToolSummary:
        sent = workflow.now()
        try:
            tool: ToolSummary = await workflow.execute_activity(
                "tool_call",
                ToolRequest(inp.episode_id, step),
                result_type=ToolSummary,
                **self._tool_options,
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            raise DeadLettered(step, "tool", _cause(exc), _attempts(exc)) from exc
        round_trip = (workflow.now() - sent).total_seconds()
        t = tool.timings
        t.orchestration = max(0.0, round_trip - t.tool - t.checkpoint)
        return tool

    def _record(
        self,
        step: int,
        role: str,
        turn: TurnSummary,
        tool: ToolSummary | None,
        tool_start: float | None = None,
    ) -> None:
        t = StepTimings(**vars(turn.timings))
        overlap = 0.0
        if tool is not None:
            self._last_checkpoint = max(turn.checkpoint_id, tool.checkpoint_id)
            t.tool = tool.timings.tool
            t.checkpoint += tool.timings.checkpoint
            t.orchestration += tool.timings.orchestration
        if tool is not None and tool_start is not None:
            # Both ran from tool_start until the first of them ended.
            turn_s = turn.timings.queue + turn.timings.decode + turn.timings.checkpoint
            turn_s += turn.timings.orchestration
            tool_s = tool.timings.tool + tool.timings.checkpoint + tool.timings.orchestration
            overlap = max(0.0, min(turn_s, tool_start + tool_s) - tool_start)
        self._waterfall.append(
            WaterfallRow(
                step=step,
                role=role,
                backend=turn.backend,
                tool=turn.tool,
                timings=t,
                tool_start=tool_start,
                overlap=overlap,
            )
        )

    async def _finish(
        self, inp: EpisodeInput, status: str, writer_step: int | None, error: str | None
    ) -> None:
        await workflow.execute_activity(
            "finish_episode",
            FinishRequest(
                inp.episode_id,
                status,
                writer_step,
                self._step,
                self._tool_calls,
                self._invalid,
                self._waterfall,
                error,
            ),
            **self._bookkeeping,
        )

    def _result(self, inp: EpisodeInput, status: str, error: str | None) -> EpisodeResult:
        return EpisodeResult(
            inp.episode_id, status, self._step, self._tool_calls, self._invalid, error
        )
