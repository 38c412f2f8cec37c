"""The `dllmflow` command."""

from __future__ import annotations

import asyncio
import json
import sys

import typer
from rich.table import Table

from dllmflow.commands import bench, demo, dlq, episodes, serve_models
from dllmflow.commands.common import console, err_console, settings, user_errors
from dllmflow.commands.corpus import app as corpus_app
from dllmflow.commands.eval import eval_command, sweep_command
from dllmflow.stack.health import Health


def _plain_help_notation() -> None:
    """typer 0.29 prints `<bool>` in the type column of every flag and `{QUESTION}` for a
    required argument in the usage line. A flag takes no value, so its type column stays empty;
    arguments read as click writes them, `QUESTION` required and `[QUESTION]` optional. A typer
    without these hooks is left as is."""
    option = getattr(typer.core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is not None and shown is not None and not getattr(shown, "_dllmflow", False):

        def display_type_rich(self, ctx):
            return None if self.is_flag and not self.count else shown(self, ctx)

        display_type_rich._dllmflow = True  # type: ignore[attr-defined]
        option.display_type_rich = display_type_rich

    argument = getattr(typer.core, "TyperArgument", None)
    usage = getattr(argument, "_usage_display_name", None)
    if argument is not None and usage is not None and not getattr(usage, "_dllmflow", False):

        def usage_display_name(self) -> str:
            name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
            return name + ("..." if self.nargs != 1 else "")

        usage_display_name._dllmflow = True  # type: ignore[attr-defined]
        argument._usage_display_name = usage_display_name


_plain_help_notation()

app = typer.Typer(
    help="Durable research agents on diffusion and autoregressive LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def print_health(rows: list[Health], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({h.name: h.to_dict() for h in rows}, indent=2) + "\n")
        return
    table = Table(title="dllmflow stack")
    for column in ("component", "healthy", "version", "address", "mode", "detail"):
        table.add_column(column)
    for h in rows:
        table.add_row(
            h.name,
            "[green]yes[/]" if h.healthy else "[red]no[/]",
            h.version or "-",
            h.address,
            "embedded" if h.embedded else "external",
            h.detail,
        )
    console.print(table)


@app.command()
@user_errors
def up(
    as_json: bool = typer.Option(False, "--json", help="Print component health as JSON."),
    supervise: bool = typer.Option(
        True, help="Leave a supervisor that restarts a component that dies, with backoff."
    ),
) -> None:
    """Start the embedded servers (idempotent) and migrate the database."""
    from dllmflow.stack import manager

    s = settings()
    rows = manager.up(
        s,
        progress=lambda m: err_console.print(f"[dim]{m}[/]", highlight=False),
        supervise=supervise,
    )
    print_health(rows, as_json)
    if not all(h.healthy for h in rows):
        raise typer.Exit(1)


@app.command()
@user_errors
def down() -> None:
    """Stop what `dllmflow up` started. Data stays in the state dir."""
    from dllmflow.stack import manager

    stopped = manager.down(settings(), progress=lambda m: err_console.print(f"[dim]{m}[/]"))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
@user_errors
def status(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    models: bool = typer.Option(True, help="Also list the model replicas on Ray."),
) -> None:
    """Health-check every component with a real query or ping, and list model replicas."""
    from dllmflow.stack import manager

    s = settings()
    rows = manager.status(s)
    replicas = None
    if models and any(h.name == "ray" and h.healthy for h in rows):
        from dllmflow.workers.serving import serving_status

        replicas = serving_status(s)
    if as_json:
        payload: dict[str, object] = {h.name: h.to_dict() for h in rows}
        if replicas is not None:
            payload["models"] = replicas
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        print_health(rows, as_json=False)
        if replicas is not None:
            print_replicas(replicas)
    if not all(h.healthy for h in rows):
        raise typer.Exit(1)


def print_replicas(replicas: list[dict[str, object]]) -> None:
    table = Table(title="model replicas (Ray)")
    columns = ("backend", "name", "alive", "checkpoint", "device")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in replicas:
        table.add_row(*(str(row.get(c, "-")) for c in columns))
    console.print(table)


app.command("demo")(user_errors(demo.demo_command))
app.command("run")(user_errors(episodes.run_command))
app.command("submit")(user_errors(episodes.submit_command))
app.add_typer(episodes.app, name="episodes")
app.add_typer(dlq.app, name="dlq")


# `dllmflow eval --questions ...` runs one eval; `dllmflow eval sweep ...` runs variants.
eval_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
eval_app.callback(invoke_without_command=True)(eval_command)
eval_app.command("sweep")(sweep_command)
app.add_typer(eval_app, name="eval")
app.add_typer(bench.app, name="bench")
app.add_typer(serve_models.app, name="models")


@app.command()
@user_errors
def serve(
    host: str | None = typer.Option(None, help="Bind address (default DLLMFLOW_API_HOST)."),
    port: int | None = typer.Option(None, help="Port (default DLLMFLOW_API_PORT)."),
) -> None:
    """Run the HTTP API and dashboard (foreground)."""
    from dllmflow.commands.serve import serve as run_server

    run_server(settings(), host, port)


@app.command()
@user_errors
def train(
    backend: str = typer.Option(..., help="ar | diffusion"),
    out: str = typer.Option(..., help="Checkpoint directory to write (resumable)."),
    steps: int = typer.Option(4000, min=1),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(2e-3, min=0),
    max_seconds: float | None = typer.Option(None, min=1),
    ablate_context_clean: bool = typer.Option(False, help="Mask context too (ablation)."),
    ablate_span_mask: bool = typer.Option(False, help="Plain block-causal mask (ablation)."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda if available)."),
) -> None:
    """Agent-oriented fine-tuning of one model of the matched pair."""
    if backend not in ("ar", "diffusion"):
        raise ValueError(f"--backend must be 'ar' or 'diffusion' (got {backend!r})")
    from dllmflow.training.tiny_pair import train as run_training

    summary = run_training(
        backend,
        out,
        steps,
        batch_size=batch_size,
        lr=lr,
        max_seconds=max_seconds,
        ablate_context_clean=ablate_context_clean,
        ablate_span_mask=ablate_span_mask,
        device=device,
    )
    console.print_json(data=summary)


@app.command()
@user_errors
def world(
    out: str = typer.Option(..., help="Directory for corpus.jsonl and questions.jsonl."),
    split: str = typer.Option("eval", help="eval | train | demo (which seed range)."),
    index: int = typer.Option(0, min=0, help="Which world of the split."),
    seed: int | None = typer.Option(None, help="An explicit seed instead of split/index."),
    questions: int = typer.Option(50, min=1, help="Questions to generate."),
) -> None:
    """Generate a synthetic research world (corpus + multi-hop questions) as JSONL."""
    if split not in ("eval", "train", "demo"):
        raise ValueError(f"--split must be eval, train or demo (got {split!r})")
    from dllmflow.world.generator import export_world

    corpus, question_file = export_world(
        out, split=split, index=index, seed=seed, n_questions=questions
    )
    console.print(f"corpus:    {corpus}\nquestions: {question_file}", highlight=False)


@app.command()
@user_errors
def worker() -> None:
    """Run a Temporal worker for episodes (foreground)."""
    from dllmflow.workers.episode_worker import run_worker

    asyncio.run(run_worker(settings()))


app.add_typer(corpus_app, name="corpus")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
