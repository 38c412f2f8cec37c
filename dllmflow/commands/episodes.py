"""`dllmflow run | submit | episodes ...`: start research episodes and inspect them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from dllmflow.commands.common import (
    audited_cli,
    console,
    err_console,
    print_json,
    run_async,
    service,
    settings,
    user_errors,
)

app = typer.Typer(help="List, inspect, retry, replay and cancel episodes.", no_args_is_help=True)


def budgets_from(
    max_turns: int | None,
    max_tool_calls: int | None,
    max_denoise_steps: int | None,
    deadline_s: float | None,
):
    from dllmflow.workflows.types import Budgets

    values = {
        "max_turns": max_turns,
        "max_tool_calls": max_tool_calls,
        "max_denoise_steps": max_denoise_steps,
        "deadline_s": deadline_s,
    }
    return Budgets(**{k: v for k, v in values.items() if v is not None}).validate()


def submit_payload(question: str, policy: str) -> dict[str, Any]:
    """What the audit log keeps of a submission (as the API does: policy, question preview)."""
    from dllmflow.api.views import preview

    return {"policy": policy, "question": preview(question, 200)}


async def follow_episode(s, episode_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Print live progress events until the episode finishes; returns the final event."""
    from dllmflow.store.episodes import EpisodeRepository
    from dllmflow.store.models import EpisodeStatus
    from dllmflow.store.streams import ProgressStream

    stream = ProgressStream(s)
    cursor, final = "0-0", {}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    # Turns and tool calls scroll by; the decode in flight is one line updated in place.
    with console.status("waiting for the worker", spinner="dots") as live:
        while True:
            events = await asyncio.to_thread(stream.read, episode_id, cursor, 1000)
            if not events:
                await asyncio.sleep(0.2)
            else:
                cursor = events[-1][0]
            for _entry_id, event in events:
                final = print_event(event, live) or final
            if final:
                return final
            if deadline is not None and loop.time() > deadline:
                return {"event": "timeout"}
            status = await asyncio.to_thread(lambda: EpisodeRepository(s).get(episode_id).status)
            if status in EpisodeStatus.FINISHED and not events:
                return {"event": "finished", "status": status}


def print_event(event: dict[str, Any], live: Any) -> dict[str, Any] | None:
    """Show one progress event; returns it when it ends the episode."""
    kind = event["event"]
    if kind == "turn":
        mark = "[green]ok[/]" if event["valid"] else f"[red]invalid[/] {event['error']}"
        console.print(
            f"  step {event['step']:>2} {event['role']:<7} {event['backend']:<9}"
            f" {event['tool'] or '-':<7} {mark}",
            highlight=False,
        )
    elif kind == "tool":
        state = "ok" if event["ok"] else f"error: {event['error']}"
        console.print(f"           tool {event['tool']} {state}", highlight=False)
        live.update(f"step {event['step'] + 1}: decoding")
    elif kind == "model_progress":
        if "committed_fraction" in event and event.get("refinement_passes") is not None:
            live.update(
                f"step {event['step']} {event['role']}: refinement pass "
                f"{event['refinement_passes']}, {event['committed_fraction']:.0%} committed"
            )
        else:
            live.update(f"step {event['step']} {event['role']}: {event.get('phase', 'decoding')}")
    elif kind in ("finished", "dead_lettered"):
        return event
    return None


def episode_summary(s, episode_id: str) -> dict[str, Any]:
    from dllmflow.store.episodes import EpisodeRepository

    ep = EpisodeRepository(s).get(episode_id)
    return {
        "id": ep.id,
        "status": ep.status,
        "policy": ep.policy,
        "question": ep.question,
        "answer": ep.answer,
        "sources": ep.sources,
        "error": ep.error,
        "parent_episode_id": ep.parent_episode_id,
        "replay_from_step": ep.replay_from_step,
        "metrics": {k: v for k, v in ep.metrics.items() if k != "waterfall"},
    }


def print_answer(summary: dict[str, Any]) -> None:
    status = summary["status"]
    color = "green" if status == "completed" else "red"
    console.print(f"\n[bold]episode[/] {summary['id']}  [{color}]{status}[/]", highlight=False)
    if summary.get("parent_episode_id"):
        console.print(
            f"replay of {summary['parent_episode_id']} from step {summary['replay_from_step']}",
            highlight=False,
        )
    if summary["answer"]:
        console.print(f"[bold]answer:[/] {summary['answer']}", highlight=False)
        console.print(f"[bold]sources:[/] {', '.join(summary['sources']) or '-'}", highlight=False)
    if summary["error"]:
        console.print(f"[bold]error:[/] {summary['error']}", highlight=False)
    m = summary["metrics"]
    if m:
        console.print(
            f"turns {m.get('turns')}, tool calls {m.get('tool_calls')}, "
            f"invalid actions {m.get('invalid_actions')}",
            highlight=False,
        )
    console.print(f"inspect: dllmflow episodes show {summary['id']}", highlight=False)


