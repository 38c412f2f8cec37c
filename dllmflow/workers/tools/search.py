"""The `search` tool: Postgres full-text search over one corpus.

Ranking has two tiers. First the documents matching the whole query (websearch_to_tsquery: every
term, "quoted phrases", -excluded words), by ts_rank_cd with the title weighted above the body;
then, if that gives fewer than k, documents matching any of the query's informative words, by
the same rank. So a document containing all the terms always comes before one that misses
some, and a query whose words never occur together still returns something. A document whose
title is exactly the query ranks double (a name query wants that entity's own page).

"Informative" keeps the any-word tier fast and meaningful on large corpora: a word found in
COMMON_DOCS documents or more (counted up to that cap, so the count is cheap) is too common to
rank a partial match by, the way "born" or "year" would be in a corpus of biographies. Those
words still count in the all-terms tier, and if every word is that common they are all used.
Everything is read from one snapshot, so the result is a function of the query and the
corpus version.

Snippets come from ts_headline: about SNIPPET_CHARS characters around the best match, with
matched words between « and » (plain characters a model's tokenizer reads like any other).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, text

from dllmflow.config import Settings
from dllmflow.store.corpus import DEFAULT_CORPUS, read_version
from dllmflow.workers.tools.base import ToolResult
from dllmflow.workers.tools.snapshot import clean_text, corpus_snapshot

DEFAULT_K = 5
MAX_K = 50
SNIPPET_CHARS = 120
HIGHLIGHT = ("«", "»")
HEADLINE_SOURCE_CHARS = 20_000  # ts_headline reparses its input; bound that for huge documents
MAX_OR_TERMS = 16
COMMON_DOCS = 5_000
HEADLINE_OPTIONS = (
    f"StartSel={HIGHLIGHT[0]}, StopSel={HIGHLIGHT[1]}, MaxWords=16, MinWords=8, ShortWord=2, "
    'MaxFragments=1, FragmentDelimiter=" ... "'
)

_WORD = re.compile(r"\w+")

# {match} is one of two fixed tsquery expressions below, never user text; user text is only
# ever a bound parameter.
_SEARCH_SQL = """
SELECT h.id, h.title, h.url,
       ts_headline('english', left(d.text, :headline_chars), h.q, :headline_options) AS snippet,
       h.rank
FROM (
    SELECT d.corpus, d.id, d.title, d.url, m.q,
           ts_rank_cd(d.tsv, m.q, 1) * CASE WHEN lower(d.title) = :title THEN 2 ELSE 1 END AS rank
    FROM documents d, (SELECT {match} AS q) m
    WHERE d.corpus = :corpus AND d.tsv @@ m.q AND NOT (d.id = ANY(:exclude))
    ORDER BY rank DESC, d.id
    LIMIT :k
) h
JOIN documents d ON d.corpus = h.corpus AND d.id = h.id
ORDER BY h.rank DESC, h.id
"""
_ALL_TERMS = "websearch_to_tsquery('english', :query)"
_DOC_FREQUENCY_SQL = text(
    """
    SELECT t.term, (
        SELECT count(*) FROM (
            SELECT 1 FROM documents d
            WHERE d.corpus = :corpus AND d.tsv @@ plainto_tsquery('english', t.term)
            LIMIT :cap
        ) capped
    ) AS docs
    FROM unnest(CAST(:terms AS text[])) WITH ORDINALITY AS t(term, position)
    ORDER BY t.position
    """
)


def _any_term_expression(terms: list[str]) -> str:
    return " || ".join(f"plainto_tsquery('english', :t{i})" for i in range(len(terms)))


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


def informative_terms(conn: Connection, terms: list[str], corpus: str) -> list[str]:
    """The terms found in 1..COMMON_DOCS-1 documents; all found terms if each is common."""
    if not terms:
        return []
    rows = conn.execute(
        _DOC_FREQUENCY_SQL, {"corpus": corpus, "terms": terms, "cap": COMMON_DOCS}
    ).all()
    found = [(term, docs) for term, docs in rows if docs > 0]
    rare = [term for term, docs in found if docs < COMMON_DOCS]
    return rare or [term for term, _docs in found]


def _clip_snippet(snippet: str) -> str:
    snippet = " ".join(snippet.split())
    if len(snippet) <= SNIPPET_CHARS:
        return snippet
    cut = snippet[: SNIPPET_CHARS - 3].rstrip()
    if cut.count(HIGHLIGHT[0]) > cut.count(HIGHLIGHT[1]):
        cut += HIGHLIGHT[1]  # never leave a highlight open
    return cut + "..."


def search_in(conn: Connection, query: str, k: int, corpus: str) -> list[dict[str, Any]]:
    """Ranked hits (with ``rank``) inside an open snapshot; see the module docstring."""
    query = clean_text(query)
    base = {
        "corpus": corpus,
        "title": " ".join(query.replace('"', " ").split()).lower(),
        "headline_chars": HEADLINE_SOURCE_CHARS,
        "headline_options": HEADLINE_OPTIONS,
    }
    rows = conn.execute(
        text(_SEARCH_SQL.format(match=_ALL_TERMS)),
        {**base, "query": query, "exclude": [], "k": k},
    ).all()
    hits = [dict(r._mapping) for r in rows]
    terms = informative_terms(conn, or_terms(query), corpus) if len(hits) < k else []
    if terms:
        params = {f"t{i}": t for i, t in enumerate(terms)}
        rows = conn.execute(
            text(_SEARCH_SQL.format(match=_any_term_expression(terms))),
            {**base, **params, "exclude": [h["id"] for h in hits], "k": k - len(hits)},
        ).all()
        hits += [dict(r._mapping) for r in rows]
    for hit in hits:
        hit["snippet"] = _clip_snippet(hit["snippet"] or "")
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
        version = read_version(conn, corpus)
        hits = search_in(conn, query, k, corpus)
    results = [{key: h[key] for key in ("id", "title", "url", "snippet")} for h in hits]
    return ToolResult(results, version)
