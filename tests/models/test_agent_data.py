"""Agent training data: re-phrased world questions, re-rendered worlds, docstring prose."""

from __future__ import annotations

import random

import pytest

from dllmflow.agent.actions import parse_turn
from dllmflow.training.agent_data import (
    HOP_WEIGHTS,
    ID_STYLES,
    balanced_by_hops,
    build_training_episodes,
    docstring_corpus,
    phrase_question,
    prose_examples,
    prose_questions,
    public_doc,
    remap_ids,
    rerender_documents,
    world_examples,
)
from dllmflow.world.generator import RELATIONS, generate_world, train_seeds
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode

SMALL = dict(n_people=30, n_orgs=12, n_cities=10, n_countries=4, n_works=20, n_questions=20)


def _final_answer(steps):
    turn = parse_turn(steps[-1].turn)
    assert turn.valid, steps[-1].turn
    return turn.action.args["answer"]


def test_phrasings_differ_and_keep_the_entity():
    rng = random.Random(0)
    for seed in train_seeds(3):
        world = generate_world(seed, **SMALL)
        for q in world.questions:
            texts = {phrase_question(q["hops"], rng) for _ in range(6)}
            assert len(texts - {q["question"]}) >= 3
            for text in texts:
                assert q["hops"][0]["entity"] in text


def test_rerendered_documents_keep_the_facts():
    world = generate_world(train_seeds(1)[0], **SMALL)
    docs = rerender_documents(world, random.Random(1))
    by_id = {d["id"]: d for d in docs}
    assert [d["id"] for d in docs] == [d["id"] for d in world.documents]
    assert sum(a["text"] != b["text"] for a, b in zip(docs, world.documents, strict=True)) > 10
    for e in world.entities.values():
        text = by_id[e.id]["text"]
        assert e.name in text
        for rel, value in e.attrs.items():
            shown = world.name(value) if RELATIONS[rel][1] != "value" else str(value)
            assert shown in text, (rel, shown, text)


@pytest.mark.parametrize("style", ID_STYLES)
def test_remapped_ids_are_consistent(style):
    world = generate_world(train_seeds(1, offset=5)[0], **SMALL)
    rng = random.Random(2)
    docs, questions = remap_ids(rerender_documents(world, rng), world.questions, rng, style)
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    assert not set(ids) & {d["id"] for d in world.documents}
    tools = InMemorySearch(docs)
    for q in questions:
        assert all(h["doc_id"] in tools.by_id for h in q["hops"])
        steps = oracle_episode(q, tools)
        assert _final_answer(steps) == q["answer"]
        seeker = next(parse_turn(s.turn) for s in reversed(steps) if s.role == "seeker")
        assert seeker.action.args["sources"] == [h["doc_id"] for h in q["hops"]]


def test_world_examples_reach_the_answer():
    examples = world_examples(2, 10, seed=3)
    assert len(examples) == 40
    for record, steps in examples:
        assert record["hops"][0]["entity"] in record["question"]
        assert _final_answer(steps) == record["answer"]


@pytest.fixture(scope="module")
def prose_docs():
    return docstring_corpus(400, random.Random(0))


def test_prose_documents_are_docstrings_only(prose_docs):
    assert len(prose_docs) == 400
    ids = [d["id"] for d in prose_docs]
    assert len(set(ids)) == len(ids)
    for d in prose_docs:
        assert d["url"].startswith("file://")
        assert "/usr/share" not in d["url"] and "evalsets" not in d["url"]
        assert "/bench/" not in d["url"] and "dllmflow" not in d["url"]
        assert 200 <= len(d["text"]) <= 1200
        assert set(public_doc(d)) == {"id", "title", "url", "text"}


def test_prose_answers_occur_in_their_documents(prose_docs):
    questions = prose_questions(prose_docs[:300], random.Random(4), 120)
    assert len(questions) >= 60
    by_id = {d["id"]: d for d in prose_docs}
    top = 0
    for q in questions:
        doc = by_id[q["doc_id"]]
        assert q["answer"].lower() in (doc["text"] + doc["title"]).lower()
        assert q["question"] and q["question"] != q["answer"]
        top += q["rank"] is not None and q["rank"] < 4
    assert top >= 0.75 * len(questions)


def test_prose_examples_answer_the_record():
    examples = prose_examples(400, 30, seed=1)
    assert len(examples) == 30
    for record, steps in examples:
        assert "hops" not in record
        assert _final_answer(steps) == record["answer"]


def test_determinism_under_a_seed():
    a = build_training_episodes(40, 10, seed=5)
    b = build_training_episodes(40, 10, seed=5)
    assert [(q, [s.to_dict() for s in st]) for q, st in a] == [
        (q, [s.to_dict() for s in st]) for q, st in b
    ]
    assert sum("hops" in q for q, _ in a) == 40
    c = build_training_episodes(40, 10, seed=6)
    assert [q["question"] for q, _ in a] != [q["question"] for q, _ in c]


def test_world_questions_are_balanced_over_hop_counts():
    """One, two and three hops equally (the generator's own mix makes three-step plans the
    default); the planner-only wordings are planner turns that plan and search the entity."""
    world = generate_world(train_seeds(1)[0], n_questions=300)
    picked = balanced_by_hops(world.questions, 120, random.Random(0))
    counts = {h: sum(1 for q in picked if len(q["hops"]) == h) for h in HOP_WEIGHTS}
    assert len(picked) == 120
    assert all(25 <= counts[h] <= 55 for h in (1, 2, 3)), counts
    assert counts[4] < min(counts[1], counts[2], counts[3]), counts
    eps = world_examples(1, 10, seed=0, phrasings=1, planner_phrasings=2)
    planner_only = [steps for _q, steps in eps if len(steps) == 1]
    assert len(planner_only) == 20
    for (step,) in planner_only:
        turn = parse_turn(step.turn)
        assert step.role == "planner" and turn.valid and turn.action.tool == "search"
