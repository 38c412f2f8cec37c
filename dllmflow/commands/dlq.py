"""`dllmflow dlq list | show | retry | purge`: the dead-letter queue in Redis."""

from __future__ import annotations

import time
from dataclasses import asdict

import typer
from rich.table import Table

from dllmflow.commands.common import (
    audited_cli,
    console,
    print_json,
    run_async,
    service,
    settings,
    user_errors,
)

app = typer.Typer(
    help="Dead-lettered episode steps: list, inspect, retry, purge.", no_args_is_help=True
)


@app.command("list")
@user_errors
def list_letters(as_json: bool = typer.Option(False, "--json")) -> None:
    """Entries in the dead-letter queue, oldest first."""
    from dllmflow.store.streams import DeadLetterQueue

    letters = DeadLetterQueue(settings()).list()
    if as_json:
        print_json([asdict(x) for x in letters])
        return
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("entry", "episode", "step", "kind", "attempts", "age", "error"):
        table.add_column(col, overflow="fold")
    for x in letters:
        table.add_row(
            x.id,
            x.episode_id,
            str(x.step),
            x.kind,
            str(x.attempts),
            f"{time.time() - x.at:.0f}s",
            x.error[:80],
        )
    console.print(table)


@app.command("show")
@user_errors
def show(entry_id: str) -> None:
    """One entry in full."""
    from dllmflow.store.streams import DeadLetterQueue

    letter = DeadLetterQueue(settings()).get(entry_id)
    if letter is None:
        raise ValueError(f"no dead letter with entry id {entry_id!r} (see: dllmflow dlq list)")
    print_json(asdict(letter))


@app.command("retry")
@user_errors
def retry(
    entry_id: str,
    max_denoise_steps: int | None = typer.Option(None, min=1, help="A larger denoising budget."),
    max_turns: int | None = typer.Option(None, min=2),
    wait: bool = typer.Option(True, help="Wait for the episode to finish."),
) -> None:
    """Re-run the entry's episode from its last good checkpoint (optionally larger budgets)."""
    from dllmflow.store.streams import DeadLetterQueue

    s = settings()
    letter = DeadLetterQueue(s).get(entry_id)
    if letter is None:
        raise ValueError(f"no dead letter with entry id {entry_id!r} (see: dllmflow dlq list)")

    async def go():
        svc = await service(s)
        overrides = {"max_denoise_steps": max_denoise_steps, "max_turns": max_turns}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        payload = {
            "episode_id": letter.episode_id,
            "step": letter.step,
            "kind": letter.kind,
            "budgets": overrides,
        }
        with audited_cli(s, "dlq.retry", entry_id, payload):
            await svc.retry(letter.episode_id, **overrides)
        return (await svc.wait(letter.episode_id)).status if wait else "queued"

    status = run_async(go())
    console.print(f"episode {letter.episode_id}: {status}")


@app.command("purge")
@user_errors
def purge(yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete every entry (the episodes and their checkpoints stay)."""
    from dllmflow.store.streams import DeadLetterQueue

    s = settings()
    dlq = DeadLetterQueue(s)
    depth = dlq.depth()
    if not yes and not typer.confirm(f"purge {depth} dead letters?"):
        raise typer.Exit(1)
    with audited_cli(s, "dlq.purge", "dlq", {"depth": depth}) as entry:
        purged = dlq.purge()
        entry.extra = {"purged": purged}
    console.print(f"purged {purged} entries")
