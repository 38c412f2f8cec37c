"""A small in-memory search/fetch over a corpus, for generating trajectories without a database.

It returns the same shapes as the runtime tools (which use Postgres full-text search):
  search -> [{"id", "title", "url", "snippet"}, ...]
  fetch  -> {"id", "title", "url", "text", "page", "pages"}
Ranking is plain term overlap weighted by inverse document frequency, with title hits counting
double, so results are deterministic and need nothing beyond the standard library. A query word
the corpus never uses is first replaced by its closest corpus word (spelling.py), as the runtime
tool does with pg_trgm. Runtime
episodes use the real tool; this stands in only for training data, tests and offline eval.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from dllmflow.world.spelling import Vocabulary

_WORD = re.compile(r"[a-z0-9]+")
PAGE_CHARS = 1200
SNIPPET_CHARS = 120


def _terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class InMemorySearch:
    def __init__(self, corpus: Sequence[dict[str, Any]], page_chars: int = PAGE_CHARS) -> None:
        self.docs = list(corpus)
        self.by_id = {d["id"]: d for d in self.docs}
        self.page_chars = page_chars
        self._text_terms = [set(_terms(d["text"])) for d in self.docs]
        self._title_terms = [set(_terms(d["title"])) for d in self.docs]
        df: Counter[str] = Counter()
        for text, title in zip(self._text_terms, self._title_terms, strict=True):
            df.update(text | title)
        n = len(self.docs)
        self._idf = {t: math.log(1 + n / c) for t, c in df.items()}
        self._vocabulary = Vocabulary(df, frequency=dict(df))

    def search(self, query: str, k: int = 5) -> list[dict[str, str]]:
        q = list(dict.fromkeys(self._vocabulary.correct(_terms(query))))
        if not q:
            return []
        phrase = " ".join(q)
        scored = []
        for i, d in enumerate(self.docs):
            score = 0.0
            for t in q:
                w = self._idf.get(t, 0.0)
                score += w * ((t in self._text_terms[i]) + 2 * (t in self._title_terms[i]))
            if score <= 0:
                continue
            if " ".join(_terms(d["title"])) == phrase:
                score *= 2  # an exact title match is what a name query is after
            scored.append((-score, i))
        scored.sort()
        return [self._result(self.docs[i], q) for _s, i in scored[:k]]

    def _result(self, doc: dict[str, Any], q: list[str]) -> dict[str, str]:
        return {
            "id": doc["id"],
            "title": doc["title"],
            "url": doc["url"],
            "snippet": snippet(doc["text"], q),
        }

    def fetch(self, doc_id: str, page: int = 0) -> dict[str, Any]:
        doc = self.by_id.get(doc_id)
        if doc is None:
            raise KeyError(f"no document with id {doc_id!r}")
        text = doc["text"]
        pages = max(1, math.ceil(len(text) / self.page_chars))
        if not 0 <= page < pages:
            raise KeyError(f"document {doc_id!r} has pages 0..{pages - 1}, not {page}")
        chunk = text[page * self.page_chars : (page + 1) * self.page_chars]
        return {
            "id": doc["id"],
            "title": doc["title"],
            "url": doc["url"],
            "text": chunk,
            "page": page,
            "pages": pages,
        }


def query_snippet(text: str, query: str) -> str:
    """The snippet shown for ``text`` in the results of ``query`` (runtime tools use it too, so
    the models read at inference exactly what they were trained on)."""
    return snippet(text, _terms(query))


def snippet(text: str, query_terms: list[str], width: int = SNIPPET_CHARS) -> str:
    """The sentence holding the first query term (else the opening), cut to ``width`` chars."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    pick = sentences[0] if sentences else text
    for s in sentences:
        if set(_terms(s)) & set(query_terms):
            pick = s
            break
    return pick if len(pick) <= width else pick[: width - 3].rstrip() + "..."
