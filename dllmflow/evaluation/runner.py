"""Run every question under every policy as real episodes (Temporal), resumably.

State kept in the output directory:
    run.json        the EvalRun id and the configuration it was started with
    episodes.jsonl  one line per finished (question, policy) episode, appended as each finishes
Episode ids are derived from (eval run, question id, policy), so an interrupted eval resumes by
waiting on episodes still running in Temporal and skipping those already finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from dllmflow.config import Settings
from dllmflow.evaluation.variants import (  # noqa: F401 (re-exported: runner.ABLATIONS)
    ABLATIONS,
    CHECKPOINT_ROOT,
    ablation_checkpoint,
)
from dllmflow.store.db import transaction
from dllmflow.store.models import Checkpoint, Episode, EpisodeStatus, EvalRun
from dllmflow.workflows.types import ACTION_KIND, POLICIES, ROLE_KIND, Budgets

RUN_FILE = "run.json"
MANIFEST_FILE = "episodes.jsonl"
TURN_KINDS = tuple(ROLE_KIND.values())
GOLD_KEYS = ("id", "answer", "aliases")
COUNTERS = ("turns", "tool_calls", "invalid_actions")


@dataclass
class EvalConfig:
    questions: str
    policies: list[str]
    concurrency: int = 4
    corpus: str | None = None
    limit: int | None = None
    name: str | None = None
    budgets: dict[str, Any] = field(default_factory=lambda: asdict(Budgets()))
    # Serving settings of the worker the episodes ran on (a variant's dedicated worker when
    # any is set; None: the stack's worker as configured).
    tau: float | None = None
    ablate: str | None = None
    diffusion_checkpoint: str | None = None
    action_first: bool | None = None
    variant: str | None = None
    task_queue: str | None = None
    episode_timeout_s: float | None = None
    tool_latency: str | None = None  # DLLMFLOW_TOOL_LATENCY of the run's worker


def parse_policies(text: str) -> list[str]:
    policies = [p.strip() for p in text.split(",") if p.strip()]
    if not policies:
        raise ValueError("--policies is empty; give e.g. ar,diffusion,routed,oracle")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(
            f"unknown policy {unknown[0]!r} in --policies; known: {', '.join(POLICIES)}"
        )
    return list(dict.fromkeys(policies))


def question_key(record: dict[str, Any], policy: str) -> str:
    return f"{record['id']}::{policy}"


def episode_id_for(run_id: str, record: dict[str, Any], policy: str) -> str:
    digest = hashlib.sha256(f"{run_id}/{record['id']}/{policy}".encode()).hexdigest()[:16]
    return f"ev-{digest}"


# ---------------------------------------------------------------------------------------------
# Eval run state: the EvalRun row plus run.json / episodes.jsonl in the output directory


def open_run(settings: Settings, out: Path, config: EvalConfig) -> str:
    """The EvalRun id recorded in `out`, or a new EvalRun row (and run.json) if there is none."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    if run_file.exists():
        try:
            run_id = json.loads(run_file.read_text())["eval_run_id"]
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{run_file} is not a dllmflow eval run file ({exc})") from None
        with transaction(settings) as session:
            row = session.get(EvalRun, run_id)
            if row is None:
                raise ValueError(
                    f"{run_file} names eval run {run_id}, which this database does not have; "
                    "use a fresh --out directory"
                )
            row.status, row.config = "running", asdict(config)
        return run_id
    run_id = "eval-" + uuid.uuid4().hex[:12]
    with transaction(settings) as session:
        session.add(
            EvalRun(
                id=run_id,
                name=config.name or out.name,
                status="running",
                config=asdict(config),
                out_dir=str(out.resolve()),
            )
        )
    run_file.write_text(json.dumps({"eval_run_id": run_id, "config": asdict(config)}, indent=2))
    return run_id


def read_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """Finished episodes by "question id::policy"; a torn last line (crash mid-write) is ignored."""
    path = out / MANIFEST_FILE
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        done[f"{entry['question_id']}::{entry['policy']}"] = entry
    return done


def finish_run(settings: Settings, run_id: str, metrics: dict[str, Any], status: str) -> None:
    with transaction(settings) as session:
        session.execute(
            update(EvalRun)
            .where(EvalRun.id == run_id)
            .values(metrics=metrics, status=status, finished_at=_now())
        )


def _now():
    from sqlalchemy import func

    return func.now()


# ---------------------------------------------------------------------------------------------
# Episode records (what metrics.py consumes)


