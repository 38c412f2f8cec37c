"""The install itself: a CPU machine must not have pulled in gigabytes of CUDA wheels."""

from __future__ import annotations

from importlib.metadata import distributions

import pytest
import torch


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU machine legitimately carries the CUDA runtime wheels"
)
def test_no_cuda_wheels_on_a_cpu_install() -> None:
    cuda_wheels = sorted(
        d.metadata["Name"]
        for d in distributions()
        if (d.metadata["Name"] or "").lower().startswith("nvidia-")
    )
    assert cuda_wheels == [], f"CUDA wheels installed on a machine without a GPU: {cuda_wheels}"
