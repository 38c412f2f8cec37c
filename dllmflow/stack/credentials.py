"""Credentials of the embedded servers: random secrets generated once into the state dir.

Each secret is one file (mode 0600) that the server is started with and that every client the
project builds reads (Settings' derived URLs, the Ray connection); it is created on the first
`dllmflow up` and kept across restarts, so the servers' data stays reachable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def ensure_secret(
    path: Path, nbytes: int = 32, if_empty: str = "delete it and run `dllmflow up` again"
) -> str:
    """The secret in `path`, created (0600, random URL-safe text) if absent; an empty file is
    an error whose message ends with ``if_empty`` (what the user should do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # A private temp file linked into place: concurrent first uses agree on one secret
        # and nobody reads a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(nbytes) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # never leave a readable secret behind
    value = read_secret(path)
    if value is None:
        raise ValueError(f"{path} is empty; {if_empty}")
    return value


def read_secret(path: Path) -> str | None:
    """The secret in `path`, or None when there is none (the server was never started)."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (a config file holding a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
