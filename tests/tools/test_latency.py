"""Latency profiles: parsing with clear errors, reproducible draws, the executor's delay."""

from __future__ import annotations

import statistics

import pytest

from dllmflow.config import SettingsError
from dllmflow.workers.tools import LatencyProfile, LatencySpecError, load_tool_settings


def test_parse_round_trips_and_is_off_when_empty():
    spec = "search=lognormal:0.8:2.5,fetch=fixed:0.3,*=uniform:0:0.1"
    profile = LatencyProfile.parse(spec)
    assert str(profile) == spec
    assert (
        not LatencyProfile.parse("").enabled
        and LatencyProfile.parse(None).sample("search", "k") == 0
    )
    assert profile.sample("fetch", "any") == 0.3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("serch=fixed:1", "unknown tool 'serch'; tools: search, fetch, *"),
        ("search", "expected TOOL=DISTRIBUTION:PARAMS"),
        ("search=gamma:1", "unknown distribution 'gamma'"),
        ("search=fixed:1:2", "fixed takes 1 number(s)"),
        ("search=fixed:soon", "are not all numbers"),
        ("search=fixed:-1", "finite and >= 0"),
        ("search=lognormal:2:1", "needs 0 < MEDIAN < P95"),
        ("search=uniform:2:1", "LOW must not exceed HIGH"),
        ("search=fixed:1,search=fixed:2", "given twice"),
    ],
)
def test_bad_specs_name_the_entry_and_the_problem(spec, message):
    with pytest.raises(LatencySpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LatencyProfile.parse(spec)


def test_bad_env_var_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("DLLMFLOW_TOOL_LATENCY", "search=fixed")
    with pytest.raises(SettingsError, match="DLLMFLOW_TOOL_LATENCY: 'search=fixed': fixed takes 1"):
        load_tool_settings()
    monkeypatch.setenv("DLLMFLOW_TOOL_LATENCY", "search=fixed:0.5")
    assert load_tool_settings().latency.sample("search", "k") == 0.5


def test_lognormal_draws_are_reproducible_and_match_median_and_p95():
    profile = LatencyProfile.parse("search=lognormal:0.8:2.5")
    draws = [profile.sample("search", f"episode-1/step-{i}") for i in range(4000)]
    assert draws == [profile.sample("search", f"episode-1/step-{i}") for i in range(4000)]
    assert statistics.median(draws) == pytest.approx(0.8, rel=0.08)
    assert statistics.quantiles(draws, n=20)[-1] == pytest.approx(2.5, rel=0.12)
    assert profile.sample("fetch", "x") == 0.0  # tools without an entry are not delayed


def test_executor_sleeps_the_sampled_delay_before_answering(monkeypatch):
    from dllmflow.config import load_settings
    from dllmflow.workers.tools import ToolExecutor, ToolResult, executor

    monkeypatch.setattr(executor, "search", lambda *a, **kw: ToolResult([], 3))
    slept: list[float] = []
    run = ToolExecutor(
        load_settings(),
        corpus="c",
        latency=LatencyProfile.parse("search=uniform:0.1:0.9"),
        sleep=slept.append,
    ).run
    first = run({"tool": "search", "args": {"query": "q"}}, key="ep-1:3")
    again = run({"tool": "search", "args": {"query": "q"}}, key="ep-1:3")
    other = run({"tool": "search", "args": {"query": "q"}}, key="ep-1:4")
    assert slept[0] == slept[1] == first.injected_delay_s == again.injected_delay_s
    assert 0.1 <= slept[0] <= 0.9 and other.injected_delay_s != first.injected_delay_s
    assert first.result == [] and first.corpus_version == 3
    assert type(first).from_dict(first.to_dict()) == first


def test_realistic_preset_is_the_production_waterfall():
    profile = LatencyProfile.parse("realistic")
    assert str(profile) == "search=lognormal:0.6:2,fetch=lognormal:0.9:2.5"
    draws = [profile.sample("search", f"k{i}") for i in range(4000)]
    assert statistics.median(draws) == pytest.approx(0.6, rel=0.08)
    assert max(draws) > 3 * statistics.median(draws)  # the long tail
    fetches = [profile.sample("fetch", f"k{i}") for i in range(4000)]
    assert statistics.median(fetches) == pytest.approx(0.9, rel=0.08)


def test_a_real_http_fetch_is_not_delayed(monkeypatch):
    from dllmflow.config import load_settings
    from dllmflow.workers.tools import ToolExecutor, executor
    from dllmflow.workers.tools.base import ToolError
    from dllmflow.workers.tools.settings import load_tool_settings

    def missing(*a, **kw):
        raise ToolError("no such document", corpus_version=1)

    page = {
        "id": "https://example.org/a",
        "title": "a",
        "url": "https://example.org/a",
        "text": "t",
        "page": 0,
        "pages": 1,
    }
    monkeypatch.setattr(executor, "fetch", missing)
    monkeypatch.setattr(executor, "http_fetch", lambda *a, **kw: page)
    slept: list[float] = []
    run = ToolExecutor(
        load_settings(),
        corpus="c",
        tool_settings=load_tool_settings(http_fetch_allow="example.org"),
        latency=LatencyProfile.parse("fetch=fixed:0.9"),
        sleep=slept.append,
    ).run
    web = run({"tool": "fetch", "args": {"id": "https://example.org/a"}}, key="k")
    assert web.source == "http" and web.injected_delay_s == 0.0 and slept == []
    corpus_miss = run({"tool": "fetch", "args": {"id": "doc-1"}}, key="k")
    assert corpus_miss.error and corpus_miss.injected_delay_s == 0.9 and slept == [0.9]
