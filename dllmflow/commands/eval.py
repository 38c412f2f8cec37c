"""`dllmflow eval`: run a question set under several policies and report paper-style metrics;
`dllmflow eval sweep`: the same for a base configuration and each ablation/serving variant."""

from __future__ import annotations

import contextlib
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from dllmflow.commands.common import (
    audited_cli,
    console,
    err_console,
    run_async,
    settings,
    user_errors,
)
from dllmflow.config import Settings

# Options `eval` and `eval sweep` share.
CORPUS_OPTION = typer.Option(
    None, exists=True, dir_okay=False, help="Corpus JSONL to load into the default corpus."
)
LIMIT_OPTION = typer.Option(None, min=1, help="Only the first N questions.")
MAX_TURNS_OPTION = typer.Option(None, min=2)
MAX_TOOL_CALLS_OPTION = typer.Option(None, min=1)
DEADLINE_OPTION = typer.Option(None, min=1, help="Wall clock per episode.")
TOOL_LATENCY_OPTION = typer.Option(
    None,
    "--tool-latency",
    help="Injected tool latency of the run's worker: 'realistic' (search p50 0.6 s, long "
    "tail; fetch p50 0.9 s) or a profile such as search=lognormal:0.6:2.0,fetch=fixed:0.9 "
    "(on a dedicated worker). Real HTTP fetches keep their real latency.",
)


def _tool_latency(spec: str | None) -> str | None:
    """The --tool-latency value checked now (one line naming the bad entry), not in a worker."""
    if spec is None:
        return None
    from dllmflow.workers.tools.latency import LatencyProfile, LatencySpecError

    try:
        LatencyProfile.parse(spec)
    except LatencySpecError as exc:
        raise ValueError(f"--tool-latency: {exc}") from None
    return spec


def _command_line(sub: str | None = None) -> str | None:
    """The invocation as `dllmflow eval [sub] ...`, for the report (None outside the CLI)."""
    head = ["eval", sub] if sub else ["eval"]
    argv = sys.argv[1 + len(head) :] if sys.argv[1 : 1 + len(head)] == head else sys.argv[1:]
    if "--questions" not in argv:
        return None
    return "dllmflow " + " ".join(head) + " " + shlex.join(argv)


def _read_records(questions: Path, limit: int | None) -> list[dict[str, Any]]:
    from dllmflow.world.generator import read_questions

    records = read_questions(questions)[:limit] if limit else read_questions(questions)
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{questions}: question id {dup!r} appears more than once")
    return records


def _load_corpus(s: Settings, corpus: Path | None) -> None:
    if not corpus:
        return
    from dllmflow.store.corpus import DEFAULT_CORPUS, load_jsonl

    report = load_jsonl(s, corpus, corpus=DEFAULT_CORPUS)
    err_console.print(
        f"loaded {report.loaded} documents into corpus {DEFAULT_CORPUS!r}"
        + (f" ({len(report.skipped)} bad lines skipped)" if report.skipped else ""),
        highlight=False,
    )


def run_eval_dir(
    s: Settings,
    records: list[dict[str, Any]],
    config: Any,
    out: Path,
    *,
    variant: Any,
    dedicated: bool,
    command: str | None,
    label: str = "eval",
) -> dict[str, Any]:
    """One resumable eval run in `out`; on a dedicated worker for `variant` when asked.

    The worker only starts when some episode is not finished yet, so re-aggregating a finished
    run (a resumed sweep) costs no model loading. The run is one audit-log entry ("eval.run",
    target: the eval run id, with the submitted/resumed counts).
    """
    payload = {
        "questions": config.questions,
        "policies": list(config.policies),
        "records": len(records),
        "name": config.name,
        "out": str(out),
        "variant": getattr(config, "variant", None),
    }
    with audited_cli(s, "eval.run", payload=payload) as entry:
        return _run_eval_dir(
            s,
            records,
            config,
            out,
            entry,
            variant=variant,
            dedicated=dedicated,
            command=command,
            label=label,
        )


