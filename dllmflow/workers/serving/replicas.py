"""Model replicas as named Ray actors, one group per backend (``ar``, ``diffusion``).

A replica loads one checkpoint (GPU when Ray assigned one, else CPU) and feeds every request
it receives into a ``BatchScheduler``. ``generate`` is a streaming actor method: it yields
lists of progress-event dicts as passes complete, then one final dict with the result (or the
error). Ray restarts a dead replica (``max_restarts``); its in-flight calls fail on the caller
side, which maps that to ``ReplicaUnavailable`` (retryable).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import ray

from .settings import BACKENDS, NAMESPACE, ServingSettings

# Progress items the caller may not have consumed yet; bounds how far a replica runs ahead of
# a slow consumer (it never slows decoding: the scheduler thread does not wait on the stream).
STREAM_BACKPRESSURE = 64


@dataclass(frozen=True)
class ReplicaSpec:
    backend: str
    index: int
    checkpoint: str
    max_batch: int = 32
    torch_threads: int = 1
    dtype: str = "auto"  # ServingSettings.dtype
    cuda_graphs: bool = False  # ServingSettings.cuda_graphs

    @property
    def name(self) -> str:
        return replica_name(self.backend, self.index)


def checkpoint_label(path: str) -> str:
    """A shipped checkpoint by its shipped name ("ar", "smollm2-135m/ar"), else its folder."""
    from dllmflow.models.loader import CHECKPOINT_DIR

    resolved = os.path.realpath(path)
    shipped = os.path.realpath(CHECKPOINT_DIR)
    if resolved.startswith(shipped + os.sep):
        return os.path.relpath(resolved, shipped)
    return os.path.basename(resolved.rstrip("/"))


def replica_name(backend: str, index: int) -> str:
    return f"dllmflow-{backend}-{index}"


class ModelReplica:
    """The actor body (wrapped with ``ray.remote`` in ``replica_actor``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        from dllmflow.models.loader import dtype_from_name, load_backend, resolve_checkpoint

        from .scheduler import BatchScheduler

        self.spec = ReplicaSpec(**spec)
        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
        self.device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(self.spec.torch_threads)
        self.path = str(resolve_checkpoint(self.spec.checkpoint))
        self.backend = load_backend(
            self.path,
            device=self.device,
            dtype=dtype_from_name(self.spec.dtype),
            slot=self.spec.backend,
        )
        self.backend.sampler.cuda_graphs = self.spec.cuda_graphs
        self.scheduler = BatchScheduler(
            self.backend.sampler, max_batch=self.spec.max_batch, name=self.spec.name
        )
        self.started_at = time.time()
        ctx = ray.get_runtime_context() if ray.is_initialized() else None
        # Only an actor has a restart count: built in a driver (tests, in-process use) where
        # Ray is up, asking would raise.
        in_actor = ctx is not None and ctx.get_actor_id() is not None
        self.restarts = ctx.was_current_actor_reconstructed if in_actor else False

    def describe(self) -> dict[str, Any]:
        sampler = self.backend.sampler
        return {
            "name": self.spec.name,
            "backend": self.spec.backend,
            "checkpoint": self.path,
            "model": f"{sampler.kind}:{checkpoint_label(self.path)}",
            "sampler": sampler.kind,
            "device": self.device,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "restarted": bool(self.restarts),
            "max_position": sampler.max_position,
            "prompt_slack": sampler.prompt_slack,
            "context_tokens": getattr(self.backend.model.config, "context_tokens", None),
            "memory_mb": self.memory_mb(),
            **self.scheduler.load(),
        }

    def memory_mb(self) -> float:
        """Device memory the model holds: allocated CUDA memory on a GPU, else the process RSS."""
        import torch

        if self.device == "cuda":
            return round(torch.cuda.memory_allocated() / 2**20, 1)
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)

    def tokenizer(self) -> Any:
        """The tokenizer, so a caller can size prompts without access to the checkpoint dir."""
        return self.backend.tokenizer

    @ray.method(num_returns="streaming", _generator_backpressure_num_objects=STREAM_BACKPRESSURE)
    async def generate(self, request: dict[str, Any]):  # yields event lists, then one dict
        from dllmflow.models.sampling.base import GenerationRequest, ProgressEvent

        from .scheduler import Failed, Served

        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        ticket = self.scheduler.submit(
            GenerationRequest(**request),
            lambda item: loop.call_soon_threadsafe(inbox.put_nowait, item),
        )
        finished = False
        try:
            while True:
                items = [await inbox.get()]
                while not inbox.empty():
                    items.append(inbox.get_nowait())
                events = [asdict(i) for i in items if isinstance(i, ProgressEvent)]
                if events:
                    yield events
                last = items[-1]
                if isinstance(last, Served):
                    finished = True
                    yield {"served": {**asdict(last), "result": last.result.to_dict()}}
                    return
                if isinstance(last, Failed):
                    finished = True
                    yield {"failed": asdict(last)}
                    return
        finally:
            if not finished:  # the caller went away: stop spending passes on it
                ticket.cancel()


