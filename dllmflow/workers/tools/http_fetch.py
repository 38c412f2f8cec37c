"""Optional fetch of real web pages, off unless DLLMFLOW_HTTP_FETCH_ALLOW names the domains.

A listed domain also allows its subdomains ("example.org" allows "docs.example.org"). Redirects
are followed by hand so each hop is checked against the list. Pages are cut like corpus
documents. Web pages change, so these results carry no corpus version and replay from their
checkpoint only.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from dllmflow.workers.tools.base import ToolError
from dllmflow.workers.tools.fetch import page_count
from dllmflow.world.local_search import PAGE_CHARS

MAX_REDIRECTS = 5
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg"}
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section"}


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def host_allowed(url: str, allow: tuple[str, ...]) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        return False
    return any(host == d or host.endswith("." + d) for d in (a.lstrip("*.") for a in allow))


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, readable text) of an HTML page."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return " ".join("".join(parser.title).split()), "\n".join(line for line in lines if line)


def http_fetch(
    url: str,
    page: int = 0,
    *,
    allow: tuple[str, ...],
    timeout_s: float = 10.0,
    max_bytes: int = 5 * 1024 * 1024,
    page_chars: int = PAGE_CHARS,
) -> dict[str, Any]:
    """Download ``url`` (an allowed domain only) and return one page in fetch's result shape."""
    import httpx

    if not host_allowed(url, allow):
        raise ToolError(f"fetch: {urlsplit(url).hostname or url!r} is not an allowed domain")
    current = url
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        if not host_allowed(current, allow):
                            raise ToolError(f"fetch: {url!r} redirects to a domain not allowed")
                        continue
                    if response.status_code >= 400:
                        raise ToolError(f"fetch: {url!r} answered HTTP {response.status_code}")
                    body = b""
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            break  # keep the start of an oversized page
                    encoding = response.encoding or "utf-8"
                    kind = response.headers.get("content-type", "")
                    break
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
                raise ToolError(f"fetch: could not download {url!r} ({reason})") from None
        else:
            raise ToolError(f"fetch: {url!r} redirects more than {MAX_REDIRECTS} times")
    decoded = body[:max_bytes].decode(encoding, errors="replace")
    title, text = html_to_text(decoded) if "html" in kind or not kind else ("", decoded)
    pages = page_count(len(text), page_chars)
    if page >= pages:
        raise ToolError(f"fetch: {url!r} has pages 0..{pages - 1}, not {page}")
    return {
        "id": url,
        "title": title or url,
        "url": current,
        "text": text[page * page_chars : (page + 1) * page_chars],
        "page": page,
        "pages": pages,
    }
