"""search and fetch against Postgres: ranking, fallback, snippets, paging, hostile queries."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from dllmflow.store import corpus as store
from dllmflow.store.db import get_engine
from dllmflow.workers.tools import CorpusTools, ToolError
from dllmflow.workers.tools import search as search_module
from dllmflow.workers.tools import spelling as spelling_module
from dllmflow.workers.tools.fetch import fetch
from dllmflow.workers.tools.search import search
from dllmflow.world.local_search import PAGE_CHARS, SNIPPET_CHARS, InMemorySearch
from dllmflow.world.spelling import similarity
from tests.tools.conftest import doc

pytestmark = pytest.mark.integration

RANKING_DOCS = [
    doc("all-terms", "The quantum garden sits beside the old observatory on the hill."),
    # Denser in two of the three terms, so an any-term ranking would put it first.
    doc("two-terms", "Quantum garden. " * 30, title="Quantum Garden Quantum Garden"),
    doc("one-term", "An observatory, an observatory and another observatory."),
    doc("unrelated", "Nothing here mentions any of those words at all."),
    doc("in-title", "A short note.", title="Heliograph"),
    doc("in-body", "This long note mentions a heliograph once, among many other words."),
]


@pytest.fixture
def ranked(stack, corpus_name):
    store.load_documents(stack, RANKING_DOCS, corpus=corpus_name)
    return corpus_name


def ids(result) -> list[str]:
    return [hit["id"] for hit in result.value]


def test_document_with_every_query_term_ranks_first(stack, ranked):
    result = search(stack, "quantum garden observatory", k=5, corpus=ranked)
    assert ids(result)[0] == "all-terms"
    assert set(ids(result)) == {"all-terms", "two-terms", "one-term"}  # then partial matches
    assert result.corpus_version == 1


def test_any_term_fallback_when_no_document_has_every_term(stack, ranked):
    assert ids(search(stack, "observatory xylophonist", corpus=ranked))[:2] == [
        "one-term",
        "all-terms",
    ]
    assert search(stack, "xylophonist zeppelin", corpus=ranked).value == []


def test_title_outranks_body(stack, ranked):
    assert ids(search(stack, "heliograph", corpus=ranked)) == ["in-title", "in-body"]


def test_exact_title_beats_longer_titles_for_a_name_query(stack, corpus_name):
    docs = [
        doc("longer", "The Silent Harbor of Vel is a novel.", title="The Silent Harbor of Vel"),
        doc("exact", "The Silent Harbor, a study written long ago.", title="The Silent Harbor"),
    ]
    store.load_documents(stack, docs, corpus=corpus_name)
    for query in ("The Silent Harbor", '"The Silent Harbor"'):
        assert ids(search(stack, query, corpus=corpus_name))[0] == "exact"


def test_any_term_tier_skips_words_too_common_to_rank_by(stack, corpus_name, monkeypatch):
    monkeypatch.setattr(search_module, "COMMON_MIN_DOCS", 3)  # 5% of 7 documents is less
    docs = [doc(f"c{i}", f"born in a city number {i}") for i in range(5)]
    docs.append(doc("rare", "the zeppelin was never born"))  # would tie on "born" alone
    docs.append(doc("rarer", "a zeppelin hangar"))
    store.load_documents(stack, docs, corpus=corpus_name)
    # No document has every word; "born" (6 of 7 documents) is common, so "zeppelin" ranks.
    assert set(ids(search(stack, "born zeppelin hovercraft", k=5, corpus=corpus_name))) == {
        "rare",
        "rarer",
    }
    # Only common words: the rarest one ("city", 5 documents) is used rather than none.
    result = search(stack, "born city hovercraft", k=10, corpus=corpus_name)
    assert ids(result) == [f"c{i}" for i in range(5)]


SPELLING_DOCS = [
    doc("shaizor", "Shaizor is a port city on the coast.", title="Shaizor"),
    doc("rugyrville", "Rugyrville elected a new mayor.", title="Rugyrville"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [("shaizoror", "shaizor"), ("Shaizr", "shaizor"), ("the mayor of Rugyrvile", "rugyrville")],
)
def test_a_misspelt_name_finds_its_page_as_in_memory(stack, corpus_name, query, expected):
    store.load_documents(stack, SPELLING_DOCS, corpus=corpus_name)
    assert ids(search(stack, query, corpus=corpus_name))[0] == expected
    assert InMemorySearch(SPELLING_DOCS).search(query)[0]["id"] == expected


def test_a_word_like_no_corpus_word_is_not_corrected(stack, corpus_name, monkeypatch):
    store.load_documents(stack, SPELLING_DOCS, corpus=corpus_name)
    assert search(stack, "xylophonist", corpus=corpus_name).value == []
    # Without pg_trgm the query runs as written.
    monkeypatch.setattr(spelling_module, "_HAS_TRIGRAMS", text("SELECT 1 WHERE false"))
    assert search(stack, "shaizoror", corpus=corpus_name).value == []


def test_trigram_similarity_is_pg_trgm_s(stack):
    pairs = [("shaizoror", "shaizor"), ("rugyrvil", "rugyrvill"), ("publisher", "published")]
    with get_engine(stack).connect() as conn:
        for a, b in pairs:
            expected = conn.execute(text("SELECT similarity(:a, :b)"), {"a": a, "b": b}).scalar()
            assert similarity(a, b) == pytest.approx(expected, abs=1e-6)


def test_results_have_the_in_memory_shape_and_the_same_snippets(stack, ranked):
    """Models are trained on the in-memory search's snippets; the runtime tool must match."""
    hits = search(stack, "observatory", k=3, corpus=ranked).value
    memory = InMemorySearch(RANKING_DOCS)
    reference = memory.search("observatory", k=3)
    assert [set(h) for h in hits] == [set(r) for r in reference]
    for hit in hits:
        assert len(hit["snippet"]) <= SNIPPET_CHARS
        assert "observatory" in hit["snippet"].lower()
        expected = next(r for r in memory.search("observatory", k=10) if r["id"] == hit["id"])
        assert hit["snippet"] == expected["snippet"]


