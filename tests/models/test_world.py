"""The synthetic world: deterministic per seed, well-formed documents and multi-hop questions."""

from __future__ import annotations

import itertools
import json

import pytest

from dllmflow.world.generator import (
    DEMO_SEED,
    EVAL_SEED_BASE,
    answer_matches,
    demo_paths,
    eval_seeds,
    export_world,
    generate_world,
    read_corpus,
    read_questions,
    train_seeds,
    write_world,
)
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.spelling import Vocabulary

SMALL = dict(n_people=30, n_orgs=12, n_cities=10, n_countries=4, n_works=20, n_questions=25)


def test_same_seed_same_world():
    a, b = generate_world(123, **SMALL), generate_world(123, **SMALL)
    assert a.documents == b.documents
    assert a.questions == b.questions


def test_different_seeds_differ():
    a, b = generate_world(123, **SMALL), generate_world(124, **SMALL)
    assert [d["title"] for d in a.documents] != [d["title"] for d in b.documents]


def test_questions_are_multi_hop_and_grounded():
    world = generate_world(5, **SMALL)
    docs = {d["id"]: d for d in world.documents}
    hop_counts = set()
    for q in world.questions:
        hops = q["hops"]
        hop_counts.add(len(hops))
        assert 1 <= len(hops) <= 4
        # Each hop reads a different document, and that document states the hop's value.
        assert len({h["doc_id"] for h in hops}) == len(hops)
        for h in hops:
            assert h["value"] in docs[h["doc_id"]]["text"]
            assert h["entity"] == docs[h["doc_id"]]["title"]
        # Hops chain: the next entity is the previous hop's value; the last value answers.
        for prev, nxt in itertools.pairwise(hops):
            assert nxt["entity"] == prev["value"]
        assert hops[-1]["value"] == q["answer"]
        assert hops[0]["entity"] in q["question"]
    assert hop_counts >= {1, 2, 3}


def test_seed_ranges_are_disjoint():
    assert max(train_seeds(1000)) < EVAL_SEED_BASE <= min(eval_seeds(10))
    assert DEMO_SEED not in set(train_seeds(1000)) | set(eval_seeds(1000))
    with pytest.raises(ValueError):
        train_seeds(EVAL_SEED_BASE)


def test_jsonl_round_trip(tmp_path):
    world = generate_world(9, **SMALL)
    corpus, questions = write_world(world, tmp_path)
    assert read_corpus(corpus) == world.documents
    assert read_questions(questions) == world.questions


def test_readers_name_the_bad_record(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"id": "a", "title": "t", "url": "u", "text": "x"}) + "\n{}\n")
    with pytest.raises(ValueError, match="document 2"):
        read_corpus(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=":1:"):
        read_corpus(path)


def test_shipped_demo_matches_its_seed():
    world = generate_world(DEMO_SEED)
    corpus, questions = demo_paths()
    assert read_corpus(corpus) == world.documents
    assert read_questions(questions) == world.questions
    assert 200 <= len(world.documents) <= 500 and len(world.questions) == 50


def test_search_finds_named_entities_and_pages_fetches():
    world = generate_world(11, **SMALL)
    tools = InMemorySearch(world.documents, page_chars=64)
    for doc in world.documents[:20]:
        results = tools.search(doc["title"], k=5)
        assert results[0]["id"] == doc["id"]
        assert set(results[0]) == {"id", "title", "url", "snippet"}
    doc = world.documents[0]
    first = tools.fetch(doc["id"])
    assert first["pages"] > 1 and first["page"] == 0 and first["text"] == doc["text"][:64]
    text = "".join(tools.fetch(doc["id"], p)["text"] for p in range(first["pages"]))
    assert text == doc["text"]
    with pytest.raises(KeyError):
        tools.fetch("missing")


def test_answer_matching_normalizes():
    rec = {"answer": "The Silent Harbor", "aliases": ["Silent Harbor"]}
    assert answer_matches('"the silent harbor"', rec)
    assert answer_matches("Silent Harbor.", rec)
    assert not answer_matches("Silent", rec)
    assert not answer_matches("", rec)


def test_export_world_splits(tmp_path):
    corpus, questions = export_world(
        tmp_path / "e",
        split="eval",
        index=2,
        n_questions=5,
        **{k: v for k, v in SMALL.items() if k != "n_questions"},
    )
    qs = read_questions(questions)
    assert len(qs) == 5 and qs[0]["id"].startswith(f"w{eval_seeds(3)[2]}-")
    assert (
        read_corpus(corpus)
        == generate_world(
            eval_seeds(3)[2],
            n_questions=5,
            **{k: v for k, v in SMALL.items() if k != "n_questions"},
        ).documents
    )
    with pytest.raises(ValueError, match="split"):
        export_world(tmp_path, split="test")


def test_search_corrects_a_word_the_corpus_never_uses():
    world = generate_world(11, **SMALL)
    tools = InMemorySearch(world.documents)
    doc = next(d for d in world.documents if len(d["title"].split()[-1]) >= 7)
    name = doc["title"]
    garbled = name[:-1] + name[-2:]  # the last letters doubled, as a diffusion copy can
    assert tools.search(garbled)[0]["id"] == doc["id"]
    assert tools.search("qqqqxzzv") == []


def test_vocabulary_prefers_the_closest_then_the_commoner_word():
    vocabulary = Vocabulary(["velorin", "velorix", "harbour"], frequency={"velorix": 5})
    assert vocabulary.closest("velori") == "velorix"  # a tie with velorin; velorix is commoner
    assert Vocabulary(["velorin", "velorix"]).closest("velori") == "velorin"  # then a-z
    assert vocabulary.closest("harbourr") == "harbour"
    assert vocabulary.closest("vel") is None  # too short to correct
    assert vocabulary.correct(["velorin", "harbourr", "qqqq"]) == ["velorin", "harbour", "qqqq"]
