"""Pure view logic: waterfall layout and the A/B table (no stack needed)."""

from __future__ import annotations

from types import SimpleNamespace

from dllmflow.api.views import (
    SEGMENTS,
    WaterfallStep,
    compare,
    eval_view,
    layout_waterfall,
    waterfall_steps,
)


def step(n: int, **timings: float) -> WaterfallStep:
    zeros = dict.fromkeys(SEGMENTS, 0.0)
    return WaterfallStep(n, "seeker", "diffusion", "search", {**zeros, **timings})


def test_steps_cascade_and_segments_stack() -> None:
    steps = [step(0, queue=1, decode=2, tool=1), step(1, decode=3, orchestration=1)]
    chart = layout_waterfall(steps)
    assert chart.total_s == 8
    first, second = chart.rows
    assert [(b.segment, b.x, b.width) for b in first.bars] == [
        ("queue", 0.0, 12.5),
        ("decode", 12.5, 25.0),
        ("tool", 37.5, 12.5),
    ]
    assert second.start_s == 4 and second.bars[0].x == 50.0  # starts where step 0 ended
    assert second.bars[-1].x + second.bars[-1].width == 100.0
    assert chart.by_segment["decode"] == 5


def test_a_p_react_tool_bar_starts_inside_the_decode_bar() -> None:
    # decode 0..3 s; the tool started 1 s in and ran 2 s, all inside the decode.
    overlapped = step(0, decode=3, tool=2, orchestration=1)
    overlapped.tool_start, overlapped.overlap = 1.0, 2.0
    chart = layout_waterfall([overlapped, step(1, decode=4)])
    assert chart.total_s == 8  # 6 s of parts, 2 s of them at the same time, then 4 s
    bars = {b.segment: b for b in chart.rows[0].bars}
    assert bars["tool"].overlapped and not bars["decode"].overlapped
    decode, tool = bars["decode"], bars["tool"]
    assert decode.x < tool.x < decode.x + decode.width  # the tool starts inside the decode
    assert (tool.x, tool.width) == (12.5, 25.0)
    assert bars["orchestration"].x == 37.5  # the turn's own parts still stack
    assert chart.rows[1].start_s == 4


def test_empty_and_zero_length_waterfalls() -> None:
    assert layout_waterfall([]).rows == []
    chart = layout_waterfall([step(0)])
    assert chart.total_s == 0 and chart.rows[0].bars == []


def test_recorded_waterfall_is_preferred_and_sanitised() -> None:
    episode = SimpleNamespace(
        metrics={
            "waterfall": [
                {
                    "step": 0,
                    "role": "planner",
                    "backend": "ar",
                    "tool": "search",
                    "timings": {"decode": 1.5, "queue": -1, "tool": None},
                },
            ]
        }
    )
    steps, provisional = waterfall_steps(episode, [])
    assert not provisional
    assert steps[0].timings == {
        "queue": 0.0,
        "decode": 1.5,
        "tool": 0.0,
        "checkpoint": 0.0,
        "orchestration": 0.0,
    }


def test_eval_view_compares_policies_against_ar() -> None:
    view = eval_view(
        {
            "policies": {
                "diffusion": {
                    "accuracy": 0.155,
                    "latency_mean_s": 10.0,
                    "notes": "x",
                    "waterfall_mean_s": {"decode": 6.0, "tool": 2.0},
                },
                "ar": {
                    "accuracy": 0.155,
                    "latency_mean_s": 14.0,
                    "ok": True,
                    "waterfall_mean_s": {"decode": 10.0, "tool": 2.0},
                },
            },
            "ab_shadow": {"arms": {"ar": {"episodes": 3}}, "recommendation": "keep collecting"},
        }
    )
    assert view.policies.policies == ["ar", "diffusion"] and view.policies.baseline == "ar"
    rows = {row.name: row.values for row in view.policies.rows}
    assert rows == {"accuracy": [0.155, 0.155], "latency_mean_s": [14.0, 10.0]}
    assert [(r.label, r.unit) for r in view.policies.rows] == [
        ("accuracy", "percent"),
        ("latency mean", "seconds"),
    ]
    ar, dllm = view.waterfalls
    assert ar.total_s == 12.0 and ar.bars[-1].x + ar.bars[-1].width == 100.0
    assert round(dllm.bars[0].width, 3) == 50.0
    assert view.arms is not None and view.recommendation == "keep collecting"
    assert eval_view({}).policies.rows == [] and eval_view({}).arms is None


def test_compare_orders_metrics_and_hides_percentiles_from_few_episodes() -> None:
    few = {"episodes": 4, "latency_p99_s": 9.0, "latency_p95_s": 8.0, "latency_p50_s": 2.0}
    many = {"episodes": 120, "latency_p99_s": 7.0, "latency_p95_s": 6.0, "latency_p50_s": 1.5}
    table = compare({"ar": few, "diffusion": many, "routed": {"episodes": 4, "zeta": 1.0}})
    names = [row.name for row in table.rows]
    assert names == ["episodes", "latency_p50_s", "latency_p95_s", "latency_p99_s", "zeta"]
    p99 = next(row for row in table.rows if row.name == "latency_p99_s")
    assert p99.values == [None, 7.0, None]  # 4 episodes give no p99; 120 do
    only_few = compare({"ar": few})
    assert "latency_p99_s" not in [row.name for row in only_few.rows]


def test_a_cpu_run_shows_no_gpu_cost() -> None:
    summary = {
        "episodes": 8,
        "gpu_seconds": 40.0,
        "cost_per_success": 0.01,
        "gpu_price_per_hour": 2.5,
    }

    def labels(accelerator: str | None) -> dict[str, str]:
        metrics = {"policies": {"ar": summary}}
        if accelerator:
            metrics["accelerator"] = accelerator
        return {row.name: row.label for row in eval_view(metrics).policies.rows}

    gpu = labels("gpu")
    assert gpu["gpu_seconds"] == "model decode GPU-seconds" and "cost_per_success" in gpu
    assert labels("cpu") == {"episodes": "episodes", "gpu_seconds": "model decode seconds (CPU)"}
    # A run stored before runs recorded their accelerator is not priced as a GPU run.
    assert labels(None) == {
        "episodes": "episodes",
        "gpu_seconds": "model decode seconds (accelerator not recorded)",
    }
