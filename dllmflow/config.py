"""All configuration in one place: environment variables with the DLLMFLOW_ prefix (or a .env file).

A URL or address left unset means "use the embedded server that `dllmflow up` starts"; setting it
points the same code at an external server.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dllmflow.stack.credentials import read_secret

Port = Annotated[int, Field(ge=1, le=65535)]


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the DLLMFLOW_* variable at fault."""


# Unset Ray ports are DLLMFLOW_RAY_PORT + these offsets (the client server is the head's only).
RAY_PORT_OFFSETS = {
    "client_server": 1,
    "node_manager": 2,
    "object_manager": 3,
    "runtime_env_agent": 4,
    "metrics_export": 5,
    "dashboard_agent_listen": 6,
    "dashboard_agent_grpc": 7,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLLMFLOW_", env_file=".env", extra="ignore")

    state_dir: Path = Path(".dllmflow")

    # External servers; None = embedded.
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    ray_address: str | None = None
    ray_dashboard_url: str | None = None

    # Ports of the embedded servers (all bound to 127.0.0.1).
    postgres_port: Port = 54329
    redis_port: Port = 63799
    temporal_port: Port = 7233
    temporal_ui_port: Port = 8233
    ray_port: Port = 6389
    ray_dashboard_port: Port = 8265
    # Every other port a Ray node binds, so two stacks can share a host (Ray's own defaults
    # are fixed for the client server, 10001, and the dashboard agent, 52365). Unset, each is
    # DLLMFLOW_RAY_PORT plus its offset in RAY_PORT_OFFSETS (6390-6396 by default), so moving
    # DLLMFLOW_RAY_PORT moves them all; a further node of the embedded cluster on this host
    # (stack.components.RayNode) binds the per-node ones plus its index x ray_node_port_stride.
    ray_client_server_port: Port | None = None
    ray_node_manager_port: Port | None = None
    ray_object_manager_port: Port | None = None
    ray_runtime_env_agent_port: Port | None = None
    ray_metrics_export_port: Port | None = None
    ray_dashboard_agent_listen_port: Port | None = None
    ray_dashboard_agent_grpc_port: Port | None = None
    ray_node_port_stride: int = Field(default=10, ge=8)
    # Ports of Ray's worker processes: unset, each worker binds one the OS picks (free, so it
    # cannot collide); set both to keep them in a range (a firewall).
    ray_min_worker_port: Port | None = None
    ray_max_worker_port: Port | None = None
    ray_num_cpus: int = Field(default=2, ge=1)
    # GPUs the embedded head offers; unset, Ray counts them itself (set it where its probe
    # cannot see a GPU the process can use, e.g. inside some sandboxes).
    ray_num_gpus: int | None = Field(default=None, ge=0)
    ray_object_store_mb: int = Field(default=256, ge=80)

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: Port = 8420
    api_token: SecretStr | None = None
    # Largest request body the API reads; larger ones get 413 before auth or parsing.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    # An episode's live-progress stream in Redis expires this long after the episode finishes
    # (a retry or replay that writes to it again lifts the expiry); 0 keeps streams forever.
    progress_ttl_s: int = Field(default=24 * 3600, ge=0)

    # Let the model loader run the Python code a checkpoint ships (its config's ``auto_map``
    # modules). Off by default; only the families served through their own modeling code need
    # it (LLaDA, Dream: dllmflow/models/families.py). Llama, Qwen2, SDAR and Fast-dLLM v2
    # checkpoints load into dllmflow's own networks and never need it.
    trust_remote_code: bool = False

    task_queue: str = "dllmflow-episodes"
    # How long an episode's activities are retried through an outage (Postgres, Redis or a
    # replica restarting) before the episode is dead-lettered; fixed per episode at its start.
    activity_retry_budget_s: float = Field(default=15 * 60.0, gt=0)
    # A corpus query (search, fetch) running longer than this is cancelled by Postgres and
    # fails its tool call (retried as above) instead of holding the activity.
    corpus_statement_timeout_ms: int = Field(default=10_000, ge=1)
    # How long submit, retry and waiting for a result ride out an unreachable Temporal (a
    # restart) before an episode is reported not started (its row marked so) or unknown.
    temporal_outage_s: float = Field(default=300.0, ge=0)
    startup_timeout_s: float = Field(default=90.0, gt=0)

    @model_validator(mode="after")
    def _ray_worker_ports(self) -> Settings:
        low, high = self.ray_min_worker_port, self.ray_max_worker_port
        if (low is None) != (high is None):
            raise ValueError(
                "set both DLLMFLOW_RAY_MIN_WORKER_PORT and DLLMFLOW_RAY_MAX_WORKER_PORT, or neither"
            )
        if low is not None and high is not None and low > high:
            raise ValueError(
                "DLLMFLOW_RAY_MIN_WORKER_PORT must not exceed DLLMFLOW_RAY_MAX_WORKER_PORT "
                f"({low} > {high})"
            )
        return self

    def ray_node_port(self, name: str, node: int = 0) -> int:
        """Port `name` (a RAY_PORT_OFFSETS key) of node `node` of the embedded Ray cluster
        (0: the head): its setting or DLLMFLOW_RAY_PORT + offset, plus node x stride."""
        explicit = getattr(self, f"ray_{name}_port")
        port = (
            explicit or self.ray_port + RAY_PORT_OFFSETS[name]
        ) + node * self.ray_node_port_stride
        if port > 65535:
            raise SettingsError(
                f"Ray node {node}'s {name} port would be {port} (> 65535); lower "
                f"DLLMFLOW_RAY_PORT or DLLMFLOW_RAY_{name.upper()}_PORT"
            )
        return port

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # The embedded servers' credentials, generated into the state dir by `dllmflow up`.
    @property
    def postgres_password_file(self) -> Path:
        return self.state_dir / "postgres_password"

    @property
    def redis_password_file(self) -> Path:
        return self.state_dir / "redis_password"

    @property
    def ray_auth_token_file(self) -> Path:
        return self.state_dir / "ray_auth_token"

    @property
    def embedded_database_url(self) -> str:
        password = read_secret(self.postgres_password_file)
        user = f"postgres:{quote(password, safe='')}" if password else "postgres"
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.postgres_port}/dllmflow"

    @property
    def effective_database_url(self) -> str:
        if self.database_url is None:
            return self.embedded_database_url
        return normalize_database_url(self.database_url.get_secret_value())

    @property
    def effective_redis_url(self) -> str:
        if self.redis_url is None:
            password = read_secret(self.redis_password_file)
            auth = f":{quote(password, safe='')}@" if password else ""
            return f"redis://{auth}127.0.0.1:{self.redis_port}/0"
        return self.redis_url.get_secret_value()

    @property
    def effective_temporal_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def effective_ray_address(self) -> str:
        return self.ray_address or f"127.0.0.1:{self.ray_port}"

    @property
    def effective_ray_dashboard_url(self) -> str | None:
        if self.ray_dashboard_url:
            return self.ray_dashboard_url.rstrip("/")
        if self.ray_address is None:
            return f"http://127.0.0.1:{self.ray_dashboard_port}"
        return None

    @property
    def temporal_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.temporal_ui_port}"

    def embedded(self, component: str) -> bool:
        """Whether `component` is one of the servers dllmflow itself runs under the state dir."""
        external = {
            "postgres": self.database_url,
            "redis": self.redis_url,
            "temporal": self.temporal_address,
            "ray": self.ray_address,
        }
        return external.get(component) is None


def normalize_database_url(url: str) -> str:
    """Accept plain postgres:// URLs and pin SQLAlchemy to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith("postgresql+psycopg://"):
        raise SettingsError(
            "DLLMFLOW_DATABASE_URL must be a postgresql:// URL "
            f"(got scheme {url.split(':', 1)[0]!r})"
        )
    return url


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one message per bad DLLMFLOW_* variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across fields; its message names the variables
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            name = "DLLMFLOW_" + "_".join(str(p) for p in err["loc"]).upper()
            secret = any(word in name for word in ("TOKEN", "URL", "PASSWORD"))
            shown = "" if secret else f" (got {err.get('input')!r})"
            problems.append(f"{name}: {err['msg']}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
