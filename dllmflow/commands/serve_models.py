"""`dllmflow models status | warm | stop`: the Ray model replicas behind the episode worker;
`dllmflow models import`: a pretrained base model (commands/models_import.py);
`dllmflow models export`: the AR half merged into it (commands/models_export.py)."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from dllmflow.commands.common import console, print_json, settings, user_errors
from dllmflow.commands.models_export import export_command
from dllmflow.commands.models_import import import_command

app = typer.Typer(
    help="Model replicas on Ray: status, warm-up, stop; import a base model, export the AR half.",
    no_args_is_help=True,
)
app.command("import")(user_errors(import_command))
app.command("export")(user_errors(export_command))


@app.command("status")
@user_errors
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every configured replica: backend, alive, checkpoint, device, load."""
    from dllmflow.workers.serving import serving_status

    rows = serving_status(settings())
    if as_json:
        print_json(rows)
        return
    pair = rows[0]["pair"] if rows else "?"
    table = Table(title=f"model replicas (pair: {pair}; DLLMFLOW_PAIR=tiny|smollm2-135m)")
    for col in ("backend", "replica", "state", "device", "running", "waiting", "served", "ckpt"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["backend"],
            r["replica"],
            r.get("state", ""),
            str(r.get("device", "-")),
            str(r.get("running", "-")),
            str(r.get("waiting", "-")),
            str(r.get("served", "-")),
            str(r["checkpoint"]),
        )
    console.print(table)


@app.command("warm")
@user_errors
def warm(
    detached: bool = typer.Option(
        False, help="Keep the replicas after this command exits (until `models stop`)."
    ),
) -> None:
    """Create every configured replica and wait until its model is loaded."""
    import ray

    from dllmflow.workers.serving.connect import connect
    from dllmflow.workers.serving.pool import ReplicaPool
    from dllmflow.workers.serving.settings import ServingSettings

    connect(settings())
    serving = ServingSettings(**({"replica_detached": True} if detached else {}))
    pool = ReplicaPool(serving)
    start = time.perf_counter()
    for backend in serving.local_backends():  # a slot on an external engine has no replicas
        for handle in pool.handles(backend):
            info = ray.get(handle.describe.remote())
            console.print(f"{info['name']}: {info['model']} on {info['device']}", highlight=False)
    console.print(f"ready in {time.perf_counter() - start:.1f}s", highlight=False)
    if not detached:
        console.print("(replicas stop with this command; pass --detached to keep them)")


@app.command("stop")
@user_errors
def stop() -> None:
    """Stop every configured replica (the next generation starts fresh ones)."""
    from dllmflow.workers.serving.replicas import stop_replicas

    names = stop_replicas(settings())
    console.print(f"stopped {', '.join(names) if names else 'nothing (no replica running)'}")
