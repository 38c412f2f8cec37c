"""The eval report's waterfall: a P-ReAct tool call drawn inside the decode it overlapped."""

from __future__ import annotations

import pytest

from dllmflow.evaluation.plots import INSIDE, waterfall_segments, write_plots


def step(decode: float, tool: float, overlap: float = 0.0) -> dict:
    return {
        "tool": "search",
        "tool_start": 0.1 if overlap else None,
        "overlap": overlap,
        "timings": {"queue": 0.5, "decode": decode, "tool": tool, "checkpoint": 0.2},
    }


def episode(policy: str, *steps: dict) -> dict:
    return {"policy": policy, "latency_s": 5.0, "waterfall": list(steps)}


def pieces(bars: dict, policy: str) -> dict[str, tuple[float, float]]:
    return {label: (bottom, height) for label, bottom, height in bars[policy]}


def test_overlapped_tool_time_lies_inside_the_decode_piece() -> None:
    bars = waterfall_segments([episode("p-react", step(decode=2.0, tool=0.9, overlap=0.6))])
    got = pieces(bars, "p-react")
    decode_top = got["decode"][0] + got["decode"][1]
    assert decode_top == pytest.approx(2.5)  # queue 0.5 + decode 2.0
    assert got[INSIDE] == pytest.approx((decode_top - 0.6, 0.6))
    assert got["tool"] == pytest.approx((decode_top, 0.3))  # only the tool time after the decode
    top = max(bottom + height for bottom, height in got.values())
    assert top == pytest.approx(0.5 + 2.0 + 0.9 + 0.2 - 0.6)  # end to end, not the sum


def test_without_overlap_the_bar_is_the_plain_sum() -> None:
    bars = waterfall_segments([episode("base", step(decode=2.0, tool=0.9))])
    got = pieces(bars, "base")
    assert INSIDE not in got
    assert got["tool"] == pytest.approx((2.5, 0.9))
    assert max(b + h for b, h in got.values()) == pytest.approx(3.6)


def test_overlap_never_exceeds_the_tool_or_the_decode() -> None:
    got = pieces(waterfall_segments([episode("x", step(decode=0.2, tool=0.9, overlap=0.8))]), "x")
    assert got[INSIDE][1] == pytest.approx(0.2)
    assert got["tool"][1] == pytest.approx(0.7)


def test_write_plots_renders_both_pngs(tmp_path) -> None:
    records = [
        episode("base", step(decode=2.0, tool=0.9)),
        episode("p-react", step(decode=2.0, tool=0.9, overlap=0.6)),
    ]
    paths = write_plots(records, tmp_path)
    assert [p.name for p in paths] == ["latency_cdf.png", "waterfall.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
