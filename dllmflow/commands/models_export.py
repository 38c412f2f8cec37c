"""`dllmflow models export PAIR_HALF --out DIR [--dtype bf16|fp32] [--base DIR] [--force]`: the
real pair's AR half merged into its base, as a directory vLLM / SGLang / transformers load."""

from __future__ import annotations

from pathlib import Path

import typer

from dllmflow.commands.common import console, err_console, settings


def export_command(
    pair: str = typer.Argument(
        ..., help="The AR half: a shipped name (smollm2-135m/ar) or a pair directory."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write (a LlamaForCausalLM)."),
    dtype: str = typer.Option("bf16", "--dtype", help="Weights' dtype: bf16 or fp32."),
    base: Path | None = typer.Option(
        None, "--base", help="Base model directory (default: the imported base it names)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out directory."),
) -> None:
    """Merge a LoRA adapter into its base: a plain Hugging Face Llama directory."""
    from dllmflow.models.base_import import Steps
    from dllmflow.models.export import export_ar

    s = settings() if base is None else None
    result = export_ar(
        pair, out, base=base, dtype=dtype, force=force, settings=s, steps=Steps(err_console)
    )
    m = result.manifest
    size = sum(m["files"].values()) / 2**20
    err_console.print(
        f"[green]exported[/] {pair}: {m['adapter']['modules_merged']} LoRA modules merged into "
        f"{m['base']['name']}, {m['dtype']}, {size:.0f} MiB in {result.seconds:.0f}s",
        highlight=False,
    )
    err_console.print(f"serve it: vllm serve {result.out_dir}", highlight=False, soft_wrap=True)
    console.print(str(result.out_dir), highlight=False, soft_wrap=True)
