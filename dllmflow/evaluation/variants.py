"""Eval variants: a base configuration plus serving overrides and budgets, for ablations/sweeps.

A variant is written as settings joined by "+", e.g. ``base``, ``ablate=span-mask``, ``tau=0.7``,
``max-steps=6``, ``p-react=on`` or ``tau=0.95+p-react=on``. Serving overrides (diffusion
checkpoint, tau, P-ReAct order) are read by a worker's model client when it starts, so a variant
with any of them runs on a dedicated worker process of its own (own task queue, own replicas);
the denoising budget is a per-episode budget and needs no worker of its own.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dllmflow.config import Settings
from dllmflow.workflows.types import Budgets

CHECKPOINT_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
ABLATIONS = {
    "context-clean": "diffusion-no-context-clean",
    "span-mask": "diffusion-no-span-mask",
}
SETTINGS = ("ablate", "tau", "max-steps", "p-react")
DEFAULT_VARIANTS = (
    "base",
    "ablate=context-clean",
    "ablate=span-mask",
    "tau=0.7",
    "tau=0.95",
    "max-steps=8",
    "p-react=on",
)
ON, OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")
WORKER_STOP_S = 30.0


def ablation_checkpoint(ablate: str) -> Path:
    """The diffusion checkpoint trained without one trick; a clear error when it is not shipped."""
    if ablate not in ABLATIONS:
        raise ValueError(f"unknown --ablate {ablate!r}; choose one of {', '.join(ABLATIONS)}")
    path = CHECKPOINT_ROOT / ABLATIONS[ablate]
    if not path.is_dir():
        raise FileNotFoundError(
            f"--ablate {ablate} needs the checkpoint {path}, which is not present; "
            "train it first (models trained without this trick)"
        )
    return path


def checkpoint_label(checkpoint: str) -> str:
    """A checkpoint as a report names it: a shipped name whole ("smollm2-135m/diffusion"),
    a local directory by its folder name."""
    from dllmflow.models.loader import SHIPPED

    return checkpoint if checkpoint in SHIPPED else Path(checkpoint).name


@dataclass(frozen=True)
class Variant:
    name: str = "base"
    ablate: str | None = None
    tau: float | None = None
    action_first: bool | None = None
    max_denoise_steps: int | None = None
    # Injected tool latency of the variant's worker (DLLMFLOW_TOOL_LATENCY: a profile or a
    # preset such as "realistic"); a workload setting shared by every variant of a sweep.
    tool_latency: str | None = None

    @property
    def slug(self) -> str:
        """Safe for a folder and a task queue name: tau=0.7+p-react=on -> tau-0.7_p-react-on."""
        return re.sub(r"[^a-z0-9._-]", "-", self.name.replace("+", "_").replace("=", "-"))

    @property
    def diffusion_checkpoint(self) -> str | None:
        return str(ablation_checkpoint(self.ablate)) if self.ablate else None

    def serving_overrides(self) -> dict[str, Any]:
        """ServingSettings fields this variant sets (only those it changes)."""
        out: dict[str, Any] = {}
        if self.ablate:
            out["diffusion_checkpoint"] = self.diffusion_checkpoint
        if self.tau is not None:
            out["tau"] = self.tau
        if self.action_first is not None:
            out["action_first"] = self.action_first
        return out

    @property
    def needs_worker(self) -> bool:
        return bool(self.serving_overrides()) or self.tool_latency is not None

    def worker_env(self, replica_group: str) -> dict[str, str]:
        """DLLMFLOW_* variables for the variant's worker; the replica group keeps its replicas
        apart from every other worker's (replicas are found by name)."""
        env = {
            f"DLLMFLOW_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in self.serving_overrides().items()
        }
        env["DLLMFLOW_REPLICA_GROUP"] = replica_group
        if self.tool_latency is not None:
            env["DLLMFLOW_TOOL_LATENCY"] = self.tool_latency
        return env

    def serving(self) -> Any:
        """The effective ServingSettings of this variant's worker (this process's environment
        plus the overrides, as the worker sees it)."""
        from dllmflow.workers.serving.settings import ServingSettings

        return ServingSettings(**self.serving_overrides())

    def budgets(self, base: Budgets) -> Budgets:
        if self.max_denoise_steps is None:
            return base
        return replace(base, max_denoise_steps=self.max_denoise_steps).validate()

    def describe(self) -> dict[str, Any]:
        serving = self.serving()
        return {
            "variant": self.name,
            "ablate": self.ablate,
            "diffusion_checkpoint": serving.diffusion_checkpoint,
            "tau": serving.tau,
            "p_react": serving.action_first,
            "max_denoise_steps": self.max_denoise_steps,
            "tool_latency": self.tool_latency,
        }


