"""Workflow and activity inputs/outputs. They travel through Temporal history, so keep them small:
keys and summaries only; whole samples and tool results live in Postgres checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

POLICIES = ("routed", "ar", "diffusion", "ab", "shadow", "oracle")
ROLE_KIND = {"planner": "plan", "seeker": "seek", "writer": "write"}
# P-ReAct: the checkpoint of an action span committed before its turn ended, and the signal by
# which the model_turn activity tells the workflow to start that action's tool call.
ACTION_KIND = "action"
ACTION_READY_SIGNAL = "action_ready"


@dataclass
class Budgets:
    max_turns: int = 16
    max_tool_calls: int = 12
    max_denoise_steps: int = 256  # per turn, diffusion only
    deadline_s: float = 1800.0  # wall clock for the whole episode
    max_consecutive_invalid: int = 2

    def validate(self) -> Budgets:
        problems = [
            f"{name} must be positive (got {value})"
            for name, value in vars(self).items()
            if value is None or value <= 0
        ]
        if self.max_turns < 2:
            problems.append(f"max_turns must be at least 2 (got {self.max_turns})")
        if problems:
            raise ValueError("invalid budgets: " + "; ".join(problems))
        return self


DEFAULT_RETRY_BUDGET_S = 15 * 60.0


@dataclass
class EpisodeInput:
    episode_id: str
    policy: str
    budgets: Budgets = field(default_factory=Budgets)
    # How long each activity is retried before the episode is dead-lettered (Settings'
    # activity_retry_budget_s when the workflow was started).
    retry_budget_s: float = DEFAULT_RETRY_BUDGET_S


@dataclass
class TurnRequest:
    episode_id: str
    step: int
    role: str
    policy: str
    max_denoise_steps: int


@dataclass
class ActionReady:
    """Sent by model_turn once the action span of step ``step`` is committed and checkpointed."""

    step: int
    checkpoint_id: int
    tool: str


@dataclass
class StepTimings:
    """One step of the latency waterfall, in seconds."""

    queue: float = 0.0
    decode: float = 0.0
    tool: float = 0.0
    checkpoint: float = 0.0
    orchestration: float = 0.0


@dataclass
class TurnSummary:
    step: int
    kind: str
    role: str
    idempotency_key: str
    checkpoint_id: int
    valid: bool
    tool: str | None
    error: str | None
    cached: bool
    backend: str
    timings: StepTimings


@dataclass
class ToolRequest:
    episode_id: str
    step: int


@dataclass
class ToolSummary:
    step: int
    idempotency_key: str
    checkpoint_id: int
    ok: bool
    error: str | None
    cached: bool
    timings: StepTimings


@dataclass
class WaterfallRow:
    step: int
    role: str
    backend: str
    tool: str | None
    timings: StepTimings
    # P-ReAct: seconds from the turn's start to its tool call's start (None: the tool started
    # after the turn), and the seconds the tool and the turn ran at the same time.
    tool_start: float | None = None
    overlap: float = 0.0


@dataclass
class FinishRequest:
    episode_id: str
    status: str
    writer_step: int | None
    turns: int
    tool_calls: int
    invalid_actions: int
    waterfall: list[WaterfallRow]
    error: str | None = None


@dataclass
class DeadLetterRequest:
    episode_id: str
    step: int
    kind: str
    error: str
    attempts: int
    last_checkpoint_id: int | None
    # What the episode did before it was dead-lettered (recorded like a finished episode's).
    turns: int = 0
    tool_calls: int = 0
    invalid_actions: int = 0
    waterfall: list[WaterfallRow] = field(default_factory=list)


@dataclass
class EpisodeResult:
    episode_id: str
    status: str
    turns: int
    tool_calls: int
    invalid_actions: int
    error: str | None = None
