"""Committed reports record repository-relative paths, not the producing machine's."""

from __future__ import annotations

from dllmflow.evaluation.paths import portable_command, portable_config, portable_path
from dllmflow.evaluation.sweep import render_sweep


def test_paths_inside_the_root_become_relative_and_normalized(tmp_path):
    root = str(tmp_path)
    assert portable_path(f"{root}/bench/a/../b/q.jsonl", root) == "bench/b/q.jsonl"
    assert portable_path("/elsewhere/q.jsonl", root) == "/elsewhere/q.jsonl"
    assert portable_path(f"{root}x/q.jsonl", root) == f"{root}x/q.jsonl"  # not inside root


def test_commands_and_configs(tmp_path):
    root = str(tmp_path)
    cmd = f"dllmflow eval --questions {root}/b/../q.jsonl --out '{root}/my runs' --tau 0.9"
    assert (
        portable_command(cmd, root) == "dllmflow eval --questions q.jsonl --out 'my runs' --tau 0.9"
    )
    config = portable_config({"questions": f"{root}/q.jsonl", "tau": 0.9}, root)
    assert config == {"questions": "q.jsonl", "tau": 0.9}


def test_sweep_report_has_no_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"name": "s", "questions": f"{tmp_path}/w/q.jsonl", "policies": ["diffusion"]}
    text = render_sweep([], config, f"dllmflow eval sweep --questions {tmp_path}/w/q.jsonl")
    assert str(tmp_path) not in text and "`w/q.jsonl`" in text