def replica_actor(settings: ServingSettings, backend: str, index: int):
    """Handle of replica ``index`` of ``backend``; created (non-detached) if absent."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; backends: {', '.join(BACKENDS)}")
    spec = ReplicaSpec(
        backend=backend,
        index=index,
        checkpoint=settings.checkpoint(backend),
        max_batch=settings.max_batch,
        torch_threads=settings.replica_torch_threads,
        dtype=settings.dtype,
        cuda_graphs=settings.cuda_graphs,
    )
    cls = ray.remote(ModelReplica)
    placement: dict[str, Any] = {}
    if settings.replica_node_id:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            settings.replica_node_id, soft=True
        )
    return cls.options(
        **placement,
        name=spec.name,
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=settings.replica_num_cpus,
        num_gpus=settings.replica_num_gpus,
        max_restarts=settings.replica_max_restarts,
        max_task_retries=0,  # a generation is not replayed on a new replica behind our back
        max_concurrency=1000,
        lifetime="detached" if settings.replica_detached else None,
    ).remote(asdict(spec))


def stop_replicas(settings: Any = None) -> list[str]:
    """Kill every configured replica (no restart); returns the names that were running."""
    from .connect import connect

    if settings is not None:
        connect(settings)
    stopped = []
    for backend in BACKENDS:
        for index in range(ServingSettings().replicas(backend)):
            name = replica_name(backend, index)
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            except ValueError:  # not running
                continue
            stopped.append(name)
    return stopped


def serving_status(settings: Any = None, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """One row per configured replica: backend, name, alive, checkpoint, device, load.

    ``settings`` is the app's Settings (used for the Ray address when Ray is not connected).
    Replicas are not created here; an absent one is listed with ``alive: False``.
    """
    from .connect import connect

    serving = ServingSettings()
    if settings is not None:
        connect(settings)
    rows = []
    for backend in BACKENDS:
        engine = serving.engine(backend)
        if engine.kind != "local":  # an external engine serves the slot: no replicas of ours
            from .openai_engine import engine_label

            rows.append(
                {
                    "backend": backend,
                    "replica": engine_label(engine.base_url) if engine.base_url else "unset",
                    "alive": "external",
                    "kind": engine.kind,
                    "model": engine.model,
                    "state": "served by an external engine (not probed)",
                }
            )
            continue
        for index in range(serving.replicas(backend)):
            name = replica_name(backend, index)
            row: dict[str, Any] = {
                "backend": backend,
                "replica": name,
                "alive": False,
                "pair": serving.pair,
                "checkpoint": serving.checkpoint(backend),
            }
            try:
                handle = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                row["state"] = "absent (created on first use)"
                rows.append(row)
                continue
            try:
                info = ray.get(handle.describe.remote(), timeout=timeout_s)
                row.update(info, alive=True, state="alive")
                row.pop("name", None)
            except Exception as exc:  # restarting, or the node is gone
                row["state"] = f"unreachable: {type(exc).__name__}"
            rows.append(row)
    return rows
