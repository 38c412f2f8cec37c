"""`dllmflow eval`: run a question set under several policies and report paper-style metrics."""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import typer

from dllmflow.commands.common import console, err_console, run_async, settings, user_errors


@user_errors
def eval_command(
    questions: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="Questions JSONL ({id, question, answer, ...})."
    ),
    out: Path = typer.Option(..., help="Output directory; rerun with the same one to resume."),
    policies: str = typer.Option("ar,diffusion,routed", help="Comma-separated policies."),
    corpus: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Corpus JSONL to load into the default corpus."
    ),
    concurrency: int = typer.Option(4, min=1, help="Episodes running at once."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N questions."),
    name: str | None = typer.Option(None, help="Eval run name (default: the --out folder name)."),
    max_turns: int | None = typer.Option(None, min=2),
    max_tool_calls: int | None = typer.Option(None, min=1),
    max_denoise_steps: int | None = typer.Option(
        None, "--max-denoise-steps", "--max-steps", min=1, help="Per-turn denoising budget."
    ),
    deadline_s: float | None = typer.Option(None, min=1, help="Wall clock per episode."),
    tau: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Commit threshold (recorded; a serving setting)."
    ),
    ablate: str | None = typer.Option(
        None, help="context-clean | span-mask: use the diffusion model trained without it."
    ),
) -> None:
    """Run every question under every policy as real episodes; write metrics, CSV, report, plots."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from dllmflow.commands.episodes import budgets_from
    from dllmflow.evaluation import runner
    from dllmflow.evaluation.metrics import gpu_price_per_hour, is_correct
    from dllmflow.evaluation.report import write_outputs
    from dllmflow.models.world import read_questions
    from dllmflow.store.corpus import DEFAULT_CORPUS, load_jsonl

    price = gpu_price_per_hour()
    chosen = runner.parse_policies(policies)
    records = read_questions(questions)[:limit] if limit else read_questions(questions)
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{questions}: question id {dup!r} appears more than once")
    budgets = budgets_from(max_turns, max_tool_calls, max_denoise_steps, deadline_s)
    config = runner.EvalConfig(
        questions=str(questions),
        policies=chosen,
        concurrency=concurrency,
        corpus=str(corpus) if corpus else None,
        limit=limit,
        name=name,
        budgets=asdict(budgets),
        tau=tau,
        ablate=ablate,
    )
    if ablate:
        config = replace(config, diffusion_checkpoint=str(runner.ablation_checkpoint(ablate)))
        err_console.print(
            f"[yellow]--ablate {ablate}:[/] start serving with "
            f"DLLMFLOW_DIFFUSION_CHECKPOINT={config.diffusion_checkpoint}",
            highlight=False,
        )
    if tau is not None:
        err_console.print(
            f"[yellow]--tau {tau} is recorded only;[/] serving reads DLLMFLOW_TAU at start",
            highlight=False,
        )

    s = settings()
    if corpus:
        report = load_jsonl(s, corpus, corpus=DEFAULT_CORPUS)
        err_console.print(
            f"loaded {report.loaded} documents into corpus {DEFAULT_CORPUS!r}"
            + (f" ({len(report.skipped)} bad lines skipped)" if report.skipped else ""),
            highlight=False,
        )
    run_id = runner.open_run(s, out, config)
    total = len(records) * len(chosen)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(f"eval {run_id}", total=total)
        correct = [0]

        def on_done(rec: dict) -> None:
            correct[0] += bool(rec) and is_correct(rec)
            progress.update(task, advance=1, description=f"eval {run_id} ({correct[0]} correct)")

        stats = run_async(runner.run_eval(s, run_id, records, config, out, on_done=on_done))
    all_records = runner.run_records(s, run_id)
    argv = sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]
    command = "dllmflow eval " + shlex.join(argv) if "--questions" in argv else None
    metrics = write_outputs(
        all_records, out, config=asdict(config), run_id=run_id, price=price, command=command
    )
    status = "completed" if not stats.failed else "completed_with_errors"
    runner.finish_run(s, run_id, metrics, status)
    err_console.print(
        f"eval run {run_id}: {stats.submitted} submitted, {stats.resumed} resumed, "
        f"{stats.skipped} already finished",
        highlight=False,
    )
    for line in stats.failed[:10]:
        err_console.print(f"[red]episode error:[/] {line}", highlight=False)
    for policy, m in metrics["policies"].items():
        acc = "-" if m["accuracy"] is None else f"{m['accuracy']:.1%}"
        p50 = "-" if m["latency_p50_s"] is None else f"{m['latency_p50_s']:.2f}s"
        console.print(
            f"{policy:<10} accuracy {acc:>6}  latency p50 {p50}  episodes {m['episodes']}",
            highlight=False,
        )
    console.print(f"report: {out / 'report.md'}", highlight=False)
