"""Kernel tests run each comparison twice: on CPU through Triton's interpreter, and on CUDA with
compiled kernels (the `gpu` twin).

Triton picks interpreter or compiler for its own library when it is first imported, so one
process runs one of the two: without a GPU the interpreter is switched on here, before anything
imports triton (importing dllmflow.kernels does not); with a GPU the kernels compile, and
`TRITON_INTERPRET=1 pytest tests/kernels` runs the CPU half there.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dllmflow.kernels.dispatch import interpret_mode

INTERPRET = interpret_mode()
NO_GPU = "needs a CUDA GPU (torch.cuda.is_available() is False)"
GPU_INTERPRETED = "TRITON_INTERPRET=1 in this process; the GPU twin needs compiled kernels"
CPU_COMPILED = "Triton's interpreter is off in this process; rerun with TRITON_INTERPRET=1"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        cpu = pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRET, reason=CPU_COMPILED))
        gpu = pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU),
                pytest.mark.skipif(INTERPRET, reason=GPU_INTERPRETED),
            ],
        )
        metafunc.parametrize("device", [cpu, gpu])


@pytest.fixture(autouse=True)
def _no_backend_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLLMFLOW_KERNELS", raising=False)
