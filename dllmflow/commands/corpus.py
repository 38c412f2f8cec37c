"""`dllmflow corpus load | load-demo | stats | search | delete`.

Exit codes of `corpus load`: 0 every line loaded; 1 some lines were skipped (each is reported
with its line number; the good lines are committed); 2 the load stopped (file missing, database
unreachable, a batch failed and was rolled back; batches before it stay committed, and running
the same load again is safe).

Heavy imports (SQLAlchemy, the store) happen inside the commands so `dllmflow --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Load, inspect and search the research corpus (Postgres full-text search).",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

EXIT_SKIPPED = 1
EXIT_FAILED = 2

CorpusOption = typer.Option(
    None, "--corpus", "-c", help="Corpus name (default: DLLMFLOW_CORPUS, else 'default')."
)
JsonOption = typer.Option(False, "--json", help="Print JSON on stdout.")


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _database_hint(exc: Exception) -> str:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    if isinstance(exc, OperationalError):
        return f"cannot reach Postgres ({first}); start it with `dllmflow up`"
    if isinstance(exc, ProgrammingError) and "does not exist" in first:
        return f"the corpus tables are missing ({first}); run `dllmflow up` to migrate"
    return f"database error: {first}"


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors a user can act on become one red line and exit code 2, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import DBAPIError

        from dllmflow.config import SettingsError
        from dllmflow.store.corpus import LoadError

        try:
            return fn(*args, **kwargs)
        except (SettingsError, LoadError, FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        except DBAPIError as exc:
            _fail(_database_hint(exc))

    return wrapper


def _settings() -> tuple[Any, Any]:
    from dllmflow.config import load_settings
    from dllmflow.workers.tools.settings import load_tool_settings

    return load_settings(), load_tool_settings()


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    colour = "yellow" if report.skipped else "green"
    console.print(
        f"[{colour}]corpus {report.corpus!r}: loaded {report.loaded:,} of {report.lines:,} lines "
        f"({report.changed:,} new or changed), skipped {len(report.skipped):,}; "
        f"version {report.corpus_version}[/]",
        highlight=False,
    )


@app.command()
@cli_errors
def load(
    file: Path = typer.Argument(..., help='JSONL file, one {"id","title","url","text"} a line.'),
    corpus: str | None = CorpusOption,
    batch_size: int = typer.Option(500, min=1, help="Documents per transaction."),
    max_text_chars: int | None = typer.Option(
        None, min=1, help="Longest text accepted (default: DLLMFLOW_CORPUS_MAX_TEXT_CHARS)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Load a corpus file: upsert by id, one transaction per batch, bad lines reported.

    Exit code 0: every line loaded; 1: some lines skipped (listed on stderr, the rest
    committed); 2: the load stopped (the failing batch is rolled back).
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from dllmflow.store.corpus import BadLine, LoadReport, load_jsonl

    settings, tools = _settings()
    if not file.is_file():
        raise FileNotFoundError(f"corpus file not found: {file}")
    size = file.stat().st_size
    if size < 1 << 16 and not file.read_bytes().strip():
        raise ValueError(f"corpus file {file} is empty: nothing to load")

    def bad_line(bad: BadLine) -> None:
        progress.console.print(
            f"[red]skipped[/] {file}:{bad.line}: {bad.reason}", highlight=False, soft_wrap=True
        )

    def advance(report: LoadReport, position: int) -> None:
        progress.update(task, completed=position, docs=report.loaded)

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        "{task.fields[docs]:,} docs",
        TimeRemainingColumn(),
        console=err_console,
        transient=as_json,
    )
    with progress:
        task = progress.add_task(f"loading {file.name}", total=size, docs=0)
        report = load_jsonl(
            settings,
            file,
            corpus=corpus or tools.corpus,
            batch_size=batch_size,
            max_text_chars=max_text_chars or tools.corpus_max_text_chars,
            on_bad_line=bad_line,
            on_progress=advance,
        )
    _print_report(report, as_json)
    if report.skipped:
        raise typer.Exit(EXIT_SKIPPED)


@app.command("load-demo")
@cli_errors
def load_demo(
    corpus: str = typer.Option("demo", "--corpus", "-c", help="Corpus name."),
    as_json: bool = JsonOption,
) -> None:
    """Load the shipped demo world's corpus (idempotent)."""
    from dllmflow.store.corpus import load_demo_corpus

    settings, _tools = _settings()
    _print_report(load_demo_corpus(settings, corpus), as_json)


@app.command()
@cli_errors
def stats(corpus: str | None = CorpusOption, as_json: bool = JsonOption) -> None:
    """Documents, characters and version per corpus, and the full-text index's size."""
    from dllmflow.store.corpus import corpus_stats, storage_sizes

    settings, _tools = _settings()
    rows = corpus_stats(settings, corpus)
    sizes = storage_sizes(settings)
    if as_json:
        payload = {"corpora": [r.to_dict() for r in rows], **sizes}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if corpus and not rows:
        _fail(f"no corpus named {corpus!r}; load one with `dllmflow corpus load FILE`", 1)
    table = Table(title="corpora")
    for column in ("corpus", "documents", "characters", "version"):
        table.add_column(column, justify="left" if column == "corpus" else "right")
    for r in rows:
        table.add_row(r.corpus, f"{r.documents:,}", f"{r.total_chars:,}", str(r.version))
    console.print(table)
    console.print(
        f"documents table {sizes['table_bytes'] / 2**20:,.1f} MiB, "
        f"full-text index {sizes['fts_index_bytes'] / 2**20:,.1f} MiB (all corpora)"
    )


@app.command()
@cli_errors
def search(
    query: str = typer.Argument(..., help='Words, "a phrase", -excluded (web search syntax).'),
    k: int = typer.Option(5, "-k", min=1, max=50, help="How many results."),
    corpus: str | None = CorpusOption,
    as_json: bool = JsonOption,
) -> None:
    """Search the corpus exactly as the agent's `search` tool does."""
    from dllmflow.workers.tools.search import search as run_search

    settings, tools = _settings()
    name = corpus or tools.corpus
    result = run_search(settings, query, k, corpus=name)
    if as_json:
        payload = {"corpus": name, "corpus_version": result.corpus_version, "results": result.value}
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        return
    if not result.value:
        console.print(f"no results in corpus {name!r} (version {result.corpus_version})")
        return
    table = Table(title=f"{query!r} in {name!r} (version {result.corpus_version})")
    for column in ("#", "id", "title", "snippet"):
        table.add_column(column)
    for i, hit in enumerate(result.value, 1):
        table.add_row(str(i), hit["id"], hit["title"], hit["snippet"])
    console.print(table)


@app.command()
@cli_errors
def delete(
    corpus: str = typer.Argument(..., help="Corpus to empty."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete every document of a corpus (its version is bumped, never reset)."""
    from dllmflow.store.corpus import delete_corpus

    if not yes:
        typer.confirm(f"delete every document of corpus {corpus!r}?", abort=True)
    settings, _tools = _settings()
    console.print(f"deleted {delete_corpus(settings, corpus):,} documents from {corpus!r}")