def episode_record(settings: Settings, episode_id: str) -> dict[str, Any]:
    """A plain dict of one finished episode plus its live turn checkpoints."""
    with transaction(settings) as session:
        ep = session.get(Episode, episode_id)
        if ep is None:
            raise LookupError(f"episode {episode_id} not found")
        cps = session.scalars(
            select(Checkpoint)
            .where(
                Checkpoint.episode_id == episode_id,
                Checkpoint.superseded_at.is_(None),
                Checkpoint.kind.in_((*TURN_KINDS, ACTION_KIND)),
            )
            .order_by(Checkpoint.step, Checkpoint.id)
        ).all()
        turn_stats, first_useful = [], None
        for cp in cps:
            if cp.kind == ACTION_KIND:  # P-ReAct: the action, usable before its turn ended
                if first_useful is None:
                    first_useful = (cp.created_at - ep.created_at).total_seconds()
                continue
            stats = cp.payload.get("stats") or {}
            valid = bool(cp.payload.get("valid"))
            if valid and cp.payload.get("action") and first_useful is None:
                first_useful = (cp.created_at - ep.created_at).total_seconds()
            turn_stats.append(
                {
                    "step": cp.step,
                    "role": cp.role,
                    "backend": cp.backend,
                    "valid": valid,
                    "repaired": bool(cp.payload.get("repaired")),
                    "tool": (cp.payload.get("action") or {}).get("tool"),
                    "model": stats.get("model"),
                    "decode_s": float(stats.get("decode_s") or 0.0),
                    "tokens": int(stats.get("tokens") or 0),
                    "forward_passes": int(stats.get("forward_passes") or 0),
                    "refinement_passes": int(stats.get("refinement_passes") or 0),
                    "action_ready_s": stats.get("action_ready_s"),
                    "routing": stats.get("routing") or {},
                }
            )
        latency = (ep.finished_at - ep.created_at).total_seconds() if ep.finished_at else None
        counters = {k: int(ep.metrics.get(k) or 0) for k in COUNTERS}
        if "turns" not in ep.metrics:
            # Episodes dead-lettered before the workflow recorded their counters have none; their
            # checkpoints hold the same counts (equal to the workflow's wherever both exist).
            tools = session.scalars(
                select(Checkpoint.id).where(
                    Checkpoint.episode_id == episode_id,
                    Checkpoint.superseded_at.is_(None),
                    Checkpoint.kind == "tool",
                )
            ).all()
            counters = {
                "turns": len(turn_stats),
                "tool_calls": len(tools),
                "invalid_actions": sum(not t["valid"] for t in turn_stats),
            }
        return {
            "id": ep.id,
            "question_id": ep.question_id,
            "policy": ep.policy,
            "status": ep.status,
            "answer": ep.answer,
            "error": ep.error,
            "question_record": {
                k: ep.question_record.get(k)
                for k in ("id", "answer", "aliases")
                if k in ep.question_record
            },
            "latency_s": latency,
            "first_useful_s": first_useful,
            **counters,
            "counters_from": "workflow" if "turns" in ep.metrics else "checkpoints",
            "waterfall": ep.metrics.get("waterfall") or [],
            "turn_stats": turn_stats,
        }


def existing_episode(settings: Settings, episode_id: str) -> Episode | None:
    with transaction(settings) as session:
        return session.get(Episode, episode_id)


def run_records(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    """Records of every finished episode of an eval run."""
    with transaction(settings) as session:
        ids = session.scalars(
            select(Episode.id)
            .where(Episode.eval_run_id == run_id, Episode.status.in_(EpisodeStatus.FINISHED))
            .order_by(Episode.created_at)
        ).all()
    return [episode_record(settings, i) for i in ids]


# ---------------------------------------------------------------------------------------------
# The run loop


@dataclass
class RunStats:
    submitted: int = 0
    resumed: int = 0  # found still running in Temporal and waited on
    skipped: int = 0  # already finished in an earlier invocation
    failed: list[str] = field(default_factory=list)


async def run_eval(
    settings: Settings,
    run_id: str,
    questions: Sequence[dict[str, Any]],
    config: EvalConfig,
    out: Path,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> RunStats:
    """Every (question, policy) pair at most `concurrency` at a time; finished ones are skipped."""
    from dllmflow.workflows.service import EpisodeService

    svc = await EpisodeService.connect(settings)
    budgets = Budgets(**config.budgets).validate()
    timeout = config.episode_timeout_s or budgets.deadline_s + 120.0
    done = read_manifest(out)
    stats = RunStats()
    gate = asyncio.Semaphore(config.concurrency)
    manifest = (out / MANIFEST_FILE).open("a", encoding="utf-8")

    async def one(record: dict[str, Any], policy: str) -> None:
        eid = episode_id_for(run_id, record, policy)
        async with gate:
            row = await asyncio.to_thread(existing_episode, settings, eid)
            if row is None:
                await svc.submit(
                    record["question"],
                    policy=policy,
                    budgets=budgets,
                    question_record=record,
                    eval_run_id=run_id,
                    episode_id=eid,
                )
                stats.submitted += 1
            else:
                stats.resumed += 1
            try:
                await svc.wait(eid, timeout=timeout)
            except Exception as exc:  # the episode row still records what happened
                stats.failed.append(f"{eid}: {type(exc).__name__}: {exc}")
            rec = await asyncio.to_thread(episode_record, settings, eid)
        if rec["status"] in EpisodeStatus.FINISHED:  # still running: picked up on resume
            entry = {
                "question_id": record["id"],
                "policy": policy,
                "episode_id": eid,
                "status": rec["status"],
            }
            manifest.write(json.dumps(entry) + "\n")
            manifest.flush()
        if on_done:
            on_done(rec)

    pending = []
    for record in questions:
        for policy in config.policies:
            if question_key(record, policy) in done:
                stats.skipped += 1
                if on_done:
                    on_done({})
            else:
                pending.append(one(record, policy))
    try:
        await asyncio.gather(*pending)
    finally:
        manifest.close()
    return stats
