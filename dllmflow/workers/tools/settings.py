"""Settings of the research tools, read from DLLMFLOW_* environment variables (or .env).

DLLMFLOW_CORPUS                 corpus the agent's tools search (default "default")
DLLMFLOW_CORPUS_MAX_TEXT_CHARS  longest document text `corpus load` accepts
DLLMFLOW_TOOL_LATENCY           injected delays, e.g. "search=lognormal:0.8:2.5,fetch=fixed:0.3",
                                or a preset: "realistic" (latency.PRESETS)
DLLMFLOW_HTTP_FETCH_ALLOW       domains fetch may download from, e.g. "example.org,*.wiki.org";
                                empty (the default) disables HTTP fetch
"""

from __future__ import annotations

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dllmflow.config import SettingsError
from dllmflow.store.corpus import DEFAULT_CORPUS, DEFAULT_MAX_TEXT_CHARS
from dllmflow.workers.tools.latency import LatencyProfile, LatencySpecError


class ToolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLLMFLOW_", env_file=".env", extra="ignore")

    corpus: str = Field(default=DEFAULT_CORPUS, min_length=1, max_length=100)
    corpus_max_text_chars: int = Field(default=DEFAULT_MAX_TEXT_CHARS, ge=1)
    tool_latency: str = ""
    http_fetch_allow: str = ""
    http_fetch_timeout_s: float = Field(default=10.0, gt=0)
    http_fetch_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

    @field_validator("tool_latency")
    @classmethod
    def _parse_latency(cls, value: str) -> str:
        try:
            LatencyProfile.parse(value)
        except LatencySpecError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def latency(self) -> LatencyProfile:
        return LatencyProfile.parse(self.tool_latency)

    @property
    def http_allow(self) -> tuple[str, ...]:
        return tuple(d.strip().lower() for d in self.http_fetch_allow.split(",") if d.strip())


def load_tool_settings(**overrides: object) -> ToolSettings:
    """ToolSettings, with validation errors turned into one line per bad DLLMFLOW_* variable."""
    try:
        return ToolSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "DLLMFLOW_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
