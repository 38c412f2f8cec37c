"""The CLI's one-line errors: servers that cannot be reached, unknown ids, empty input.

The servers are pointed at a closed port (nothing is started): each command must exit
non-zero with one `error:` line that names what is wrong, never a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


@pytest.fixture()
def down_env(tmp_path) -> dict[str, str]:
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLLMFLOW_")}
    env.update(
        DLLMFLOW_STATE_DIR=str(tmp_path / "state"),
        DLLMFLOW_DATABASE_URL=f"postgresql://dllmflow:x@127.0.0.1:{port}/dllmflow",
        DLLMFLOW_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        DLLMFLOW_TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        COLUMNS="200",
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dllmflow.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "server"),
    [
        (("episodes", "list"), "Postgres"),
        (("episodes", "show", "abc"), "Postgres"),
        (("dlq", "list"), "Redis"),
        (("dlq", "retry", "1-0"), "Redis"),
    ],
)
def test_a_server_that_is_down_is_one_line(down_env, args, server) -> None:
    run = _cli(down_env, *args)
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith(f"error: cannot reach {server}"), run.stderr
    assert "is the stack up? (dllmflow up)" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


@pytest.mark.parametrize("entry", ["nope", "abc", "1-2-3"])
def test_a_malformed_dead_letter_id_is_named_without_asking_redis(down_env, entry) -> None:
    """Not a stream id: refused before Redis is asked (it would answer a protocol error)."""
    run = _cli(down_env, "dlq", "show", entry)
    assert run.returncode != 0
    assert f"no dead letter with entry id {entry!r}" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_an_empty_corpus_file_is_refused(down_env, tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    run = _cli(down_env, "corpus", "load", str(empty))
    assert run.returncode != 0
    assert "is empty: nothing to load" in run.stderr, run.stderr


@pytest.mark.parametrize("command", [["episodes", "list"], ["run"]])
def test_help_shows_no_type_for_a_flag(down_env, command) -> None:
    """A flag takes no value: its type column is empty (typer alone prints `<bool>`), while an
    option that takes one still names its type."""
    out = _cli(down_env, *command, "--help")
    assert out.returncode == 0, out.stderr
    assert "<bool>" not in out.stdout
    flag = next(line for line in out.stdout.splitlines() if "--json" in line)
    assert "<" not in flag  # no type between the flag and its help
    assert "<int range>" in out.stdout


def test_usage_names_arguments_as_click_does(down_env) -> None:
    """typer alone writes a required argument as `{QUESTION}`."""
    out = _cli(down_env, "run", "--help")
    assert out.returncode == 0, out.stderr
    usage = next(line for line in out.stdout.splitlines() if "Usage:" in line)
    assert usage.split()[-1] == "QUESTION", usage