def run_command(
    question: str = typer.Argument(..., metavar="QUESTION", help="The research question."),
    policy: str = typer.Option(
        "routed",
        help="routed | ar | diffusion | ab | shadow (the oracle needs a question record with "
        "its ground truth: use `submit` with a JSONL file)",
    ),
    follow: bool = typer.Option(False, "--follow", help="Stream progress until it finishes."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    wait: bool = typer.Option(True, help="Wait for the answer (implied by --follow)."),
    max_turns: int | None = typer.Option(None, min=2),
    max_tool_calls: int | None = typer.Option(None, min=1),
    max_denoise_steps: int | None = typer.Option(None, min=1),
    deadline_s: float | None = typer.Option(None, min=1),
) -> None:
    """Run one research episode."""
    s = settings()

    async def go() -> dict[str, Any]:
        svc = await service(s)
        budgets = budgets_from(max_turns, max_tool_calls, max_denoise_steps, deadline_s)
        with audited_cli(s, "episode.submit", payload=submit_payload(question, policy)) as entry:
            episode = await svc.submit(question, policy=policy, budgets=budgets)
            entry.target = episode.id
        if not as_json:
            err_console.print(f"submitted episode {episode.id} ({policy})", highlight=False)
        if follow:
            await follow_episode(s, episode.id)
        elif wait:
            await svc.wait(episode.id)
        else:
            return {"id": episode.id, "status": "queued"}
        return episode_summary(s, episode.id)

    result = run_async(go())
    if as_json:
        print_json(result)
    elif "answer" in result:
        print_answer(result)
    else:
        console.print(
            f"episode {result['id']} queued; follow it: dllmflow episodes show {result['id']}",
            highlight=False,
        )
    if result["status"] not in ("completed", "queued"):
        raise typer.Exit(1)  # waited for it, and it did not complete


def submit_command(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="JSONL of {id, question, ...}."
    ),
    policy: str = typer.Option("routed"),
    concurrency: int = typer.Option(4, min=1, help="Episodes running at once."),
    outage_wait: float = typer.Option(
        None,
        min=0,
        help="Seconds an unreachable Temporal (a restart) is waited out per start and per "
        "result before the episode is reported [default: DLLMFLOW_TEMPORAL_OUTAGE_S, 300].",
    ),
) -> None:
    """Submit every question of a JSONL file, at most CONCURRENCY at a time.

    The whole file is checked first (each problem named by its line). A Temporal outage is
    waited out (--outage-wait) and said so. Then an episode that cannot be submitted, or whose
    result cannot be read, is reported on one line and the rest go on; the summary names what
    was and was not submitted, and the exit status is non-zero unless every episode completed.
    """
    from dllmflow.workflows.service import check_policy

    s = settings()
    if outage_wait is not None:
        s = s.model_copy(update={"temporal_outage_s": outage_wait})
    check_policy(policy)
    lines = read_question_lines(file, policy=policy)
    results = run_async(submit_all(s, lines, policy, concurrency))
    print_submit_summary(results)
    if any(r["status"] != "completed" for r in results):
        raise typer.Exit(1)


