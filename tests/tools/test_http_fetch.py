"""The optional HTTP fetch: off by default, allow-listed domains only, redirects re-checked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dllmflow.workers.tools import ToolError
from dllmflow.workers.tools.http_fetch import host_allowed, html_to_text, http_fetch

PAGE = (
    "<html><head><title>Local  Page</title><style>p{}</style></head><body>"
    "<h1>Heading</h1><p>First paragraph.</p><script>var x = 1;</script><p>Second.</p>"
    "</body></html>"
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/page")
            self.end_headers()
            return
        body = PAGE.encode()
        self.send_response(200 if self.path == "/page" else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_allow_list_matches_domains_and_subdomains():
    assert host_allowed("https://docs.example.org/x", ("example.org",))
    assert host_allowed("https://example.org/x", ("*.example.org",))
    assert not host_allowed("https://badexample.org/x", ("example.org",))
    assert not host_allowed("ftp://example.org/x", ("example.org",))
    assert not host_allowed("https://example.org/x", ())


def test_html_becomes_readable_text():
    assert html_to_text(PAGE) == ("Local Page", "Heading\nFirst paragraph.\nSecond.")


def test_allowed_page_is_fetched_in_the_fetch_shape(server):
    page = http_fetch(f"{server}/page", allow=("127.0.0.1",))
    assert page["title"] == "Local Page" and page["pages"] == 1 and page["page"] == 0
    assert page["text"].startswith("Heading")
    with pytest.raises(ToolError, match="HTTP 404"):
        http_fetch(f"{server}/missing", allow=("127.0.0.1",))


def test_disallowed_domains_and_redirects_are_refused(server):
    with pytest.raises(ToolError, match="not an allowed domain"):
        http_fetch(f"{server}/page", allow=("example.org",))
    with pytest.raises(ToolError, match="redirects to a domain not allowed"):
        http_fetch(f"{server}/away", allow=("127.0.0.1",))


@pytest.mark.integration
def test_executor_falls_back_to_http_only_for_allowed_urls(stack, corpus_name, server):
    from dllmflow.store.corpus import load_documents
    from dllmflow.workers.tools import ToolExecutor, load_tool_settings

    load_documents(stack, [{"id": "d1", "title": "T", "url": "u", "text": "x"}], corpus=corpus_name)
    action = {"tool": "fetch", "args": {"id": f"{server}/page"}}
    closed = load_tool_settings(http_fetch_allow="")
    off = ToolExecutor(stack, corpus=corpus_name, tool_settings=closed).run(action)
    assert off.error.startswith("fetch: no document with id") and off.corpus_version == 1
    on = ToolExecutor(
        stack, corpus=corpus_name, tool_settings=load_tool_settings(http_fetch_allow="127.0.0.1")
    ).run(action)
    assert on.ok and on.source == "http" and on.corpus_version is None
    assert on.result["title"] == "Local Page"
    in_corpus = {"tool": "fetch", "args": {"id": "d1"}}
    assert ToolExecutor(stack, corpus=corpus_name).run(in_corpus).source == "corpus"
