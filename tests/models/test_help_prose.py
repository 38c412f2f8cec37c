"""Command-line help as training prose: parsing help screens, excerpts, questions."""

from __future__ import annotations

import random
import re
import sys

import pytest

from dllmflow.agent.actions import parse_turn
from dllmflow.training.agent_data import help_examples
from dllmflow.training.help_prose import (
    collect_help,
    help_commands,
    help_documents,
    help_questions,
    parse_options,
    source_screens,
)
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode

ARGPARSE = """usage: server.py [-h] [--cgi] [-b ADDRESS] [port]

positional arguments:
  port                  bind to this port (default: 8000)

options:
  -h, --help            show this help message and exit
  --cgi                 run as CGI server
  -b ADDRESS, --bind ADDRESS
                        bind to this address (default: all
                        interfaces)
"""
CLICK = """Usage: uvicorn [OPTIONS] APP

Options:
  --host TEXT                     Bind socket to this host.  [default:
                                  127.0.0.1]
  --reload                        Enable auto-reload.
"""
COBRA = """Flags:
  -n, --namespace string   Namespace to create at launch.
      --port int           Port for the frontend gRPC service. (default 7233)
"""


def test_parse_options_of_three_help_styles():
    opts = {o.flags: o for o in parse_options("http.server", ARGPARSE)}
    assert opts[("-b", "--bind")].description == "bind to this address (default: all interfaces)"
    assert opts[("--cgi",)].section == "options"
    assert ("port",) not in opts  # positionals are not options
    click = {o.flags: o for o in parse_options("uvicorn", CLICK)}
    assert click[("--host",)].description == "Bind socket to this host. [default: 127.0.0.1]"
    cobra = {o.flags: o for o in parse_options("temporal", COBRA)}
    assert cobra[("-n", "--namespace")].heading == "-n, --namespace string"
    assert cobra[("--port",)].section == "flags"


def test_documents_use_the_manual_layout_and_questions_answer_from_them():
    docs = help_documents([("http.server", ARGPARSE), ("uvicorn", CLICK)])
    assert docs[0]["title"] == "http.server: options"
    assert "-b ADDRESS, --bind ADDRESS\nbind to this address" in docs[0]["text"]
    qs = help_questions(docs, random.Random(0), per_doc=3)
    assert qs
    for q in qs:
        text = docs[q["doc_index"]]["text"]
        assert re.search(r"(?<![\w-])" + re.escape(q["answer"]) + r"(?![\w-])", text), q
        assert "{p}" in q["question"]  # the program's name is filled in by the noise step


def test_help_screens_come_only_from_python_tools():
    """The system's own tools (grep, tar, ...) are the prose evaluation's topics."""
    for prog, argv in help_commands():
        assert "dllmflow" not in prog
        exe = argv[0]
        assert exe.startswith(sys.executable.rsplit("/", 1)[0]), argv
    names = {p.split()[0] for p, _ in help_commands()}
    assert not names & {"grep", "tar", "gzip", "tarfile", "ls", "sed", "curl"}


@pytest.fixture(scope="module")
def screens():
    return collect_help()


def test_help_examples_answer_the_record_from_its_document(screens):
    eps = help_examples(30, seed=3, screens=screens)
    assert len(eps) == 30
    for record, steps in eps:
        final = parse_turn(steps[-1].turn)
        assert final.valid and final.action.args["answer"] == record["answer"]
        fetched = [parse_turn(s.turn).action.args.get("id") for s in steps if '"fetch"' in s.turn]
        assert record["doc_id"] in fetched


def test_collected_screens_parse_into_options(screens):
    assert len(screens) >= 5, [p for p, _ in screens]
    assert sum(len(parse_options(p, t)) for p, t in screens) >= 100


def test_oracle_over_a_parsed_excerpt():
    docs = help_documents([("http.server", ARGPARSE)])
    corpus = [{"id": "h1", "title": docs[0]["title"], "url": "u", "text": docs[0]["text"]}]
    record = {"id": "q", "question": "http.server flag to bind to an address", "answer": "-b",
              "doc_id": "h1"}  # fmt: skip
    steps = oracle_episode(record, InMemorySearch(corpus))
    assert '"-b ADDRESS, --bind ADDRESS bind to this address' in steps[-2].turn


ARGPARSE_SOURCE = """
import argparse
p = argparse.ArgumentParser()
p.add_argument("-w", "--workers", type=int, default=4, help="worker processes")
p.add_argument("--retries", default=3, help="tries per request (default %(default)s)")
p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
p.add_argument("--hidden", help=argparse.SUPPRESS)
p.add_argument("path", help="the input file")
p.add_argument(NAME, help="a computed flag")
"""
CLICK_SOURCE = """
import click

@click.command()
@click.option("--host", "-H", default="127.0.0.1", help="Address to bind.")
@click.option("--reload/--no-reload", help="Reload on change.")
@click.option("--debug", default=False, help="Log every request.")
def serve_app(host, reload, debug):
    pass
"""


def test_source_screens_rebuild_help_from_option_calls(tmp_path):
    pkg = tmp_path / "toolkit"
    pkg.mkdir()
    (pkg / "cli.py").write_text(ARGPARSE_SOURCE)
    (pkg / "web.py").write_text(CLICK_SOURCE)
    (tmp_path / "gzip.py").write_text(ARGPARSE_SOURCE)  # an evaluation tool's namesake
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text(ARGPARSE_SOURCE)
    screens = dict(source_screens([tmp_path]))
    assert set(screens) == {"python -m toolkit.cli", "toolkit serve-app"}
    opts = {o.flags: o for p, t in screens.items() for o in parse_options(p, t)}
    assert opts[("-w", "--workers")].heading == "-w WORKERS, --workers WORKERS"
    assert opts[("-w", "--workers")].description == "worker processes (default: 4)"
    assert opts[("--retries",)].description == "tries per request (default 3)"
    assert opts[("-q", "--quiet")].heading == "-q, --quiet"
    assert opts[("--host", "-H")].description == "Address to bind. (default: 127.0.0.1)"
    assert opts[("--debug",)].heading == "--debug"  # a boolean default makes a click flag
    # Suppressed, positional, computed and on/off switch options are left out.
    assert {f for flags in opts for f in flags} == {
        "-w", "--workers", "--retries", "-q", "--quiet", "--host", "-H", "--debug"
    }  # fmt: skip
