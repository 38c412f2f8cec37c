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
