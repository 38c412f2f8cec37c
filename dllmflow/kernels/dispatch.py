"""Backend choice for the kernels: Triton on CUDA tensors, the torch reference elsewhere.

DLLMFLOW_KERNELS overrides the choice:
  auto   (default) Triton when every tensor is on CUDA, else the torch reference;
  triton always Triton (CPU tensors need TRITON_INTERPRET=1, Triton's interpreter);
  torch  always the torch reference.
"""

from __future__ import annotations

import os
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


class LazyKernel:
    """A Triton kernel compiled on first launch, not at import.

    triton.jit decides between the compiler and the CPU interpreter when it decorates a
    function, so decorating at import would freeze whatever TRITON_INTERPRET said then.
    Wrapping lets tests switch the interpreter on after dllmflow.kernels was imported.
    Kernel bodies wrapped this way must only call triton.language builtins.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._built: dict[bool, Any] = {}

    def __getitem__(self, grid: Any) -> Any:
        key = interpret_mode()
        if key not in self._built:
            import triton

            self._built[key] = triton.jit(self.fn)
        return self._built[key][grid]


def lazy_kernel(fn: Callable[..., Any]) -> LazyKernel:
    return LazyKernel(fn)
