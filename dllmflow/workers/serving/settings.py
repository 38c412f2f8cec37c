"""Serving configuration (DLLMFLOW_* variables), kept beside the serving code it configures."""

from __future__ import annotations

import os

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKENDS: tuple[str, ...] = ("ar", "diffusion")
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
    action_first: bool = False

    # Routing policies.
    ab_diffusion_share: float = Field(default=0.5, ge=0, le=1)  # `ab`: episodes on diffusion
    shadow_share: float = Field(default=1.0, ge=0, le=1)  # `shadow`: episodes also run on the other
    call_timeout_s: float = Field(default=600.0, gt=0)  # one generation, queue included

    @model_validator(mode="after")
    def _pair_defaults(self) -> ServingSettings:
        if self.pair not in PAIRS:
            raise ValueError(f"pair {self.pair!r} is not one of: {', '.join(PAIRS)}")
        ar, diffusion = PAIRS[self.pair]
        self.ar_checkpoint = self.ar_checkpoint or ar
        self.diffusion_checkpoint = self.diffusion_checkpoint or diffusion
        return self

    def checkpoint(self, backend: str) -> str:
        return self.ar_checkpoint if backend == "ar" else self.diffusion_checkpoint

    def replicas(self, backend: str) -> int:
        return self.ar_replicas if backend == "ar" else self.diffusion_replicas