async def submit_all(
    s, lines: list[tuple[int, dict[str, Any]]], policy: str, concurrency: int
) -> list[dict[str, Any]]:
    """Submit and wait for every (line, record); never raises for one episode's error."""
    from dllmflow.workflows.service import rpc_reason

    svc = await service(s)
    svc.outage_s = s.temporal_outage_s  # --outage-wait, also on a service connected earlier
    gate = asyncio.Semaphore(concurrency)
    total = len(lines)
    finished = 0
    said = {"at": -1e9}

    def on_outage(episode_id: str, down_s: float, reason: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - said["at"] >= 10:  # one line per 10 s, not one per episode and retry
            said["at"] = now
            err_console.print(
                f"[yellow]Temporal unreachable for {down_s:.0f}s ({reason}); still trying to "
                f"start {episode_id} and the others, for up to {svc.outage_s:.0f}s[/]",
                highlight=False,
            )

    svc.on_outage = on_outage

    async def one(number: int, record: dict[str, Any]) -> dict[str, Any]:
        nonlocal finished
        label = f"line {number}" + (f" ({record['id']})" if record.get("id") is not None else "")
        row: dict[str, Any] = {"line": number, "question_id": record.get("id")}
        async with gate:
            try:
                payload = submit_payload(record["question"], policy)
                with audited_cli(s, "episode.submit", payload=payload) as entry:
                    ep = await svc.submit(record["question"], policy=policy, question_record=record)
                    entry.target = ep.id
            except Exception as exc:
                row.update(episode_id=getattr(exc, "episode_id", None), status="not submitted")
                row["error"] = one_line(exc, rpc_reason)
            else:
                row["episode_id"] = ep.id
                try:
                    row["status"] = (await svc.wait(ep.id)).status
                except Exception as exc:
                    row.update(status="unknown", error=one_line(exc, rpc_reason))
        finished += 1
        where = f" {row['episode_id']}" if row.get("episode_id") else ""
        detail = f": {row['error']}" if row.get("error") else ""
        color = "green" if row["status"] == "completed" else "red"
        console.print(
            f"[{finished}/{total}] {label}{where} [{color}]{row['status']}[/]{detail}",
            highlight=False,
        )
        return row

    return list(await asyncio.gather(*(one(n, r) for n, r in lines)))


def one_line(exc: BaseException, rpc_reason) -> str:
    from dllmflow.workflows.service import WorkflowNotStarted

    if isinstance(exc, WorkflowNotStarted):
        return f"workflow not started ({exc.reason})"
    return rpc_reason(exc)


def print_submit_summary(results: list[dict[str, Any]]) -> None:
    submitted = [r for r in results if r["status"] != "not submitted"]
    refused = [r for r in results if r["status"] == "not submitted"]
    completed = sum(r["status"] == "completed" for r in results)
    console.print(
        f"{completed}/{len(results)} episodes completed; submitted {len(submitted)}, "
        f"not submitted {len(refused)}",
        highlight=False,
    )
    if submitted:
        ids = ", ".join(str(r["episode_id"]) for r in submitted)
        console.print(f"submitted: {ids}", highlight=False)
    if refused:
        console.print(
            "not submitted (lines): " + ", ".join(str(r["line"]) for r in refused),
            highlight=False,
        )
        retry = [r["episode_id"] for r in refused if r.get("episode_id")]
        if retry:
            console.print(
                "their rows are marked failed; start them with: dllmflow episodes retry "
                + " ".join(retry),
                highlight=False,
            )


def read_questions(path: Path) -> list[dict[str, Any]]:
    """Questions JSONL: every line an object with a non-empty "question"; errors name the line."""
    return [record for _line, record in read_question_lines(path)]


def read_question_lines(path: Path, policy: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every question; every problem is reported, by line, at once."""
    from dllmflow.store.episodes import MAX_QUESTION_CHARS

    records, problems = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problems.append(f"line {number}: not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: bad JSON ({exc.msg})")
                continue
            problem = record_problem(record, policy, MAX_QUESTION_CHARS)
            if problem:
                problems.append(f"line {number}: {problem}")
                continue
            records.append((number, record))
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ValueError(f"{path}: " + "; ".join(problems[:20]) + more)
    if not records:
        raise ValueError(f"{path}: no questions found")
    return records


def record_problem(record: Any, policy: str | None, limit: int) -> str | None:
    if not isinstance(record, dict):
        return f'needs a non-empty "question" field (the line is a JSON {type(record).__name__})'
    question = record.get("question")
    if question is None or (isinstance(question, str) and not question.strip()):
        return 'needs a non-empty "question" field'
    if not isinstance(question, str):
        return f'"question" must be a string (got {type(question).__name__})'
    if len(question.strip()) > limit:
        return f'"question" is {len(question.strip())} characters; the limit is {limit}'
    qid = record.get("id")
    if qid is not None and (isinstance(qid, bool) or not isinstance(qid, str | int)):
        return f'"id" must be a string or an integer (got {type(qid).__name__})'
    if policy == "oracle" and not record.get("answer"):
        return 'the oracle policy needs the question\'s "answer" (and "hops")'
    return None


@app.command("list")
@user_errors
def list_episodes(
    status: str | None = typer.Option(None, help="Filter by status."),
    limit: int = typer.Option(30, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent episodes, newest first."""
    from dllmflow.store.episodes import EpisodeRepository

    rows = EpisodeRepository(settings()).list(status=status, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "id": e.id,
                    "status": e.status,
                    "policy": e.policy,
                    "question": e.question,
                    "answer": e.answer,
                    "created_at": e.created_at,
                }
                for e in rows
            ]
        )
        return
    table = Table()
    for col in ("id", "status", "policy", "turns", "question", "answer"):
        table.add_column(col, overflow="fold")
    for e in rows:
        table.add_row(
            e.id,
            e.status,
            e.policy,
            str(e.metrics.get("turns", "-")),
            e.question[:60],
            (e.answer or "")[:40],
        )
    console.print(table)


