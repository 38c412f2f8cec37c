"""Paths as committed reports record them: relative to the working directory (the repository
root when run from it), so a report reads the same on every machine."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any

PATH_KEYS = ("questions", "corpus", "out_dir", "out")


def portable_path(path: str, root: str | None = None) -> str:
    """``path`` relative to ``root`` (default: the working directory) when it lies inside it;
    normalized (no ``..``) either way."""
    root = os.path.abspath(root or os.getcwd())
    full = os.path.normpath(os.path.join(root, path))
    return os.path.relpath(full, root) if full == root or full.startswith(root + os.sep) else full


def portable_command(command: str, root: str | None = None) -> str:
    """A command line with its absolute path arguments made portable (``portable_path``)."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: leave it as it was typed
        return command
    return shlex.join(portable_path(w, root) if os.path.isabs(w) else w for w in words)


def portable_config(config: Mapping[str, Any], root: str | None = None) -> dict[str, Any]:
    """A run config with its path fields made portable."""
    out = dict(config)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = portable_path(out[key], root)
    return out
