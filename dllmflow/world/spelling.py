"""Spelling tolerance for search: a query word the corpus never uses becomes its closest word.

Similarity is pg_trgm's: the share of character trigrams two words have in common, each word
padded with two spaces in front and one behind, so the runtime search (Postgres with pg_trgm)
and the in-memory search correct a word the same way. A misspelt or miscopied name
("shaizoror" for "shaizor": 8 of 10 trigrams shared) still finds its page; a word that is merely
absent ("publisher" in a corpus that says "published") may be corrected too, which only adds the
documents using the near word. Short words are left alone: three letters have too few trigrams
to tell a typo from another word.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

MIN_SIMILARITY = 0.45
MIN_WORD_CHARS = 4


def trigrams(word: str) -> set[str]:
    padded = f"  {word.lower()} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def similarity(a: str, b: str) -> float:
    ta, tb = trigrams(a), trigrams(b)
    return len(ta & tb) / len(ta | tb)


class Vocabulary:
    """The words of a corpus, indexed by trigram so a correction scans only words sharing one."""

    def __init__(self, words: Iterable[str], frequency: dict[str, int] | None = None) -> None:
        self.words = set(words)
        self.frequency = frequency or {}
        self._index: dict[str, set[str]] | None = None  # built on the first correction

    def _by_trigram(self) -> dict[str, set[str]]:
        if self._index is None:
            self._index = defaultdict(set)
            for word in self.words:
                for gram in trigrams(word):
                    self._index[gram].add(word)
        return self._index

    def closest(self, word: str, min_similarity: float = MIN_SIMILARITY) -> str | None:
        """The most similar word of the vocabulary, if similar enough; ties go to the more
        frequent word, then the alphabetically first (the result is deterministic)."""
        if len(word) < MIN_WORD_CHARS:
            return None
        index = self._by_trigram()
        candidates = set().union(*(index.get(g, set()) for g in trigrams(word)))
        if not candidates:
            return None
        best = min(candidates, key=lambda c: (-similarity(word, c), -self.frequency.get(c, 0), c))
        return best if similarity(word, best) >= min_similarity else None

    def correct(self, terms: list[str]) -> list[str]:
        """``terms`` with each word the vocabulary lacks replaced by its closest word, if any."""
        return [t if t in self.words else (self.closest(t) or t) for t in terms]
