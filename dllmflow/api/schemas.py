"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from dllmflow.store.episodes import validate_question
from dllmflow.store.models import EpisodeStatus
from dllmflow.workflows.service import check_policy
from dllmflow.workflows.types import POLICIES, Budgets

Policy = Annotated[
    str, AfterValidator(check_policy), Field(json_schema_extra={"enum": list(POLICIES)})
]
Question = Annotated[str, AfterValidator(validate_question), Field(examples=["Who founded X?"])]
MAX_RECORD_BYTES = 65_536
StatusName = Literal[EpisodeStatus.ALL]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetsIn(Strict):
    """Per-episode limits; any left out keep their defaults."""

    max_turns: int | None = Field(None, ge=2, description="agent turns, writer included")
    max_tool_calls: int | None = Field(None, gt=0)
    max_denoise_steps: int | None = Field(None, gt=0, description="per turn, diffusion only")
    deadline_s: float | None = Field(None, gt=0, description="wall clock for the episode")
    max_consecutive_invalid: int | None = Field(None, gt=0)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    def to_budgets(self) -> Budgets:
        return Budgets(**{**asdict(Budgets()), **self.given()}).validate()


class SubmitEpisode(Strict):
    question: Question
    policy: Policy = "routed"
    budgets: BudgetsIn | None = None
    question_record: dict[str, Any] | None = Field(
        None,
        validate_default=True,
        description="the whole question line (expected answer, aliases, hops) for eval and the"
        " oracle policy, as in `dllmflow submit` files",
    )

    @field_validator("question_record")
    @classmethod
    def _check_record(
        cls, record: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        if record is not None and len(json.dumps(record, default=str)) > MAX_RECORD_BYTES:
            raise ValueError(f"question_record is over {MAX_RECORD_BYTES} bytes of JSON")
        if info.data.get("policy") == "oracle" and "answer" not in (record or {}):
            raise ValueError("the oracle policy needs question_record with the expected 'answer'")
        return record


class RetryEpisode(Strict):
    budgets: BudgetsIn | None = Field(None, description="overrides for the retried run")


class ReplayEpisode(Strict):
    from_step: int = Field(ge=0, description="reuse checkpoints before this step")
    policy: Policy | None = Field(None, description="defaults to the source episode's policy")


class EpisodeSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    question: str
    policy: str
    status: str
    answer: str | None
    error: str | None
    parent_episode_id: str | None
    eval_run_id: str | None
    created_at: datetime
    finished_at: datetime | None


class EpisodeOut(EpisodeSummary):
    question_id: str | None
    budgets: dict[str, Any]
    sources: list[Any]
    metrics: dict[str, Any]
    workflow_id: str | None
    replay_from_step: int | None
    updated_at: datetime
    temporal_url: str | None = None


class ToolResult(BaseModel):
    checkpoint_id: int
    ok: bool
    error: str | None
    result_preview: str
    latency_s: float | None


class TimelineTurn(BaseModel):
    """One step of an episode: the model turn and, if it called one, its tool."""

    step: int
    kind: str
    role: str | None
    backend: str | None
    model: str | None
    checkpoint_id: int
    queue_s: float | None
    decode_s: float | None
    valid: bool
    error: str | None
    thinking: str | None
    action: dict[str, Any] | None
    stats: dict[str, Any]
    repaired: bool = False
    copied_from: int | None = None
    action_checkpoint_id: int | None = None  # P-ReAct: the action committed before the turn
    tool: ToolResult | None = None


class CheckpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    episode_id: str
    step: int
    kind: str
    role: str | None
    idempotency_key: str
    payload: dict[str, Any]
    backend: str | None
    model: str | None
    timings: dict[str, Any]
    superseded_at: datetime | None
    created_at: datetime


class DeadLetterOut(BaseModel):
    id: str
    episode_id: str
    step: int
    kind: str
    error: str
    attempts: int
    last_checkpoint_id: int | None
    policy: str
    budgets: dict[str, Any]
    at: float


class PurgeResult(BaseModel):
    purged: int


class EvalRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    out_dir: str | None
    created_at: datetime
    finished_at: datetime | None


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    via: str
    client: str | None
    action: str
    target: str | None
    payload: dict[str, Any]
    outcome: str
    detail: str | None
    finished_at: datetime | None


class ErrorOut(BaseModel):
    error: str
    fields: list[dict[str, str]] | None = None
