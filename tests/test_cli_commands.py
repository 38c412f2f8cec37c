"""The operator commands that drive the whole stack: `dllmflow demo`, `dllmflow serve` and
`dllmflow bench load`, run against the session's embedded stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from dllmflow.api.auth import ensure_api_token, token_path
from dllmflow.cli import app
from dllmflow.config import Settings, load_settings
from dllmflow.stack.process import wait_until
from dllmflow.store.corpus import DEFAULT_CORPUS, corpus_stats, corpus_version
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.workers.episode_worker import spawn_worker
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def documents(settings: Settings, corpus: str) -> int:
    return sum(row.documents for row in corpus_stats(settings, corpus))


def test_demo_loads_the_demo_corpus_and_answers_one_question(stack: Settings) -> None:
    """`demo --policy oracle` on a running stack: `up` is a no-op, the demo world goes into the
    corpus the worker searches (DLLMFLOW_CORPUS; here one of the test's own, so the session's
    default corpus is untouched) and the episode is answered correctly."""
    corpus, queue = f"demo-cli-{uuid.uuid4().hex[:6]}", f"demo-cli-{uuid.uuid4().hex[:6]}"
    default_docs = documents(stack, DEFAULT_CORPUS)
    worker = spawn_worker(load_settings(task_queue=queue), {"DLLMFLOW_CORPUS": corpus})
    try:
        result = CliRunner().invoke(
            app,
            ["demo", "--policy", "oracle"],
            env={"DLLMFLOW_TASK_QUEUE": queue, "DLLMFLOW_CORPUS": corpus},
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for name in ("postgres", "redis", "temporal", "ray", "worker"):
        assert f"{name}: already running" in out, out
    assert ": starting" not in out
    assert f"documents in corpus '{corpus}'" in out
    assert "policy 'oracle'" in out and "question:" in out and "(correct)" in out
    episode_id = out.split("dllmflow episodes history ")[1].split()[0]
    episode = EpisodeRepository(stack).get(episode_id)
    assert episode.status == "completed" and episode.policy == "oracle"
    assert f"answer: {episode.answer}" in out
    assert corpus_version(stack, corpus) >= 1 and documents(stack, corpus) > 100
    assert documents(stack, DEFAULT_CORPUS) == default_docs


def test_serve_answers_on_the_port_it_was_given_until_interrupted(stack: Settings) -> None:
    (port,) = free_ports(1)
    token = ensure_api_token(stack)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dllmflow.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/episodes", timeout=2).status_code == 401
        except httpx.TransportError:
            return False

    try:
        assert wait_until(answers, 90, 0.2), "serve never answered on --port"
        auth = {"Authorization": f"Bearer {token}"}
        listed = httpx.get(f"{url}/api/episodes", headers=auth, timeout=10)
        assert listed.status_code == 200, listed.text
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # uvicorn shuts down gracefully, then exits as interrupted (128 + SIGINT), like Ctrl-C.
    assert "Application shutdown complete." in output, output
    assert proc.returncode == 128 + signal.SIGINT, output
    banner = output.splitlines()[0]
    assert banner.startswith(f"dllmflow API on {url}"), output
    assert f"token: {token_path(stack)}" in output
    assert token not in output  # the banner says where the token is, never the token


def test_bench_load_runs_every_episode_and_writes_its_report(stack: Settings, tmp_path) -> None:
    out = tmp_path / "load.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "load",
            "--episodes",
            "3",
            "--concurrency",
            "2",
            "--tool-latency",
            "search=fixed:0.01,fetch=fixed:0.01",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["episodes"] == 3 and report["concurrency"] == 2
    assert report["by_status"] == {"completed": 3}
    assert report["lost"] == 0 and report["dead_lettered"] == 0
    assert set(report["latency_s"]) == {"50", "95", "99"}
    assert report["memory_high_water_mb"] > 0
    assert report["tool_latency"] == "search=fixed:0.01,fetch=fixed:0.01"
