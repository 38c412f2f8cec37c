"""The `fetch` tool: one page of a document, by id or by url.

Pages are PAGE_CHARS characters (the same paging as dllmflow.world.local_search, which makes
the training data), cut in Postgres so a 10 MB document never crosses the wire whole.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import text

from dllmflow.config import Settings
from dllmflow.store.corpus import DEFAULT_CORPUS, read_version
from dllmflow.workers.tools.base import ToolError, ToolResult
from dllmflow.workers.tools.snapshot import clean_text, corpus_snapshot
from dllmflow.world.local_search import PAGE_CHARS

# An exact id wins over a document whose url happens to equal the requested id.
_FETCH_SQL = text(
    """
    SELECT id, title, url, chars, substr(text, :start, :length) AS page_text
    FROM documents
    WHERE corpus = :corpus AND (id = :key OR url = :key)
    ORDER BY (id = :key) DESC, id
    LIMIT 1
    """
)


def page_count(chars: int, page_chars: int = PAGE_CHARS) -> int:
    return max(1, math.ceil(chars / page_chars))


def fetch(
    settings: Settings,
    doc_id: str,
    page: int = 0,
    *,
    corpus: str = DEFAULT_CORPUS,
    page_chars: int = PAGE_CHARS,
) -> ToolResult:
    """{"id","title","url","text","page","pages"} for page ``page`` (0-based) of a document.

    ``doc_id`` may be the document's id or its url. Raises ToolError (for the agent) when no
    document matches or the page is out of range.
    """
    key = clean_text(doc_id)
    if page < 0:
        raise ToolError(f"fetch: page must be 0 or more, not {page}")
    with corpus_snapshot(settings) as conn:
        version = read_version(conn, corpus)
        row = conn.execute(
            _FETCH_SQL,
            {"corpus": corpus, "key": key, "start": page * page_chars + 1, "length": page_chars},
        ).one_or_none()
    if row is None:
        raise ToolError(
            f"fetch: no document with id {doc_id!r}; use an id from search results",
            corpus_version=version,
        )
    pages = page_count(row.chars, page_chars)
    if page >= pages:
        raise ToolError(
            f"fetch: document {row.id!r} has pages 0..{pages - 1}, not {page}",
            corpus_version=version,
        )
    value: dict[str, Any] = {
        "id": row.id,
        "title": row.title,
        "url": row.url,
        "text": row.page_text,
        "page": page,
        "pages": pages,
    }
    return ToolResult(value, version)
