"""`dllmflow` sub-commands, one Typer app per module (registered in dllmflow.cli)."""