def _setting(spec: str, key: str, value: str | None) -> dict[str, Any]:
    if key not in SETTINGS:
        raise ValueError(
            f"variant {spec!r}: unknown setting {key!r}; known: base, {', '.join(SETTINGS)} "
            "(e.g. ablate=span-mask, tau=0.7, max-steps=6, p-react=on)"
        )
    if key == "p-react":
        if value is None or value.lower() in ON:
            return {"action_first": True}
        if value.lower() in OFF:
            return {"action_first": False}
        raise ValueError(f"variant {spec!r}: p-react must be on or off (got {value!r})")
    if not value:
        example = {"ablate": "ablate=span-mask", "tau": "tau=0.7", "max-steps": "max-steps=6"}
        raise ValueError(f"variant {spec!r}: {key} needs a value, e.g. {example[key]}")
    if key == "ablate":
        if value not in ABLATIONS:
            raise ValueError(
                f"variant {spec!r}: unknown ablation {value!r}; choose one of "
                f"{', '.join(ABLATIONS)}"
            )
        ablation_checkpoint(value)  # fail now, not after the earlier variants ran
        return {"ablate": value}
    if key == "tau":
        try:
            tau = float(value)
        except ValueError:
            tau = float("nan")
        if not 0.0 < tau <= 1.0:  # also rejects nan
            raise ValueError(f"variant {spec!r}: tau must be a number in (0, 1] (got {value!r})")
        return {"tau": tau}
    try:
        steps = int(value)
    except ValueError:
        steps = 0
    if steps < 1:
        raise ValueError(f"variant {spec!r}: max-steps must be a positive integer (got {value!r})")
    return {"max_denoise_steps": steps}


def parse_variant(spec: str) -> Variant:
    """One variant from its spec; the error names the spec and the part that is wrong."""
    text = spec.strip()
    if not text:
        raise ValueError("empty variant; give e.g. base, tau=0.7 or ablate=span-mask+p-react=on")
    if text == "base":
        return Variant()
    fields: dict[str, Any] = {}
    names: list[str] = []
    for part in text.split("+"):
        part = part.strip()
        if part == "base":
            raise ValueError(f"variant {spec!r}: 'base' cannot be combined with other settings")
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), (value.strip() if sep else None)
        if not key:
            raise ValueError(f"variant {spec!r}: empty setting")
        parsed = _setting(spec, key, value)
        if set(parsed) & set(fields):
            raise ValueError(f"variant {spec!r}: {key} is given more than once")
        fields.update(parsed)
        names.append(f"{key}={_canonical(parsed)}")
    return Variant(name="+".join(names), **fields)


def _canonical(parsed: dict[str, Any]) -> str:
    """The value as the variant's name shows it, so tau=0.70 and tau=0.7 are one variant."""
    (field, value), *_ = parsed.items()
    if field == "action_first":
        return "on" if value else "off"
    if field == "tau":
        return f"{value:g}"
    return str(value)


def parse_variants(text: str) -> list[Variant]:
    """Comma-separated variants; duplicates (after normalising) are an error."""
    specs = [s for s in (p.strip() for p in text.split(",")) if s]
    if not specs:
        raise ValueError(
            "--variants is empty; give e.g. base,ablate=span-mask,tau=0.7 "
            f"(default: {','.join(DEFAULT_VARIANTS)})"
        )
    variants: list[Variant] = []
    for spec in specs:
        v = parse_variant(spec)
        if any(o.slug == v.slug for o in variants):
            raise ValueError(f"variant {spec!r} is listed more than once in --variants")
        variants.append(v)
    return variants


def variant_from_flags(
    ablate: str | None, tau: float | None, p_react: bool | None, max_steps: int | None = None
) -> Variant:
    """The variant `dllmflow eval --ablate/--tau/--p-react/--max-steps` asks for."""
    parts = []
    if ablate is not None:
        parts.append(f"ablate={ablate}")
    if tau is not None:
        parts.append(f"tau={tau:g}")
    if max_steps is not None:
        parts.append(f"max-steps={max_steps}")
    if p_react is not None:
        parts.append(f"p-react={'on' if p_react else 'off'}")
    if ablate is not None and ablate not in ABLATIONS:
        ablation_checkpoint(ablate)  # the --ablate error message, naming the flag
    return parse_variant("+".join(parts)) if parts else Variant()


def variant_queue(settings: Settings, variant: Variant) -> str:
    """Deterministic, so a resumed eval's new worker picks up the episodes still in flight."""
    return f"{settings.task_queue}-eval-{variant.slug}"


@contextmanager
def variant_worker(settings: Settings, variant: Variant) -> Iterator[Settings]:
    """A dedicated worker for ``variant`` while the block runs; yields the settings to submit
    with (its task queue). Its replicas are non-detached and stop with it."""
    from dllmflow.workers.episode_worker import spawn_worker

    worker_settings = settings.model_copy(update={"task_queue": variant_queue(settings, variant)})
    group = f"eval-{variant.slug}-{uuid.uuid4().hex[:8]}"
    proc = spawn_worker(worker_settings, variant.worker_env(group))
    try:
        yield worker_settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WORKER_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
