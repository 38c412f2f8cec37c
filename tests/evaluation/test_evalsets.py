"""The out-of-distribution eval sets under bench/evalsets: well-formed, answerable, reworded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dllmflow.world.generator import (
    eval_seeds,
    generate_eval_world,
    normalize_answer,
    read_corpus,
    read_questions,
)

ROOT = Path(__file__).resolve().parents[2] / "bench" / "evalsets"
SETS = {"reworded": (298, 60), "prose": (65, 60)}


def load(name: str) -> tuple[list[dict], list[dict]]:
    folder = ROOT / name
    return read_corpus(folder / "corpus.jsonl"), read_questions(folder / "questions.jsonl")


def golds(q: dict) -> list[str]:
    return [q["answer"], *q.get("aliases", [])]


def squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@pytest.mark.parametrize("name", sorted(SETS))
def test_counts_and_unique_ids(name):
    docs, qs = load(name)
    assert (len(docs), len(qs)) == SETS[name]
    assert len({d["id"] for d in docs}) == len(docs)
    assert len({q["id"] for q in qs}) == len(qs)
    assert len({q["question"] for q in qs}) == len(qs)


@pytest.mark.parametrize("name", sorted(SETS))
def test_answers_are_short_and_scorable(name):
    _, qs = load(name)
    for q in qs:
        # An answer that normalizes to nothing (e.g. "-a": the article is stripped) never scores.
        assert all(normalize_answer(g) for g in golds(q)), q["id"]
        assert len(q["answer"].split()) <= 4, q["id"]


def test_prose_answer_in_its_document():
    docs, qs = load("prose")
    by_id = {d["id"]: d for d in docs}
    for q in qs:
        text = by_id[q["doc_id"]]["text"].lower()
        assert any(g.lower() in text for g in golds(q)), (q["id"], q["doc_id"], q["answer"])


def test_prose_documents_sized_and_titled():
    docs, _ = load("prose")
    for d in docs:
        assert 300 <= len(d["text"]) <= 2000, (d["id"], len(d["text"]))
        assert d["title"] and d["url"].startswith("file:///usr/share/"), d["id"]


def test_reworded_questions_differ_from_their_source():
    _, qs = load("reworded")
    for q in qs:
        assert q["question"] != q["source_question"], q["id"]
        assert squash(q["question"]) != squash(q["source_question"]), q["id"]
    assert {len(q["hops"]) for q in qs} == {1, 2, 3}


def test_reworded_corpus_is_held_out_eval_world_7_unchanged():
    docs, qs = load("reworded")
    seed = eval_seeds(8)[7]
    assert seed != eval_seeds(1)[0]  # not eval world 0, which bench/results/eval uses
    assert docs == generate_eval_world(7).documents
    by_id = {d["id"]: d for d in docs}
    for q in qs:
        assert q["source_id"].startswith(f"w{seed}-q"), q["id"]
        assert q["hops"][-1]["value"] == q["answer"], q["id"]
        for hop in q["hops"]:
            assert hop["value"] in by_id[hop["doc_id"]]["text"], (q["id"], hop["doc_id"])
