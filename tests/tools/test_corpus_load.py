"""Loading a JSONL corpus: bad lines reported by number, batches all-or-nothing, versions."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from dllmflow.commands.corpus import app as corpus_app
from dllmflow.config import Settings
from dllmflow.store import corpus as store
from dllmflow.store.db import transaction
from dllmflow.workers.tools.fetch import fetch
from dllmflow.workers.tools.search import search
from tests.tools.conftest import doc

pytestmark = pytest.mark.integration

BIG_CHARS = 10 * 1024 * 1024


def _count(settings: Settings, corpus: str) -> int:
    with transaction(settings) as session:
        query = select(func.count()).where(store.Document.corpus == corpus)
        return session.execute(query).scalar_one()


def assert_counts_exact(settings: Settings, corpus: str) -> None:
    """corpus_terms and the document count agree with the documents actually stored."""
    with transaction(settings) as session:
        kept = dict(
            session.execute(
                text("SELECT lexeme, docs FROM corpus_terms WHERE corpus = :c AND docs <> 0"),
                {"c": corpus},
            ).all()
        )
        actual = dict(
            session.execute(
                text(
                    "SELECT t.lexeme, count(*) FROM documents d, unnest(d.tsv) t"
                    " WHERE d.corpus = :c GROUP BY t.lexeme"
                ),
                {"c": corpus},
            ).all()
        )
        _version, documents = store.read_state(session.connection(), corpus)
    assert kept == actual
    assert documents == _count(settings, corpus)


def _big_text() -> str:
    words = "zebrafinch " + "lorem ipsum dolor sit amet " * (BIG_CHARS // 27)
    return (words + "x" * BIG_CHARS)[: BIG_CHARS - len(" lastpageword")] + " lastpageword"


def mixed_file(write_jsonl):
    return write_jsonl(
        [
            doc("good-1", "The heliotrope archive holds maps."),  # 1
            '{"id": "broken", "title": ',  # 2 bad JSON
            {"id": "no-text", "title": "t", "url": "u"},  # 3 missing field
            doc("good-1", "a second document with a taken id"),  # 4 duplicate id
            doc("big", _big_text(), title="Big Document"),  # 5 10 MB text
            b'{"id": "bad-utf8", "title": "caf\xe9", "url": "u", "text": "t"}',  # 6 invalid UTF-8
            "",  # blank lines are ignored, not errors
            {"id": "num", "title": "t", "url": "u", "text": 42},  # 8 wrong type
            {"id": "empty", "title": "t", "url": "u", "text": "   "},  # 9 empty field
            doc("good-2", "A heliotrope grows in the observatory garden."),  # 10
        ]
    )


def test_good_lines_load_and_each_bad_line_is_reported(stack, corpus_name, write_jsonl):
    path = mixed_file(write_jsonl)
    report = store.load_jsonl(stack, path, corpus=corpus_name, batch_size=2)
    reasons = {bad.line: bad.reason for bad in report.skipped}
    assert set(reasons) == {2, 3, 4, 6, 8, 9}
    assert reasons[2].startswith("bad JSON")
    assert reasons[3] == "missing field 'text'"
    assert reasons[4] == "duplicate id 'good-1' (first on line 1)"
    assert reasons[6].startswith("invalid UTF-8")
    assert reasons[8] == "field 'text' must be a string, not int"
    assert reasons[9] == "field 'text' is empty"
    assert (report.lines, report.loaded, report.changed) == (9, 3, 3)
    assert _count(stack, corpus_name) == 3
    assert_counts_exact(stack, corpus_name)

    hits = search(stack, "heliotrope", corpus=corpus_name).value
    assert {h["id"] for h in hits} == {"good-1", "good-2"}
    # The 10 MB document is stored whole; its index covers a bounded prefix.
    assert [h["id"] for h in search(stack, "zebrafinch", corpus=corpus_name).value] == ["big"]
    assert search(stack, "lastpageword", corpus=corpus_name).value == []
    first = fetch(stack, "big", corpus=corpus_name).value
    last = fetch(stack, "big", first["pages"] - 1, corpus=corpus_name).value
    assert first["pages"] == -(-BIG_CHARS // 1200)
    assert last["text"].endswith(" lastpageword")


def test_oversize_text_is_a_bad_line_under_a_lower_limit(stack, corpus_name, write_jsonl):
    path = mixed_file(write_jsonl)
    report = store.load_jsonl(stack, path, corpus=corpus_name, max_text_chars=1_000_000)
    reasons = {bad.line: bad.reason for bad in report.skipped}
    assert reasons[5] == f"field 'text' has {BIG_CHARS:,} characters; the limit is 1,000,000"
    assert report.loaded == 2


def test_a_line_too_long_to_fit_is_skipped_without_parsing() -> None:
    data = b'{"id": "a", "title": "t", "url": "u", "text": "ok"}\n' + b"x" * 100_000 + b"\n{}\n"
    items = list(store.iter_jsonl(io.BytesIO(data), max_text_chars=100))
    assert isinstance(items[0][0], store.Doc)
    assert str(items[1][0]).startswith("line 2: line is longer than")
    assert str(items[2][0]) == "line 3: missing field 'id'"
    assert items[-1][1] == len(data)


def test_a_failing_batch_is_rolled_back_whole(stack, corpus_name, write_jsonl, monkeypatch):
    path = write_jsonl([doc(f"d{i}", f"document number {i} about rollback") for i in range(10)])
    real_upsert, calls = store._upsert_batch, []

    def upsert_then_crash(session, corpus, docs):
        calls.append(len(docs))
        counts = real_upsert(session, corpus, docs)  # rows written inside the transaction...
        if len(calls) == 2:
            raise RuntimeError("disk on fire")  # ...then the batch dies before its commit
        return counts

    monkeypatch.setattr(store, "_upsert_batch", upsert_then_crash)
    with pytest.raises(store.LoadError, match=r"lines 5-8 failed and was rolled back") as err:
        store.load_jsonl(stack, path, corpus=corpus_name, batch_size=4)
    assert "disk on fire" in str(err.value)
    assert err.value.report.loaded == 4
    assert _count(stack, corpus_name) == 4  # batch 1 only: nothing of batch 2
    assert store.corpus_version(stack, corpus_name) == 1  # the failed batch bumped nothing
    assert_counts_exact(stack, corpus_name)

    monkeypatch.setattr(store, "_upsert_batch", real_upsert)
    report = store.load_jsonl(stack, path, corpus=corpus_name, batch_size=4)
    # Batch 1 is unchanged; batches 2 and 3 each commit (and bump the version) on their own.
    assert (report.loaded, report.changed, report.corpus_version) == (10, 6, 3)
    assert_counts_exact(stack, corpus_name)


def test_version_moves_only_when_documents_change(stack, corpus_name, write_jsonl):
    docs = [doc("a", "alpha text"), doc("b", "beta text")]
    v1 = store.load_documents(stack, docs, corpus=corpus_name).corpus_version
    again = store.load_documents(stack, docs, corpus=corpus_name)
    assert (again.corpus_version, again.changed) == (v1, 0)  # identical reload: same version
    edited = store.load_documents(stack, [doc("b", "beta text, revised")], corpus=corpus_name)
    assert (edited.changed, edited.corpus_version) == (1, v1 + 1)
    assert_counts_exact(stack, corpus_name)
    assert search(stack, "revised", corpus=corpus_name).corpus_version == v1 + 1
    assert store.delete_corpus(stack, corpus_name) == 2
    assert store.corpus_version(stack, corpus_name) == v1 + 2  # never reset, so never reused
    assert_counts_exact(stack, corpus_name)


def test_stats_count_documents_and_characters(stack, corpus_name, monkeypatch):
    monkeypatch.setattr(store, "VACUUM_AFTER_CHANGES", 2)  # a "bulk" load: vacuumed after
    store.load_documents(stack, [doc("a", "x" * 10), doc("b", "y" * 5)], corpus=corpus_name)
    (row,) = store.corpus_stats(stack, corpus_name)
    assert (row.documents, row.total_chars, row.version) == (2, 15, 1)
    assert store.storage_sizes(stack)["fts_index_bytes"] > 0


def test_cli_load_reports_lines_and_exits_1_when_lines_were_skipped(
    stack, corpus_name, write_jsonl
):
    path = write_jsonl([doc("ok", "fine text"), "{not json"])
    runner = CliRunner()
    result = runner.invoke(corpus_app, ["load", str(path), "--corpus", corpus_name, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["loaded"], report["skipped"]) == (1, 1)
    assert report["bad_lines"][0]["line"] == 2
    assert f"{path}:2: bad JSON" in result.stderr.replace("\n", "")

    ok = runner.invoke(corpus_app, ["search", "fine", "--corpus", corpus_name, "--json"])
    assert ok.exit_code == 0, ok.output
    assert [r["id"] for r in json.loads(ok.stdout)["results"]] == ["ok"]
    stats = runner.invoke(corpus_app, ["stats", "--corpus", corpus_name, "--json"])
    assert json.loads(stats.stdout)["corpora"][0]["documents"] == 1

    missing = runner.invoke(corpus_app, ["load", "/nonexistent.jsonl"])
    assert missing.exit_code == 2
    assert "corpus file not found" in missing.stderr


def test_demo_corpus_loads_idempotently(stack):
    first = store.load_demo_corpus(stack, corpus="demo-test")
    again = store.load_demo_corpus(stack, corpus="demo-test")
    assert first.loaded == again.loaded > 100 and not first.skipped
    assert again.changed == 0 and again.corpus_version == first.corpus_version