@app.command("show")
@user_errors
def show(episode_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Turn by turn: role, backend, latency, tool call, validity, checkpoint ids."""
    from dllmflow.store.checkpoints import CheckpointStore

    s = settings()
    summary = episode_summary(s, episode_id)
    checkpoints = CheckpointStore(s).for_episode(episode_id)
    turns = [
        {
            "checkpoint_id": cp.id,
            "step": cp.step,
            "kind": cp.kind,
            "role": cp.role,
            "backend": cp.backend,
            "model": cp.model,
            "timings": cp.timings,
            # kind "action": a P-ReAct turn's action, committed (and valid) before the turn ended
            "valid": True if cp.kind == "action" else cp.payload.get("valid", cp.payload.get("ok")),
            "action": cp.payload.get("action"),
            "error": cp.payload.get("error"),
            "reused_from": cp.payload.get("copied_from"),
            # policy=shadow: the other backend's decode of the same turn, kept for the record
            "shadow": ((cp.payload.get("stats") or {}).get("routing") or {}).get("shadow"),
        }
        for cp in checkpoints
    ]
    if as_json:
        print_json({**summary, "turns": turns})
        return
    table = Table(title=f"episode {episode_id}")
    for col in ("step", "kind", "role", "backend", "latency", "action", "valid", "checkpoint"):
        table.add_column(col, overflow="fold")
    for t in turns:
        latency = sum(float(v) for v in t["timings"].values() if isinstance(v, int | float))
        action = json.dumps(t["action"], ensure_ascii=False)[:70] if t["action"] else "-"
        valid = "[green]yes[/]" if t["valid"] else f"[red]no[/] {t['error'] or ''}"
        reused = f" (from {t['reused_from']})" if t["reused_from"] else ""
        table.add_row(
            str(t["step"]),
            t["kind"],
            t["role"] or "-",
            t["backend"] or "-",
            f"{latency * 1000:.0f} ms",
            action,
            valid,
            f"{t['checkpoint_id']}{reused}",
        )
    console.print(table)
    for t in turns:
        if t["shadow"]:
            shadow = t["shadow"]
            said = shadow.get("error") or " ".join(str(shadow.get("text", "")).split())[:200]
            console.print(
                f"[dim]step {t['step']} shadow ({shadow.get('backend')}):[/] {said}",
                highlight=False,
                soft_wrap=True,
            )
    print_answer(summary)


@app.command("history")
@user_errors
def history(episode_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The episode's Temporal event history."""
    s = settings()

    async def go():
        return await (await service(s)).history(episode_id)

    events = run_async(go())
    if as_json:
        print_json(events)
        return
    for event in events:
        extra = " ".join(
            part for part in (event.get("activity") or "", event.get("failure") or "") if part
        )
        line = f"{event['id']:>4} {event['time']} {event['type']}"
        console.print(f"{line}  {extra}" if extra else line, highlight=False, soft_wrap=True)


@app.command("retry")
@user_errors
def retry(
    episode_id: str,
    max_denoise_steps: int | None = typer.Option(None, min=1),
    max_turns: int | None = typer.Option(None, min=2),
    follow: bool = typer.Option(True, help="Wait for it and print the answer."),
) -> None:
    """Continue a failed episode from its last good checkpoint."""
    s = settings()

    async def go():
        svc = await service(s)
        overrides = {"max_denoise_steps": max_denoise_steps, "max_turns": max_turns}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        with audited_cli(s, "episode.retry", episode_id, {"budgets": overrides}):
            await svc.retry(episode_id, **overrides)
        if follow:
            await svc.wait(episode_id)

    run_async(go())
    print_answer(episode_summary(s, episode_id))


@app.command("replay")
@user_errors
def replay(
    episode_id: str,
    from_step: int = typer.Option(..., "--from", min=0, help="First step to recompute."),
    policy: str | None = typer.Option(None, help="Policy for the recomputed steps."),
    follow: bool = typer.Option(True, help="Wait for it and print the answer."),
) -> None:
    """A new episode reusing checkpoints before --from, recomputing the rest."""
    s = settings()

    async def go():
        svc = await service(s)
        payload = {"from_step": from_step, "policy": policy}
        with audited_cli(s, "episode.replay", episode_id, payload) as entry:
            new = await svc.replay(episode_id, from_step, policy)
            entry.extra = {"replay_episode_id": new.id}
        if follow:
            await svc.wait(new.id)
        return new.id

    new_id = run_async(go())
    print_answer(episode_summary(s, new_id))


@app.command("cancel")
@user_errors
def cancel(episode_id: str) -> None:
    """Cancel a running episode."""
    s = settings()

    async def go():
        svc = await service(s)
        with audited_cli(s, "episode.cancel", episode_id):
            await svc.cancel(episode_id)

    run_async(go())
    console.print(f"cancellation requested for {episode_id}")


@app.command("reconcile")
@user_errors
def reconcile() -> None:
    """Start the workflow of every queued episode that has none (`up` does this too)."""
    s = settings()

    async def go():
        return await (await service(s)).reconcile()

    started = run_async(go())
    console.print(f"started {len(started)} orphaned episode(s): {', '.join(started) or '-'}")
