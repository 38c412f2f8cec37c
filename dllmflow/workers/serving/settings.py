"""Serving configuration (DLLMFLOW_* variables), kept beside the serving code it configures."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dllmflow.config import SettingsError

BACKENDS: tuple[str, ...] = ("ar", "diffusion")
# What serves a slot: dllmflow's own Ray replicas, or an external OpenAI-compatible engine
# (vLLM, SGLang, llama.cpp's server, a hosted API) reached over HTTP.
BACKEND_KINDS: tuple[str, ...] = ("local", "openai-compatible")
EngineKind = Literal["local", "openai-compatible"]
EngineEndpoint = Literal["chat", "completions"]
BASE_NAMESPACE = "dllmflow"
# The matched pairs DLLMFLOW_PAIR selects: (AR checkpoint, diffusion checkpoint).
PAIRS: dict[str, tuple[str, str]] = {
    "tiny": ("ar", "diffusion"),
    "smollm2-135m": ("smollm2-135m/ar", "smollm2-135m/diffusion"),
}


def replica_namespace(group: str | None = None) -> str:
    """The Ray namespace this process's replicas live in.

    Replica actors are looked up by name (get_if_exists), so a worker serving another checkpoint
    (an eval variant) must not share names with the default replicas: DLLMFLOW_REPLICA_GROUP
    gives it a namespace of its own. Read once per process; a variant worker is its own process.
    """
    group = (os.environ.get("DLLMFLOW_REPLICA_GROUP", "") if group is None else group).strip()
    return f"{BASE_NAMESPACE}-{group}" if group else BASE_NAMESPACE


NAMESPACE = replica_namespace()  # the Ray namespace every replica of this process lives in


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLLMFLOW_", env_file=".env", extra="ignore")

    # The matched pair that serves by default: "tiny" (from scratch, for tests) or
    # "smollm2-135m" (the real pair; needs `dllmflow models import`). An explicit checkpoint
    # below (a shipped name or a local Hugging Face directory) overrides its half of the pair.
    pair: str = "tiny"
    ar_checkpoint: str = ""
    diffusion_checkpoint: str = ""
    # Rendered-context budget in tokens; 0 = what the checkpoint was trained with (640 for the
    # tiny pair), always capped by the model's positions.
    context_tokens: int = Field(default=0, ge=0)
    ar_replicas: int = Field(default=1, ge=1, le=64)
    diffusion_replicas: int = Field(default=1, ge=1, le=64)

    # Ray resources per replica; CPU-only machines are shared, so replicas ask for little CPU.
    replica_num_cpus: float = Field(default=0.5, ge=0)
    replica_num_gpus: float = Field(default=0.0, ge=0)
    replica_max_restarts: int = Field(default=3, ge=-1)
    replica_torch_threads: int = Field(default=1, ge=1)  # intra-op threads on CPU
    # Weights and activations of a replica: "auto" is float32 on CPU and, for the real pair and
    # the adapted families, bfloat16 on a GPU; "float32" there trades speed for batched decoding
    # that rounds like one sequence at a time (bf16 matmuls of other batch shapes round
    # differently and can flip a near-tie commit).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # On a GPU, replay each decoding pass from a CUDA graph (models/sampling/graphs.py): one
    # launch instead of a few hundred. Off (every pass launched eagerly) until the graphs have
    # been measured against the eager passes on a GPU (bench/peer_loop.py, bench/serving.py).
    cuda_graphs: bool = False
    max_batch: int = Field(default=32, ge=1)  # sequences in one running batch
    # Non-detached replicas stop with the process that created them (the worker); detached
    # ones outlive it (`dllmflow models warm --detached`) until `dllmflow models stop`.
    replica_detached: bool = False
    # A Ray node id (hex) the replicas prefer: soft affinity, so a replica that Ray restarts
    # after that node is gone runs on another node (node-loss runs place them on a second node).
    replica_node_id: str = ""

    # Decoding defaults for a turn.
    max_new_tokens: int = Field(default=160, ge=1)
    tau: float = Field(default=0.9, gt=0, le=1)
    # diffusion: a commit repeating its left neighbour's token from the same pass waits a pass
    hold_repeats: bool = True
    action_first: bool = False

    # Routing policies.
    ab_diffusion_share: float = Field(default=0.5, ge=0, le=1)  # `ab`: episodes on diffusion
    shadow_share: float = Field(default=1.0, ge=0, le=1)  # `shadow`: episodes also run on the other
    call_timeout_s: float = Field(default=600.0, gt=0)  # one generation, queue included

    # What serves each slot (DLLMFLOW_AR_KIND / DLLMFLOW_DIFFUSION_KIND): "local" replicas, or
    # "openai-compatible": an external engine at *_BASE_URL (".../v1") serving *_MODEL. The
    # API key is a secret (never logged or shown); *_ENDPOINT picks /chat/completions (the
    # context is the user message after the agent's system prompt) or /completions (the raw
    # context as the prompt). *_TIMEOUT_S bounds connecting and each read of the stream;
    # *_MAX_RETRIES retries 429/5xx/connection errors with exponential backoff before the turn
    # fails with a retryable error. *_CONTEXT_WINDOW is the engine's context length (prompt +
    # turn), *_EXTRA_BODY a JSON object merged into every request (e.g. a llama.cpp
    # "grammar", vLLM "structured_outputs", SGLang "regex").
    ar_kind: EngineKind = "local"
    ar_base_url: str = ""
    ar_model: str = ""
    ar_api_key: SecretStr | None = None
    ar_endpoint: EngineEndpoint = "chat"
    ar_timeout_s: float = Field(default=60.0, gt=0)
    ar_max_retries: int = Field(default=4, ge=0, le=20)
    ar_context_window: int = Field(default=8192, ge=256)
    ar_extra_body: dict[str, Any] = Field(default_factory=dict)
    diffusion_kind: EngineKind = "local"
    diffusion_base_url: str = ""
    diffusion_model: str = ""
    diffusion_api_key: SecretStr | None = None
    diffusion_endpoint: EngineEndpoint = "chat"
    diffusion_timeout_s: float = Field(default=60.0, gt=0)
    diffusion_max_retries: int = Field(default=4, ge=0, le=20)
    diffusion_context_window: int = Field(default=8192, ge=256)
    diffusion_extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ar_extra_body", "diffusion_extra_body", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value

    @field_validator("pair")
    @classmethod
    def _known_pair(cls, value: str) -> str:
        # A field validator: its error shows only this value, never the other settings (a
        # model validator's error would print every input, API keys included).
        if value not in PAIRS:
            raise ValueError(f"pair {value!r} is not one of: {', '.join(PAIRS)}")
        return value

    @model_validator(mode="after")
    def _pair_defaults(self) -> ServingSettings:
        ar, diffusion = PAIRS[self.pair]
        self.ar_checkpoint = self.ar_checkpoint or ar
        self.diffusion_checkpoint = self.diffusion_checkpoint or diffusion
        return self

    def kind(self, backend: str) -> str:
        return self.ar_kind if backend == "ar" else self.diffusion_kind

    def local_backends(self) -> tuple[str, ...]:
        """The slots served by dllmflow's own replicas."""
        return tuple(b for b in BACKENDS if self.kind(b) == "local")

    def engine(self, backend: str) -> EngineSettings:
        p = "ar" if backend == "ar" else "diffusion"
        return EngineSettings(
            slot=p,
            kind=getattr(self, f"{p}_kind"),
            base_url=getattr(self, f"{p}_base_url").strip().rstrip("/"),
            model=getattr(self, f"{p}_model").strip(),
            api_key=getattr(self, f"{p}_api_key"),
            endpoint=getattr(self, f"{p}_endpoint"),
            timeout_s=getattr(self, f"{p}_timeout_s"),
            max_retries=getattr(self, f"{p}_max_retries"),
            context_window=getattr(self, f"{p}_context_window"),
            extra_body=dict(getattr(self, f"{p}_extra_body")),
        )

    def checkpoint(self, backend: str) -> str:
        return self.ar_checkpoint if backend == "ar" else self.diffusion_checkpoint

    def replicas(self, backend: str) -> int:
        return self.ar_replicas if backend == "ar" else self.diffusion_replicas


