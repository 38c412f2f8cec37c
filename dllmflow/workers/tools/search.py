"""The `search` tool: Postgres full-text search over one corpus.

Ranking has two tiers. First the documents matching the whole query (websearch_to_tsquery: every
term, "quoted phrases", -excluded words), by ts_rank_cd with the title weighted above the body;
then, if that gives fewer than k, documents matching any of the query's informative words, by
the same rank. So a document containing all the terms always comes before one that misses
some, and a query whose words never occur together still returns something. A document whose
title is exactly the query ranks double (a name query wants that entity's own page). Before
either tier, a word no document holds is replaced by the closest corpus word (spelling.py), so a
misspelt or miscopied name still finds its page.

"Informative" keeps the any-word tier fast and meaningful on large corpora: a word held by
common_threshold(n) of the corpus's n documents or more (COMMON_FRACTION of them, at least
COMMON_MIN_DOCS and at most COMMON_MAX_DOCS) is too common to rank a partial match by, the way
"born" would be in a corpus of biographies; the counts come from corpus_terms, one index lookup
per word. Common words still count in the all-terms tier, and in the any-word tier they still
add to the rank of the documents the informative words found; if every word is common, the
rarest one alone finds the documents. Everything is read from one snapshot, so the result is a
function of the query and the corpus version.

Snippets are rendered by the same function as the in-memory search that generated the training
trajectories (local_search.query_snippet: the first sentence holding a query word, clipped to
SNIPPET_CHARS), so a model reads at inference exactly the kind of snippet it was trained on; an
earlier ts_headline rendering with «highlights» cut the AR model's accuracy from 13/16 to 2/16.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, text

from dllmflow.config import Settings
from dllmflow.store.corpus import DEFAULT_CORPUS, read_state
from dllmflow.workers.tools.base import ToolResult
from dllmflow.workers.tools.snapshot import clean_text, corpus_snapshot
from dllmflow.workers.tools.spelling import corrected_query
from dllmflow.world.local_search import query_snippet

DEFAULT_K = 5
MAX_K = 50
SNIPPET_SOURCE_CHARS = 20_000  # snippets are cut from this prefix of huge documents
MAX_OR_TERMS = 16
COMMON_FRACTION = 0.05
COMMON_MIN_DOCS = 20
COMMON_MAX_DOCS = 1_000  # also bounds the any-word tier's cost: rows ranked per word

_WORD = re.compile(r"\w+")

# {match} and {rank} are tsquery expressions built below from fixed text and parameter names,
# never from user text; user text is only ever a bound parameter.
_SEARCH_SQL = """
SELECT h.id, h.title, h.url,
       left(d.text, :snippet_chars) AS body,
       h.rank
FROM (
    SELECT d.corpus, d.id, d.title, d.url, m.r,
           ts_rank_cd(d.tsv, m.r, 1) * CASE WHEN lower(d.title) = :title THEN 2 ELSE 1 END AS rank
    FROM documents d, (SELECT {match} AS q, {rank} AS r) m
    WHERE d.corpus = :corpus AND d.tsv @@ m.q AND NOT (d.id = ANY(:exclude))
    ORDER BY rank DESC, d.id
    LIMIT :k
) h
JOIN documents d ON d.corpus = h.corpus AND d.id = h.id
ORDER BY h.rank DESC, h.id
"""
_ALL_TERMS = "websearch_to_tsquery('english', :query)"
# Documents per word: the fewest of its lexemes' counts (a word like "co_op" makes two);
# NULL for a word with no lexeme (a stop word), 0 for one the corpus never uses.
_DOC_FREQUENCY_SQL = text(
    """
    SELECT w.word, (
        SELECT min(coalesce(ct.docs, 0))
        FROM unnest(tsvector_to_array(to_tsvector('english', w.word))) AS l(lexeme)
        LEFT JOIN corpus_terms ct ON ct.corpus = :corpus AND ct.lexeme = l.lexeme
    ) AS docs
    FROM unnest(CAST(:words AS text[])) WITH ORDINALITY AS w(word, position)
    ORDER BY w.position
    """
)


def _any_term_expression(terms: list[str], words: list[str]) -> str:
    """OR of ``terms``, each named by its position in ``words`` (parameters :t0, :t1...)."""
    return " || ".join(f"plainto_tsquery('english', :t{words.index(t)})" for t in terms)


def or_terms(query: str) -> list[str]:
    """The query's words for the any-term tier: excluded (-word) words and 'or' dropped."""
    terms: list[str] = []
    for match in _WORD.finditer(query):
        word = match.group().lower()
        excluded = match.start() > 0 and query[match.start() - 1] == "-"
        if word == "or" or excluded or word in terms:
            continue
        terms.append(word)
    return terms[:MAX_OR_TERMS]


