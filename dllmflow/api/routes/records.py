"""Read-only records: eval runs and the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from dllmflow.api import audit, queries
from dllmflow.api.deps import require_token
from dllmflow.api.schemas import AuditOut, EvalRunOut
from dllmflow.api.state import ApiState, api_state

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])


@router.get(
    "/eval-runs",
    response_model=list[EvalRunOut],
    tags=["eval runs"],
    summary="Eval runs, newest first; metrics are keyed by policy",
)
def list_eval_runs(
    limit: int = Query(50, ge=1, le=500), state: ApiState = Depends(api_state)
) -> Any:
    return queries.eval_runs(state.settings, limit)


@router.get("/eval-runs/{run_id}", response_model=EvalRunOut, tags=["eval runs"])
def get_eval_run(run_id: str, state: ApiState = Depends(api_state)) -> Any:
    return queries.eval_run(state.settings, run_id)


@router.get(
    "/audit", response_model=list[AuditOut], tags=["audit"], summary="Mutating calls, newest first"
)
def list_audit(
    target: str | None = Query(None, description="only entries about this episode / entry"),
    limit: int = Query(100, ge=1, le=1000),
    state: ApiState = Depends(api_state),
) -> Any:
    return audit.recent(state.settings, limit, target)