def _run_eval_dir(
    s: Settings,
    records: list[dict[str, Any]],
    config: Any,
    out: Path,
    entry: Any,
    *,
    variant: Any,
    dedicated: bool,
    command: str | None,
    label: str,
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from dllmflow.evaluation import runner
    from dllmflow.evaluation.metrics import gpu_price_per_hour, is_correct
    from dllmflow.evaluation.report import write_outputs
    from dllmflow.evaluation.variants import variant_worker

    price = gpu_price_per_hour()
    run_id = runner.open_run(s, out, config)
    entry.target = str(run_id)
    done = runner.read_manifest(out)
    pending = any(runner.question_key(r, p) not in done for r in records for p in config.policies)
    worker = variant_worker(s, variant) if dedicated and pending else contextlib.nullcontext(s)
    total = len(records) * len(config.policies)
    with worker as run_settings:
        if dedicated and pending:
            err_console.print(
                f"{label}: worker on task queue {run_settings.task_queue!r} "
                f"({_serving_line(variant)})",
                highlight=False,
            )
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task(f"{label} {run_id}", total=total)
            correct, finished = [0], [0]
            # A log file gets no live bar: a plain line every tenth of the run instead.
            every = 0 if err_console.is_terminal else max(1, total // 10)

            def on_done(rec: dict) -> None:
                correct[0] += bool(rec) and is_correct(rec)
                finished[0] += 1
                progress.update(
                    task, advance=1, description=f"{label} {run_id} ({correct[0]} correct)"
                )
                if every and (finished[0] % every == 0 or finished[0] == total):
                    progress.console.print(
                        f"{label}: {finished[0]}/{total} episodes, {correct[0]} correct",
                        highlight=False,
                    )

            stats = run_async(
                runner.run_eval(run_settings, run_id, records, config, out, on_done=on_done)
            )
    all_records = runner.run_records(s, run_id)
    from dllmflow.evaluation.metrics import serving_accelerator
    from dllmflow.workers.serving.settings import ServingSettings

    metrics = write_outputs(
        all_records,
        out,
        config=asdict(config),
        run_id=run_id,
        price=price,
        command=command,
        accelerator=serving_accelerator(ServingSettings()),
    )
    status = "completed" if not stats.failed else "completed_with_errors"
    runner.finish_run(s, run_id, metrics, status)
    entry.extra = {
        "submitted": stats.submitted,
        "resumed": stats.resumed,
        "failed": len(stats.failed),
    }
    err_console.print(
        f"{label} run {run_id}: {stats.submitted} submitted, {stats.resumed} resumed, "
        f"{stats.skipped} already finished",
        highlight=False,
    )
    for line in stats.failed[:10]:
        err_console.print(f"[red]episode error:[/] {line}", highlight=False)
    return metrics


def _serving_line(variant: Any) -> str:
    from dllmflow.evaluation.variants import checkpoint_label

    d = variant.describe()
    checkpoint = checkpoint_label(d["diffusion_checkpoint"])
    steps = d["max_denoise_steps"]
    return (
        f"diffusion checkpoint {checkpoint}, tau {d['tau']:g}, "
        f"P-ReAct {'on' if d['p_react'] else 'off'}"
        + (f", max {steps} denoising steps per turn" if steps else "")
        + (f", tool latency {d['tool_latency']}" if d.get("tool_latency") else "")
    )


def _print_policies(metrics: dict[str, Any], prefix: str = "") -> None:
    for policy, m in metrics["policies"].items():
        acc = "-" if m["accuracy"] is None else f"{m['accuracy']:.1%}"
        p50 = "-" if m["latency_p50_s"] is None else f"{m['latency_p50_s']:.2f}s"
        console.print(
            f"{prefix}{policy:<10} accuracy {acc:>6}  latency p50 {p50}  "
            f"episodes {m['episodes']}  dead-lettered {m.get('dead_lettered', 0)}",
            highlight=False,
        )


@user_errors
def eval_command(
    ctx: typer.Context,
    questions: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Questions JSONL ({id, question, answer, ...})."
    ),
    out: Path | None = typer.Option(
        None, help="Output directory; rerun with the same one to resume."
    ),
    policies: str = typer.Option("ar,diffusion,routed", help="Comma-separated policies."),
    corpus: Path | None = CORPUS_OPTION,
    concurrency: int = typer.Option(4, min=1, help="Episodes running at once."),
    limit: int | None = LIMIT_OPTION,
    name: str | None = typer.Option(None, help="Eval run name (default: the --out folder name)."),
    max_turns: int | None = MAX_TURNS_OPTION,
    max_tool_calls: int | None = MAX_TOOL_CALLS_OPTION,
    max_denoise_steps: int | None = typer.Option(
        None, "--max-denoise-steps", "--max-steps", min=1, help="Per-turn denoising budget."
    ),
    deadline_s: float | None = DEADLINE_OPTION,
    tau: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Diffusion commit threshold (runs on a dedicated worker)."
    ),
    ablate: str | None = typer.Option(
        None,
        help="context-clean | span-mask: serve the diffusion model trained without it "
        "(on a dedicated worker).",
    ),
    p_react: bool | None = typer.Option(
        None,
        "--p-react/--no-p-react",
        help="P-ReAct action-first decoding on/off (on a dedicated worker).",
        show_default=False,
    ),
    tool_latency: str | None = TOOL_LATENCY_OPTION,
) -> None:
    """Run every question under every policy as real episodes; write metrics, CSV, report, plots.

    --tau, --ablate and --p-react are serving settings: the episodes then run on a dedicated
    worker started with them (own task queue and replicas), stopped afterwards.
    """
    if ctx.invoked_subcommand:  # `dllmflow eval sweep ...`
        return
    if questions is None or out is None:
        flag = "--questions" if questions is None else "--out"
        raise ValueError(f"missing option {flag} (see dllmflow eval --help)")
    from dllmflow.commands.episodes import budgets_from
    from dllmflow.evaluation import runner
    from dllmflow.evaluation.variants import variant_from_flags

    chosen = runner.parse_policies(policies)
    if tau is not None and tau <= 0:
        raise ValueError(f"--tau must be in (0, 1] (got {tau})")
    variant = variant_from_flags(ablate, tau, p_react)
    variant = replace(variant, tool_latency=_tool_latency(tool_latency))
    records = _read_records(questions, limit)
    budgets = budgets_from(max_turns, max_tool_calls, max_denoise_steps, deadline_s)
    serving = variant.describe()
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
        diffusion_checkpoint=variant.diffusion_checkpoint,
        action_first=p_react,
        variant=variant.name if variant.needs_worker else None,
        tool_latency=variant.tool_latency,
    )
    s = settings()
    if variant.needs_worker:
        from dllmflow.evaluation.variants import variant_queue

        config.task_queue = variant_queue(s, variant)
        err_console.print(
            f"[yellow]variant {variant.name}:[/] dedicated worker with diffusion checkpoint "
            f"{serving['diffusion_checkpoint']}, tau {serving['tau']:g}, "
            f"P-ReAct {'on' if serving['p_react'] else 'off'}"
            + (f", tool latency {variant.tool_latency}" if variant.tool_latency else ""),
            highlight=False,
        )
    _load_corpus(s, corpus)
    metrics = run_eval_dir(
        s,
        records,
        config,
        out,
        variant=variant,
        dedicated=variant.needs_worker,
        command=_command_line(),
    )
    _print_policies(metrics)
    console.print(f"report: {out / 'report.md'}", highlight=False)


