"""Spelling tolerance for the search tool: a query word the corpus never uses becomes the corpus
lexeme closest to it, by pg_trgm's trigram similarity, before the query is run.

The in-memory search applies the same rule with the same similarity and threshold
(dllmflow.world.spelling), so a model meets the same corrections offline and at runtime. Here
the corpus's words are its lexemes (corpus_terms, English stems), so a corrected word enters the
query as a stem; a stem is its own stem, so the full-text match is unchanged by that. Without
pg_trgm (a server lacking PostgreSQL contrib; see migration 0006) queries run uncorrected.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

from dllmflow.world.spelling import MIN_SIMILARITY, MIN_WORD_CHARS

_HAS_TRIGRAMS = text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
# `%` is pg_trgm's indexed similarity filter (its own threshold, 0.3 by default, is below ours);
# the closest lexeme wins, ties to the more common one, then the alphabetically first.
_CLOSEST_LEXEME = text(
    """
    SELECT ct.lexeme
    FROM corpus_terms ct,
         (SELECT coalesce(
             (SELECT l FROM unnest(tsvector_to_array(to_tsvector('english', :word))) AS l
              LIMIT 1),
             lower(:word)) AS w) q
    WHERE ct.corpus = :corpus AND ct.lexeme % q.w AND similarity(ct.lexeme, q.w) >= :min
    ORDER BY similarity(ct.lexeme, q.w) DESC, ct.docs DESC, ct.lexeme
    LIMIT 1
    """
)


def corrected_query(conn: Connection, query: str, corpus: str, unknown: list[str]) -> str:
    """``query`` with each of its ``unknown`` words (ones no document of ``corpus`` holds)
    replaced by the closest corpus lexeme, where one is similar enough."""
    words = [w for w in unknown if len(w) >= MIN_WORD_CHARS]
    if not words or conn.execute(_HAS_TRIGRAMS).first() is None:
        return query
    for word in words:
        lexeme = conn.execute(
            _CLOSEST_LEXEME, {"word": word, "corpus": corpus, "min": MIN_SIMILARITY}
        ).scalar()
        if lexeme is not None:
            # A literal replacement: a lexeme's backslashes are not group references.
            query = re.sub(
                rf"\b{re.escape(word)}\b", lexeme.replace("\\", "\\\\"), query, flags=re.I
            )
    return query
