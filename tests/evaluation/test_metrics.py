"""Metric functions on hand-made episode records with known answers."""

from __future__ import annotations

import pytest

from dllmflow.evaluation import metrics as m
from dllmflow.evaluation.report import build_metrics, render_report


def turn(backend="diffusion", valid=True, repaired=False, decode_s=1.0, tokens=0, forwards=0, **kw):
    return {
        "backend": backend,
        "valid": valid,
        "repaired": repaired,
        "decode_s": decode_s,
        "tokens": tokens,
        "forward_passes": forwards,
        **kw,
    }


def episode(policy="diffusion", answer="Paris", gold="Paris", aliases=(), latency=1.0, **kw):
    return {
        "id": f"ep-{policy}-{answer}",
        "policy": policy,
        "status": "completed",
        "answer": answer,
        "question_record": {"answer": gold, "aliases": list(aliases)},
        "latency_s": latency,
        "first_useful_s": latency / 4,
        "turns": 4,
        "tool_calls": 2,
        "invalid_actions": 0,
        "waterfall": [],
        "turn_stats": [],
        **kw,
    }


def test_accuracy_normalises_and_accepts_aliases() -> None:
    records = [
        episode(answer="the Laltha Institute.", gold="Laltha Institute"),
        episode(answer="LI", gold="Laltha Institute", aliases=["LI"]),
        episode(answer="Stuszail", gold="Laltha Institute"),
        episode(answer=None, gold="Laltha Institute"),
    ]
    assert [m.is_correct(r) for r in records] == [True, True, False, False]
    assert m.accuracy(records) == 0.5
    assert m.accuracy([]) is None


def test_percentiles_interpolate_linearly() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert m.percentile(values, 50) == pytest.approx(50.5)
    assert m.percentile(values, 95) == pytest.approx(95.05)
    assert m.percentile(values, 99) == pytest.approx(99.01)
    assert m.percentile([None, 3.0], 50) == 3.0
    assert m.percentile([], 50) is None


def test_invalid_rate_and_schema_adherence() -> None:
    a = episode(
        turns=10,
        invalid_actions=1,
        turn_stats=[turn(), turn(valid=False), turn(repaired=True), turn()],
    )
    b = episode(turns=10, invalid_actions=3)
    assert m.invalid_action_rate([a, b]) == pytest.approx(4 / 20)
    assert m.schema_adherence([a]) == pytest.approx(2 / 4)  # repaired turns do not count


def test_tokens_per_forward_and_cost_skip_oracle_turns() -> None:
    a = episode(
        answer="Paris",
        turn_stats=[
            turn(tokens=40, forwards=10, decode_s=1800.0),
            turn(tokens=20, forwards=10, decode_s=1800.0),
            turn(backend="oracle", tokens=999, forwards=1, decode_s=999.0),
        ],
    )
    wrong = episode(answer="Rome", turn_stats=[turn(tokens=10, forwards=10, decode_s=3600.0)])
    assert m.tokens_per_forward([a]) == pytest.approx(3.0)
    assert m.tokens_per_forward([a, wrong]) == pytest.approx(70 / 30)
    assert m.gpu_seconds(a) == pytest.approx(3600.0)
    # 2 GPU-hours at $2.5 spread over one success.
    assert m.cost_per_success([a, wrong], 2.5) == pytest.approx(5.0)
    assert m.cost_per_success([wrong], 2.5) is None


def test_gpu_price_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLLMFLOW_GPU_PRICE_PER_HOUR", raising=False)
    assert m.gpu_price_per_hour() == m.DEFAULT_GPU_PRICE_PER_HOUR
    monkeypatch.setenv("DLLMFLOW_GPU_PRICE_PER_HOUR", "4")
    assert m.gpu_price_per_hour() == 4.0
    monkeypatch.setenv("DLLMFLOW_GPU_PRICE_PER_HOUR", "cheap")
    with pytest.raises(ValueError, match="DLLMFLOW_GPU_PRICE_PER_HOUR"):
        m.gpu_price_per_hour()


def test_mean_waterfall() -> None:
    row = {"timings": {"queue": 1.0, "decode": 2.0, "tool": 0.5}}
    out = m.mean_waterfall([episode(waterfall=[row, row]), episode(waterfall=[])])
    assert out == {
        "queue": 1.0,
        "decode": 2.0,
        "tool": 0.5,
        "checkpoint": 0.0,
        "orchestration": 0.0,
    }