@user_errors
def sweep_command(
    questions: Path = typer.Option(
        ..., exists=True, dir_okay=False, help="Questions JSONL ({id, question, answer, ...})."
    ),
    out: Path = typer.Option(
        ..., help="Sweep directory: one eval run per variant in OUT/<variant>/; rerun to resume."
    ),
    policies: str = typer.Option("diffusion", help="Comma-separated policies."),
    variants: str | None = typer.Option(
        None,
        help="Comma-separated variants, settings joined by '+': base, ablate=context-clean|"
        "span-mask, tau=X, max-steps=N, p-react=on|off (e.g. tau=0.95+p-react=on). "
        "Default: base,ablate=context-clean,ablate=span-mask,tau=0.7,tau=0.95,max-steps=8,"
        "p-react=on.",
    ),
    corpus: Path | None = CORPUS_OPTION,
    concurrency: int = typer.Option(4, min=1, help="Episodes running at once (per variant)."),
    limit: int | None = LIMIT_OPTION,
    name: str | None = typer.Option(None, help="Sweep name (default: the --out folder name)."),
    max_turns: int | None = MAX_TURNS_OPTION,
    max_tool_calls: int | None = MAX_TOOL_CALLS_OPTION,
    deadline_s: float | None = DEADLINE_OPTION,
    tool_latency: str | None = TOOL_LATENCY_OPTION,
) -> None:
    """Run the base configuration and each variant (ablations, tau, denoising budget, P-ReAct),
    one after another, each on a dedicated worker; write one table: sweep.md/.json/.csv."""
    from dllmflow.commands.episodes import budgets_from
    from dllmflow.evaluation import runner
    from dllmflow.evaluation.sweep import sweep_rows, write_sweep
    from dllmflow.evaluation.variants import DEFAULT_VARIANTS, parse_variants, variant_queue

    chosen = runner.parse_policies(policies)
    todo = parse_variants(variants if variants is not None else ",".join(DEFAULT_VARIANTS))
    latency = _tool_latency(tool_latency)
    todo = [replace(v, tool_latency=latency) for v in todo]  # one workload for every variant
    records = _read_records(questions, limit)
    base_budgets = budgets_from(max_turns, max_tool_calls, None, deadline_s)
    s = settings()
    _load_corpus(s, corpus)
    out.mkdir(parents=True, exist_ok=True)
    sweep_name = name or out.name
    command = _command_line("sweep")
    results = []
    for i, variant in enumerate(todo, 1):
        described = variant.describe()
        err_console.print(
            f"[bold][{i}/{len(todo)}] variant {variant.name}[/] -> {out / variant.slug}",
            highlight=False,
        )
        config = runner.EvalConfig(
            questions=str(questions),
            policies=chosen,
            concurrency=concurrency,
            corpus=str(corpus) if corpus else None,
            limit=limit,
            name=f"{sweep_name}/{variant.slug}",
            budgets=asdict(variant.budgets(base_budgets)),
            tau=described["tau"],
            ablate=variant.ablate,
            diffusion_checkpoint=described["diffusion_checkpoint"],
            action_first=described["p_react"],
            variant=variant.name,
            task_queue=variant_queue(s, variant),
            tool_latency=latency,
        )
        # Every variant, base included, on its own fresh worker and replicas: same conditions.
        metrics = run_eval_dir(
            s,
            records,
            config,
            out / variant.slug,
            variant=variant,
            dedicated=True,
            command=command,
            label=variant.name,
        )
        _print_policies(metrics, prefix=f"{variant.name:<22} ")
        results.append((described, metrics))
        rows = sweep_rows(results)  # rewritten after each variant: a partial table is useful
        write_sweep(
            out,
            rows,
            {
                "name": sweep_name,
                "questions": str(questions),
                "policies": chosen,
                "variants": [v.name for v in todo],
                "limit": limit,
                "concurrency": concurrency,
                "budgets": asdict(base_budgets),
                "tool_latency": latency,
            },
            command,
        )
    console.print(f"sweep table: {out / 'sweep.md'}", highlight=False)
