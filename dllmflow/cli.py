"""The `dllmflow` command."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from dllmflow.commands import demo, dlq, episodes
from dllmflow.commands.corpus import app as corpus_app
from dllmflow.config import Settings, SettingsError, load_settings
from dllmflow.stack.components import StackError
from dllmflow.stack.health import Health

app = typer.Typer(
    help="Durable research agents on diffusion and autoregressive LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can act on into one clear line instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SettingsError, StackError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))

    return wrapper


def settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers happy


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
) -> None:
    """Start the embedded servers (idempotent) and migrate the database."""
    from dllmflow.stack import manager

    s = settings()
    rows = manager.up(s, progress=lambda m: err_console.print(f"[dim]{m}[/]", highlight=False))
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
def status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Health-check every component with a real query or ping."""
    from dllmflow.stack import manager

    rows = manager.status(settings())
    print_health(rows, as_json)
    if not all(h.healthy for h in rows):
        raise typer.Exit(1)


app.command("demo")(user_errors(demo.demo_command))
app.command("run")(user_errors(episodes.run_command))
app.command("submit")(user_errors(episodes.submit_command))
app.add_typer(episodes.app, name="episodes")
app.add_typer(dlq.app, name="dlq")


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
