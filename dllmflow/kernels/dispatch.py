"""Backend choice for the kernels: Triton on CUDA tensors, the torch reference elsewhere.

DLLMFLOW_KERNELS overrides the choice:
  auto   (default) Triton when every tensor is on CUDA, else the torch reference;
  triton always Triton (CPU tensors need TRITON_INTERPRET=1, Triton's interpreter);
  torch  always the torch reference.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any, Literal

import torch

Backend = Literal["triton", "torch"]
ENV_VAR = "DLLMFLOW_KERNELS"
_MODES = ("auto", "triton", "torch")


def interpret_mode() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def requested_mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"{ENV_VAR}={mode!r} is not one of {', '.join(_MODES)}")
    return mode


def choose_backend(*tensors: torch.Tensor) -> Backend:
    """Pick the backend for one call over `tensors` (all on one device, checked by the caller)."""
    mode = requested_mode()
    if mode == "torch":
        return "torch"
    on_cuda = all(t.is_cuda for t in tensors)
    if mode == "auto":
        return "triton" if on_cuda else "torch"
    if not on_cuda and not interpret_mode():
        raise ValueError(
            f"{ENV_VAR}=triton with tensors on {tensors[0].device}: Triton runs on CPU tensors "
            "only under TRITON_INTERPRET=1; use CUDA tensors or DLLMFLOW_KERNELS=auto|torch"
        )
    return "triton"


def check_interpreter_consistent(interpret: bool) -> None:
    """Triton fixes interpreter vs compiler for its own library when it is first imported."""
    import triton.language as tl

    library_interpreted = type(tl.zeros).__name__ == "InterpretedFunction"
    if library_interpreted != interpret:
        now = "set" if interpret else "unset"
        then = "set" if library_interpreted else "unset"
        raise RuntimeError(
            f"TRITON_INTERPRET is {now} now but was {then} when triton was first imported; "
            "set it before anything imports triton (tests/kernels/conftest.py does on CPU)"
        )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class LazyKernel:
    """A Triton function built on first use, not at import.

    triton.jit decides between the compiler and the CPU interpreter when it decorates a
    function, so decorating at import would freeze whatever TRITON_INTERPRET said then.
    Wrapping lets tests switch the interpreter on after dllmflow.kernels was imported. Helpers
    a kernel calls are LazyKernels too; each build swaps them for their build of the same mode.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._built: dict[bool, Any] = {}

    def build(self, interpret: bool) -> Any:
        if interpret not in self._built:
            import triton
            import triton.language as tl

            check_interpreter_consistent(interpret)
            # Modules import triton lazily (importing dllmflow.kernels must not fix Triton's mode),
            # so the build supplies the names the kernel bodies use.
            scope = {**self.fn.__globals__, "tl": tl, "triton": triton}
            for name in self.fn.__code__.co_names:  # the globals this body refers to
                value = scope.get(name)
                if isinstance(value, LazyKernel) and value is not self:
                    scope[name] = value.build(interpret)
            fn = types.FunctionType(self.fn.__code__, scope, self.fn.__name__, self.fn.__defaults__)
            fn.__qualname__ = self.fn.__qualname__
            fn.__doc__ = self.fn.__doc__
            # Triton reads tl.constexpr parameters off the annotations, which a def attaches to
            # the function object, not to its code.
            fn.__annotations__ = dict(self.fn.__annotations__)
            fn.__kwdefaults__ = self.fn.__kwdefaults__
            self._built[interpret] = triton.jit(fn)
        return self._built[interpret]

    def __getitem__(self, grid: Any) -> Any:
        return self.build(interpret_mode())[grid]


def lazy_kernel(fn: Callable[..., Any]) -> LazyKernel:
    return LazyKernel(fn)


_SM_COUNT: dict[str, int] = {}


def multiprocessor_count(device: torch.device) -> int:
    """SMs on a CUDA device (cached); a small stand-in for CPU tensors under the interpreter."""
    if device.type != "cuda":
        return 4
    key = str(device)
    if key not in _SM_COUNT:
        _SM_COUNT[key] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[key]


_COUNTERS: dict[tuple[str, int], torch.Tensor] = {}


def arrival_counters(device: torch.device, rows: int) -> torch.Tensor:
    """Zeroed int32 counters that every launch leaves zeroed again, one set per CUDA stream.

    A kernel whose last program of a group does the group's final step (instead of a second
    launch) counts arrivals here and resets the count when it is done. Launches on one stream run
    in order, so they can share counters without a memset per call (a memset is a graph node of
    its own, about a microsecond). Under the CPU interpreter the stream is irrelevant.
    """
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    counters = _COUNTERS.get(key)
    if counters is None or counters.numel() < rows:
        counters = torch.zeros(max(rows, 64), dtype=torch.int32, device=device)
        _COUNTERS[key] = counters
    return counters[:rows]