def common_threshold(corpus_docs: int) -> int:
    """Documents a word may be in before it is too common for the any-word tier."""
    return max(COMMON_MIN_DOCS, min(COMMON_MAX_DOCS, int(COMMON_FRACTION * corpus_docs)))


def word_frequencies(
    conn: Connection, words: list[str], corpus: str
) -> list[tuple[str, int | None]]:
    """(word, documents holding it) per word, in order; None for a stop word."""
    if not words:
        return []
    rows = conn.execute(_DOC_FREQUENCY_SQL, {"corpus": corpus, "words": words}).all()
    return [(word, docs) for word, docs in rows]


def informative_terms(
    frequencies: list[tuple[str, int | None]], corpus_docs: int
) -> tuple[list[str], list[str]]:
    """(terms that select documents, terms that rank them) for the any-word tier.

    Selecting: the terms in fewer than common_threshold documents, else the rarest one.
    Ranking: every term the corpus has.
    """
    found = [(term, docs) for term, docs in frequencies if docs]
    limit = common_threshold(corpus_docs)
    rare = [term for term, docs in found if docs < limit]
    if not rare and found:
        rare = [min(found, key=lambda row: row[1])[0]]
    return rare, [term for term, _docs in found]


def search_in(
    conn: Connection, query: str, k: int, corpus: str, corpus_docs: int
) -> list[dict[str, Any]]:
    """Ranked hits (with ``rank``) inside an open snapshot; see the module docstring."""
    query = clean_text(query)
    words = or_terms(query)
    frequencies = word_frequencies(conn, words, corpus)
    unknown = [word for word, docs in frequencies if docs == 0]
    if unknown:
        corrected = corrected_query(conn, query, corpus, unknown)
        if corrected != query:
            query, words = corrected, or_terms(corrected)
            frequencies = word_frequencies(conn, words, corpus)
    base = {
        "corpus": corpus,
        "title": " ".join(query.replace('"', " ").split()).lower(),
        "snippet_chars": SNIPPET_SOURCE_CHARS,
    }
    rows = conn.execute(
        text(_SEARCH_SQL.format(match=_ALL_TERMS, rank=_ALL_TERMS)),
        {**base, "query": query, "exclude": [], "k": k},
    ).all()
    hits = [dict(r._mapping) for r in rows]
    select: list[str] = []
    # A one-word query's any-word tier is its all-words tier again: nothing more to find.
    if len(hits) < k and len(words) > 1:
        select, rank = informative_terms(frequencies, corpus_docs)
    if select:
        sql = _SEARCH_SQL.format(
            match=_any_term_expression(select, words), rank=_any_term_expression(rank, words)
        )
        params = {f"t{i}": word for i, word in enumerate(words)}
        rows = conn.execute(
            text(sql), {**base, **params, "exclude": [h["id"] for h in hits], "k": k - len(hits)}
        ).all()
        hits += [dict(r._mapping) for r in rows]
    for hit in hits:
        hit["snippet"] = query_snippet(hit.pop("body") or "", query)
    return hits


def search(
    settings: Settings, query: str, k: int = DEFAULT_K, *, corpus: str = DEFAULT_CORPUS
) -> ToolResult:
    """Top-k documents for ``query`` as [{"id","title","url","snippet"}], with the corpus version.

    The same (query, k, corpus, version) always gives the same list.
    """
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K} (got {k})")
    with corpus_snapshot(settings) as conn:
        version, corpus_docs = read_state(conn, corpus)
        hits = search_in(conn, query, k, corpus, corpus_docs)
    results = [{key: h[key] for key in ("id", "title", "url", "snippet")} for h in hits]
    return ToolResult(results, version)