def test_k_limits_results(stack, ranked):
    assert (
        len(search(stack, "quantum garden observatory heliograph", k=2, corpus=ranked).value) == 2
    )


def test_fetch_pages_like_the_in_memory_search(stack, corpus_name):
    docs = [doc("long", "".join(f"sentence {i:04d}. " for i in range(300))), doc("short", "hi")]
    store.load_documents(stack, docs, corpus=corpus_name)
    reference = InMemorySearch(docs)
    pages = reference.fetch("long")["pages"]
    assert pages == -(-len(docs[0]["text"]) // PAGE_CHARS) > 1
    for page in range(pages):
        assert fetch(stack, "long", page, corpus=corpus_name).value == reference.fetch("long", page)
    assert fetch(stack, "short", corpus=corpus_name).value == reference.fetch("short")
    with pytest.raises(ToolError, match=rf"'long' has pages 0..{pages - 1}, not {pages}"):
        fetch(stack, "long", pages, corpus=corpus_name)
    with pytest.raises(ToolError, match="no document with id 'nope'") as err:
        fetch(stack, "nope", corpus=corpus_name)
    assert err.value.corpus_version == 1


def test_fetch_by_url_and_the_episode_tools_adapter(stack, ranked):
    by_url = fetch(stack, "https://corpus.example.org/in-title", corpus=ranked).value
    assert by_url["id"] == "in-title"
    tools = CorpusTools(stack, ranked)
    assert tools.search("heliograph", k=1)[0]["id"] == "in-title"
    with pytest.raises(KeyError, match="no document"):
        tools.fetch("missing")


HOSTILE = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "'; DROP TABLE documents; --",
            '" OR 1=1 --',
            "quantum' OR '1'='1",
            "garden & !observatory | (",
            "):* <-> !!! &&",
            "\\",
            "''''",
            "$1 $$ $$",
            "\x00quantum",
            "\ud800 garden",
            "-quantum -garden",
            "or or or",
            '"quantum garden"',
        ]
    ),
)


@hyp_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=HOSTILE, k=st.integers(1, 20))
def test_hostile_queries_return_safe_results(stack, ranked, query, k):
    result = search(stack, query, k=k, corpus=ranked)
    known = {d["id"] for d in RANKING_DOCS}
    assert len(result.value) <= k
    assert {hit["id"] for hit in result.value} <= known
    for hit in result.value:
        assert set(hit) == {"id", "title", "url", "snippet"}
    with pytest.raises(ToolError):
        fetch(stack, query or "x", corpus=ranked)


def test_schema_survives_the_hostile_queries(stack, ranked):
    assert "documents" in inspect(get_engine(stack)).get_table_names()
    assert ids(search(stack, "heliograph", corpus=ranked))[0] == "in-title"
