"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from dllmflow.config import Settings, SettingsError, load_settings

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def _unreachable(exc: BaseException) -> str | None:
    """One line for a server that cannot be reached (Postgres, Redis), else None."""
    import redis
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"cannot reach Postgres: {detail.removeprefix('connection failed: ')}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"cannot reach Redis: {str(exc).strip().splitlines()[0]}"
    if isinstance(exc, ConnectionError):
        return f"cannot reach a server: {exc}"
    return None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can act on into one clear line instead of a traceback."""
    from dllmflow.stack.components import StackError
    from dllmflow.store.episodes import EpisodeNotFound

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SettingsError, StackError, FileNotFoundError, ValueError, EpisodeNotFound) as exc:
            fail(str(exc).strip('"'))
        except Exception as exc:
            line = _unreachable(exc)
            if line is None:
                raise
            fail(f"{line.rstrip('.')}; is the stack up? (dllmflow up)")

    return wrapper


def settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))
        raise


def run_async(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


async def service(s: Settings):
    from dllmflow.workflows.service import EpisodeService

    try:
        return await EpisodeService.connect(s)
    except RuntimeError as exc:
        raise ConnectionError(
            f"Temporal at {s.effective_temporal_address}: {str(exc).splitlines()[0]}"
        ) from None


@contextmanager
def audited_cli(
    s: Settings, action: str, target: str | None = None, payload: dict[str, Any] | None = None
) -> Iterator[Any]:
    """Record a CLI write in the audit log the API writes to (refused if it cannot be)."""
    from dllmflow.api.audit import audited_cli as audited

    with audited(s, action, target, payload) as entry:
        yield entry