class BackendSettingsError(SettingsError):
    """A slot's backend settings cannot work; retrying the turn cannot help."""

    retryable = False


@dataclass(frozen=True)
class EngineSettings:
    """One slot's backend settings; ``variable(name)`` is the DLLMFLOW_* name to blame."""

    slot: str
    kind: str
    base_url: str
    model: str
    api_key: SecretStr | None
    endpoint: str
    timeout_s: float
    max_retries: int
    context_window: int
    extra_body: dict[str, Any]

    def variable(self, name: str) -> str:
        return f"DLLMFLOW_{self.slot.upper()}_{name.upper()}"

    def check(self) -> None:
        """Raise BackendSettingsError naming the DLLMFLOW_* variable that is missing or bad."""
        if self.kind != "openai-compatible":
            return
        kind = f"{self.variable('kind')}=openai-compatible"
        if not self.base_url:
            raise BackendSettingsError(f"{self.variable('base_url')} must be set when {kind}")
        if not self.base_url.startswith(("http://", "https://")):
            raise BackendSettingsError(
                f"{self.variable('base_url')} must be an http:// or https:// URL "
                f"(got {self.base_url!r})"
            )
        if not self.model:
            raise BackendSettingsError(
                f"{self.variable('model')} must be set when {kind} (the engine's model name, "
                "as its /v1/models lists it)"
            )

    def __repr__(self) -> str:  # the key never appears, even in a debug print
        key = "set" if self.api_key is not None else "unset"
        return (
            f"EngineSettings(slot={self.slot!r}, kind={self.kind!r}, base_url={self.base_url!r}, "
            f"model={self.model!r}, api_key={key}, endpoint={self.endpoint!r})"
        )