def test_overlap_stats_count_tool_calls_started_inside_their_turn() -> None:
    early = {"tool": "search", "tool_start": 0.1, "overlap": 0.3, "timings": {"tool": 0.6}}
    late = {"tool": "fetch", "tool_start": None, "overlap": 0.0, "timings": {"tool": 0.9}}
    answer = {"tool": "answer", "timings": {"decode": 0.2}}
    out = m.overlap_stats([episode(waterfall=[early, late, answer]), episode(waterfall=[early])])
    assert out == {
        "overlap_mean_s": pytest.approx(0.3),
        "overlapped_steps": 2,
        "overlapped_step_share": pytest.approx(2 / 3),
    }
    summary = m.summarize([episode(waterfall=[early, late])], price_per_hour=1.0)
    assert summary["waterfall_tool_s"] == pytest.approx(1.5)
    assert summary["overlap_mean_s"] == pytest.approx(0.3)


def test_bootstrap_ci_is_deterministic_with_a_seed() -> None:
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    first = m.bootstrap_ci(values, seed=7)
    assert first == m.bootstrap_ci(values, seed=7)
    latencies = [1.3, 2.9, 0.7, 4.4, 2.2, 3.1, 1.8, 5.6]
    assert m.bootstrap_ci(latencies, seed=7) != m.bootstrap_ci(latencies, seed=8)
    lo, hi = first
    assert 0.0 <= lo < 0.7 < hi <= 1.0
    assert m.bootstrap_ci([5.0, 5.0], seed=1) == (5.0, 5.0)
    assert m.bootstrap_ci([]) is None


def test_ab_arms_and_recommendation() -> None:
    fast = [
        episode(policy="ab", latency=1.0 + i * 0.01, turn_stats=[turn(backend="diffusion")])
        for i in range(8)
    ]
    slow = [
        episode(policy="ab", latency=3.0 + i * 0.01, turn_stats=[turn(backend="ar")])
        for i in range(8)
    ]
    shadow = episode(
        policy="shadow",
        turn_stats=[turn(backend="ar", routing={"shadow": turn(backend="diffusion", tokens=8)})],
    )
    report = m.arm_report(fast + slow + [shadow], seed=0)
    assert set(report["arms"]) == {"ar", "diffusion"}
    assert report["arms"]["diffusion"]["episodes"] == 8
    assert report["arms"]["ar"]["episodes"] == 9  # the shadow episode's primary arm is ar
    assert report["shadow_turns"]["diffusion"]["turns"] == 1
    assert report["recommendation"].startswith("route to diffusion")
    assert m.recommend({"ar": report["arms"]["ar"]}).startswith("not enough data")


def test_report_prints_paper_table_next_to_ours() -> None:
    records = [
        episode(policy="ar", latency=10.0),
        episode(policy="diffusion", latency=7.0, answer="Rome"),
    ]
    metrics = build_metrics(records, price=2.5)
    assert metrics["policies"]["ar"]["accuracy"] == 1.0
    config = {"name": "t", "tau": 0.8, "budgets": {}, "variant": "tau=0.8", "task_queue": "q-tau"}
    text = render_report(metrics, config, "dllmflow eval", "r1")
    assert "| accuracy | 15.5% | 15.5% | 100.0% | 0.0% |" in text
    assert "| mean latency reduction, DLLM vs AR | ~30% | | 30.0% | |" in text
    assert "synthetic" in text and "dedicated worker (task queue q-tau)" in text
    assert "tau=0.8, P-ReAct default" in text


def test_a_cpu_run_reports_decode_seconds_without_a_gpu_cost() -> None:
    from dllmflow.workers.serving.settings import ServingSettings

    assert m.serving_accelerator(ServingSettings(replica_num_gpus=0)) == "cpu"
    assert m.serving_accelerator(ServingSettings(replica_num_gpus=1)) == "gpu"
    external = ServingSettings(ar_kind="openai-compatible", ar_base_url="http://e/v1", ar_model="m")
    assert m.serving_accelerator(external) == "external"
    records = [episode(policy="ar", turn_stats=[turn("ar", decode_s=3.0)])]
    config = {"name": "t", "budgets": {}}
    cpu = render_report(build_metrics(records, 2.5, "cpu"), config, None, "r1")
    assert "| model decode seconds (total, CPU) | 3.00 |" in cpu
    assert "GPU-seconds" not in cpu and "cost / successful task" not in cpu
    assert "decoded on CPU, so no GPU cost is reported" in cpu
    gpu = render_report(build_metrics(records, 2.5, "gpu"), config, None, "r1")
    assert "| GPU-seconds (total) |" in gpu and "| cost / successful task |" in gpu
    stored_before = build_metrics(records, 2.5, "gpu")
    del stored_before["accelerator"]  # runs stored before the field
    old = render_report(stored_before, config, None, "r1")
    assert "| model decode seconds (total, accelerator not recorded) | 3.00 |" in old
    assert "cost / successful task" not in old and "no GPU cost is reported" in old
