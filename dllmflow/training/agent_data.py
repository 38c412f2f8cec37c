"""Training trajectories for the research agent that generalize beyond the world's templates.

Two sources, mixed:

* generated worlds (training seeds only): every question is re-phrased from its hops with
  several templates per relation plus surface noise (lowercase, politeness, terse or verbose
  framing, typos in the non-entity words, quotes dropped); about half of the worlds get their
  documents re-rendered with other sentence templates and orders, and some get other document
  id styles, so the model has to read the question and the results and copy what it finds;
* real prose: Python docstrings (stdlib and installed packages) as API documents, with short
  questions a person would ask about them (which function does X, which parameter is Y, what
  is the default of Z, which exception does it raise when ...).

Each episode is the scripted oracle run against an in-memory search over the corpus
(``oracle.oracle_episode``). The CLI writes them as JSONL::

    python -m dllmflow.training.agent_data --world-questions 8000 --prose-questions 4000 \\
        --out episodes.jsonl
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import multiprocessing as mp
import os
import random
import re
import string
import sys
import sysconfig
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dllmflow.agent.prompting import Step
from dllmflow.world.generator import RELATIONS, World, generate_world, train_seeds
from dllmflow.world.local_search import InMemorySearch
from dllmflow.world.oracle import oracle_episode, oracle_turn

from .english import base_form as _base_form
from .english import lower_first as _lower_first
from .english import third_person as _third_person
from .help_prose import collect_help, help_documents, help_questions, source_screens

# ---------------------------------------------------------------------------------------------
# Question phrasing for generated worlds

_HOLE = "\x00"  # stands for the start entity's mention while noise is applied

# Nested noun phrases ("relation of X"); entries starting with "~" (possessives, reduced
# relatives) only wrap the named entity itself ("X's publisher", "the city X is based in").
_NP_ALT: dict[str, list[str]] = {
    "birthplace": [
        "the birthplace of {x}",
        "the city where {x} was born",
        "~the town {x} was born in",
        "~{x}'s birthplace",
        "~{x}'s hometown",
    ],
    "employer": [
        "the organisation that employs {x}",
        "~the organization {x} works for",
        "the employer of {x}",
        "~the place where {x} works",
        "~{x}'s employer",
    ],
    "headquarters": [
        "the city where {x} is headquartered",
        "~the city {x} is based in",
        "the town where {x} has its headquarters",
        "~{x}'s home city",
    ],
    "founder": [
        "the founder of {x}",
        "the person who founded {x}",
        "whoever started {x}",
        "the one who set up {x}",
        "~{x}'s founder",
    ],
    "country": [
        "the country where {x} lies",
        "~the country {x} is in",
        "~the nation {x} belongs to",
        "~{x}'s country",
    ],
    "mayor": [
        "the mayor of {x}",
        "the person who is mayor of {x}",
        "whoever serves as mayor of {x}",
        "~{x}'s mayor",
    ],
    "capital": [
        "the capital of {x}",
        "the capital city of {x}",
        "the city that is the capital of {x}",
        "~{x}'s capital",
    ],
    "author": [
        "the author of {x}",
        "the person who wrote {x}",
        "the writer of {x}",
        "whoever wrote {x}",
        "~{x}'s author",
    ],
    "publisher": [
        "the publisher of {x}",
        "the organisation that published {x}",
        "the house that put out {x}",
        "whoever published {x}",
        "~{x}'s publisher",
    ],
}

_FINAL_ALT: dict[str, list[str]] = {
    "born": [
        "In what year was {x} born?",
        "When was {x} born?",
        "What year was {x} born in?",
        "~What is {x}'s birth year?",
        "{x} was born in which year?",
        "Birth year of {x}?",
    ],
    "field": [
        "In which field does {x} work?",
        "What field is {x} in?",
        "What does {x} do research in?",
        "~What is {x}'s field?",
        "{x} works in what field?",
        "What area of research is {x} in?",
    ],
    "founded": [
        "In what year was {x} founded?",
        "When was {x} founded?",
        "What year was {x} established?",
        "When did {x} get started?",
        "{x} was founded in what year?",
        "Founding year of {x}?",
    ],
    "currency": [
        "What currency is used in {x}?",
        "What money do they use in {x}?",
        "What is the currency of {x}?",
        "{x} uses which currency?",
        "~What's {x}'s currency?",
    ],
    "published": [
        "In what year was {x} published?",
        "What year did {x} come out?",
        "When was {x} published?",
        "When did {x} first appear in print?",
        "{x} came out in which year?",
        "Publication year of {x}?",
    ],
    "birthplace": [
        "In which city was {x} born?",
        "Where was {x} born?",
        "Which town was {x} born in?",
        "~What is {x}'s birthplace?",
        "{x} was born in which city?",
        "What city does {x} come from?",
    ],
    "employer": [
        "Which organisation employs {x}?",
        "Who does {x} work for?",
        "Where does {x} work?",
        "~What is {x}'s employer?",
        "{x} works for which organization?",
    ],
    "headquarters": [
        "In which city is {x} headquartered?",
        "Where is {x} based?",
        "Which town is {x} headquartered in?",
        "~Where are {x}'s headquarters?",
        "What city is {x} based in?",
    ],
    "founder": [
        "Who founded {x}?",
        "Who started {x}?",
        "Who is the founder of {x}?",
        "Who set up {x}?",
        "{x} was founded by whom?",
        "~Who is {x}'s founder?",
    ],
    "country": [
        "In which country is {x}?",
        "Which country is {x} in?",
        "What country does {x} belong to?",
        "{x} is located in which country?",
        "~What is {x}'s country?",
    ],
    "mayor": [
        "Who is the mayor of {x}?",
        "Who serves as mayor of {x}?",
        "~Who's {x}'s mayor?",
        "Who holds the office of mayor in {x}?",
        "{x} has which mayor?",
    ],
    "capital": [
        "What is the capital of {x}?",
        "~What's {x}'s capital?",
        "Which city is the capital of {x}?",
        "Name the capital of {x}.",
        "The capital of {x} is which city?",
    ],
    "author": [
        "Who wrote {x}?",
        "Who is the author of {x}?",
        "Who's the writer of {x}?",
        "Who penned {x}?",
        "{x} was written by whom?",
        "~Who is {x}'s author?",
    ],
    "publisher": [
        "Who published {x}?",
        "Which organisation published {x}?",
        "Who put out {x}?",
        "~What's {x}'s publisher?",
        "{x} was published by whom?",
        "Which house published {x}?",
    ],
}

_PREFIXES = [
    "could you tell me",
    "can you find out",
    "pls",
    "quick q:",
    "I'd like to know",
    "do you know",
    "hey,",
    "question:",
    "I was wondering,",
    "any idea",
    "need to know:",
    "help me out:",
    "please find out",
    "Q:",
]
_SUFFIXES = [" thanks", " thx!", " Thanks in advance.", " ty", " cheers", " (just the answer pls)"]
_FRAMES = [
    "I'm reading about {e} and got curious. ",
    "For a project I'm working on: ",
    "Someone asked me this and I couldn't answer it. ",
    "This came up in a quiz last night. ",
    "I keep forgetting this one. ",
    "My notes on {e} are incomplete. ",
]


def _pick(options: list[str], rng: random.Random, possessive_ok: bool) -> str:
    pool = [o for o in options if possessive_ok or not o.startswith("~")]
    return rng.choice(pool).lstrip("~")


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(["swap", "drop", "double"])
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _add_typos(text: str, rng: random.Random, n: int) -> str:
    """``n`` typos in words of 4+ letters outside the protected holes."""
    spans = [m.span() for m in re.finditer(r"(?<![A-Za-z\x00])[A-Za-z]{4,}(?![A-Za-z])", text)]
    for start, end in sorted(rng.sample(spans, min(n, len(spans))), reverse=True):
        text = text[:start] + _typo(text[start:end], rng) + text[end:]
    return text


def _typo_count(rng: random.Random) -> int:
    return rng.choices([0, 1, 2], weights=[0.6, 0.28, 0.12])[0]


def add_noise(
    text: str, holes: Sequence[str], rng: random.Random, *, frame_entity: str | None = None
) -> str:
    """Surface noise over a question whose protected spans are ``_HOLE`` markers.

    ``holes`` are the texts the markers stand for (in order); they are put back verbatim.
    """
    q = text
    if frame_entity is not None and rng.random() < 0.1:
        frame = rng.choice(_FRAMES)
        if "{e}" in frame:
            frame = frame.replace("{e}", _HOLE)
            holes = [frame_entity, *holes]
        q = frame + q
    elif rng.random() < 0.35:
        prefix = rng.choice(_PREFIXES)
        q = prefix + " " + (q[0].lower() + q[1:] if q[:1] != _HOLE else q)
    r = rng.random()
    if q.endswith("?") and r < 0.25:
        q = q[:-1]
    elif q.endswith("?") and r < 0.3:
        q += "?"
    if rng.random() < 0.12:
        q += rng.choice(_SUFFIXES)
    if rng.random() < 0.3:
        q = q.lower()
    q = _add_typos(q, rng, _typo_count(rng))
    parts = q.split(_HOLE)
    assert len(parts) == len(holes) + 1, (q, holes)
    out = parts[0]
    for hole, part in zip(holes, parts[1:], strict=True):
        out += hole + part
    return out


def phrase_question(hops: Sequence[dict[str, Any]], rng: random.Random) -> str:
    """A new wording of a generated world question, from its hops (the answer is unchanged).

    The start entity (``hops[0]["entity"]``) appears verbatim; works are quoted most times.
    """
    start = hops[0]["entity"]
    is_work = RELATIONS[hops[0]["relation"]][0] == "work"
    mention = f'"{start}"' if is_work and rng.random() < 0.65 else start
    rels = [h["relation"] for h in hops]
    np = _HOLE
    for depth, rel in enumerate(rels[:-1]):
        np = _pick(_NP_ALT[rel], rng, possessive_ok=depth == 0).format(x=np)
    final = _pick(_FINAL_ALT[rels[-1]], rng, possessive_ok=len(rels) == 1)
    q = final.format(x=np)
    if q[:1] != _HOLE:
        q = q[0].upper() + q[1:]
    return add_noise(q, [mention], rng, frame_entity=mention)


# ---------------------------------------------------------------------------------------------
# Document re-rendering and id styles for generated worlds

_PERSON = {
    "field": [
        "{N} is a researcher in {field}.",
        "{N} works in the field of {field}.",
        "A specialist in {field}, {N} has published widely.",
        "The research of {N} focuses on {field}.",
    ],
    "birth": [
        ["{N} was born in {born} in {bp}."],
        ["Born in {bp} in {born}, {N} grew up there."],
        ["{N} was born in {born}.", "The hometown of {N} is {bp}."],
        ["{N} is a native of {bp}.", "{N} was born in the year {born}."],
    ],
    "employer": [
        "{N} works for {emp}.",
        "{N} is employed by {emp}.",
        "{N} holds a position at {emp}.",
        "Currently {N} is on the staff of {emp}.",
    ],
    "extra": [
        ["{N} enjoys {hobby} and has worked with {col}."],
        ["Outside work, {N} enjoys {hobby}.", "{N} has collaborated with {col}."],
        ["{N} often co-authors papers with {col}.", "In spare time {N} takes up {hobby}."],
    ],
}
_ORG = {
    "founding": [
        ["{N} is an organisation founded in {y} by {f}."],
        ["{f} founded {N} in {y}."],
        ["{N} was established in {y}.", "The founder of {N} is {f}."],
        ["Founded by {f} in {y}, {N} has grown steadily."],
    ],
    "hq": [
        "{N} is headquartered in {hq}.",
        "The headquarters of {N} are in {hq}.",
        "{N} is based in {hq}.",
        "The main offices of {N} are located in {hq}.",
    ],
    "partner": [
        "{N} partners with {p}.",
        "{N} has a partnership with {p}.",
        "{N} often collaborates with {p}.",
    ],
}
_CITY = {
    "country": [
        "{N} is a city in {c}.",
        "{N} is located in {c}.",
        "The city of {N} lies in {c}.",
        "{N} is one of the cities of {c}.",
    ],
    "mayor": [
        "The mayor of {N} is {m}.",
        "{m} serves as mayor of {N}.",
        "{N} is governed by mayor {m}.",
        "The current mayor of {N} is {m}.",
    ],
    "river": [
        "{N} lies on the {r} river.",
        "The {r} river runs through {N}.",
        "{N} sits on the banks of the {r} river.",
    ],
}
_COUNTRY = {
    "capital": [
        "{N} is a country whose capital is {c}.",
        "The capital of {N} is {c}.",
        "{c} is the capital city of {N}.",
        "The seat of government of {N} is its capital, {c}.",
    ],
    "currency": [
        "The currency of {N} is the {cur}.",
        "{N} uses the {cur}.",
        "People in {N} pay with the {cur}.",
        "The official currency in {N} is the {cur}.",
    ],
}
_WORK = {
    "author": [
        '"{N}" is {a} {kind} written by {au}.',
        '{au} wrote the {kind} "{N}".',
        '"{N}", {a} {kind}, is by {au}.',
        'The {kind} "{N}" was written by {au}.',
    ],
    "publication": [
        ['"{N}" was published in {y} by {pub}.'],
        ['{pub} published "{N}" in {y}.'],
        ['"{N}" first appeared in {y}.', 'The publisher of "{N}" is {pub}.'],
        ['"{N}" came out in {y} from {pub}.'],
    ],
    "compared": [
        'Critics compare "{N}" with "{c}".',
        'Reviewers often mention "{N}" alongside "{c}".',
        '"{N}" is often compared with "{c}".',
    ],
}


def _choose(slot: Any, rng: random.Random) -> list[str]:
    pick = rng.choice(slot)
    return pick if isinstance(pick, list) else [pick]


def rerender_documents(world: World, rng: random.Random) -> list[dict[str, str]]:
    """The world's documents with other sentence templates and a shuffled sentence order.

    Ids, titles and urls stay; every fact value appears verbatim in its entity's text.
    """
    n = world.name
    docs = []
    for doc in world.documents:
        e = world.entities[doc["id"]]
        a, x = e.attrs, e.extra
        if e.kind == "person":
            fills = dict(
                N=e.name,
                field=a["field"],
                born=a["born"],
                bp=n(a["birthplace"]),
                emp=n(a["employer"]),
                hobby=x["hobby"],
                col=n(x["colleague"]),
            )
            slots = _PERSON
        elif e.kind == "org":
            fills = dict(
                N=e.name,
                y=a["founded"],
                f=n(a["founder"]),
                hq=n(a["headquarters"]),
                p=n(x["partner"]),
            )
            slots = _ORG
        elif e.kind == "city":
            fills = dict(N=e.name, c=n(a["country"]), m=n(a["mayor"]), r=x["river"])
            slots = _CITY
        elif e.kind == "country":
            fills = dict(N=e.name, c=n(a["capital"]), cur=a["currency"])
            slots = _COUNTRY
        else:
            kind = x["kind"]
            fills = dict(
                N=e.name,
                a="an" if kind[0] in "aeiou" else "a",
                kind=kind,
                au=n(a["author"]),
                y=a["published"],
                pub=n(a["publisher"]),
                c=n(x["compared"]),
            )
            slots = _WORK
        groups = [[s.format(**fills) for s in _choose(slot, rng)] for slot in slots.values()]
        first = groups.pop(0) if rng.random() < 0.5 else None
        rng.shuffle(groups)
        if first is not None:
            groups.insert(0, first)
        sentences = [s for g in groups for s in g]
        sentences[0] = sentences[0][0].upper() + sentences[0][1:]
        docs.append({**doc, "text": " ".join(sentences)})
    return docs


_ALNUM = string.ascii_lowercase + string.digits


def _id_maker(style: str, rng: random.Random):
    used: set[str] = set()

    def make(i: int, doc: dict[str, str]) -> str:
        for _ in range(1000):
            if style == "doc":
                new = f"doc-{rng.randrange(1000, 10000)}"
            elif style == "alnum":
                new = rng.choice(string.ascii_lowercase) + "".join(
                    rng.choice(_ALNUM) for _ in range(4)
                )
            elif style == "ent":
                new = f"ent_{i:03d}"
            elif style == "kind":
                kind = doc["url"].rsplit("/", 2)[-2]
                new = f"{kind}-{rng.randrange(100, 1000)}"
            elif style == "upper":
                new = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))
            else:  # "num"
                new = str(rng.randrange(10_000, 100_000))
            if new not in used:
                used.add(new)
                return new
        raise RuntimeError("could not draw a unique id")

    return make


ID_STYLES = ("doc", "alnum", "ent", "kind", "upper", "num")


def remap_ids(
    docs: list[dict[str, str]], questions: list[dict[str, Any]], rng: random.Random, style: str
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Give documents new ids of ``style`` (one of ``ID_STYLES``); hops' doc_id follow."""
    make = _id_maker(style, rng)
    order = list(range(len(docs)))
    rng.shuffle(order)  # "ent_017" must not reveal the original order
    mapping = {docs[j]["id"]: make(i, docs[j]) for i, j in enumerate(order)}
    new_docs = [{**d, "id": mapping[d["id"]]} for d in docs]
    new_qs = []
    for q in questions:
        q = copy.deepcopy(q)
        for h in q.get("hops", []):
            h["doc_id"] = mapping[h["doc_id"]]
        new_qs.append(q)
    return new_docs, new_qs


# ---------------------------------------------------------------------------------------------
# World episodes


# Share of each hop count among a world's training questions. The generator draws 1-4 hops
# (weights 1:2:2:1); a planner trained on that learns to plan three steps for a one-step
# question, so one, two and three hops are drawn equally and four hops seldom.
HOP_WEIGHTS = {1: 3, 2: 3, 3: 3, 4: 1}


def balanced_by_hops(
    questions: Sequence[dict[str, Any]], n: int, rng: random.Random
) -> list[dict[str, Any]]:
    """``n`` of ``questions`` drawn by ``HOP_WEIGHTS`` over their hop counts."""
    by_hops: dict[int, list[dict[str, Any]]] = {}
    for q in questions:
        by_hops.setdefault(len(q["hops"]), []).append(q)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        left = [h for h, qs in by_hops.items() if qs]
        if not left:
            break
        h = rng.choices(left, weights=[HOP_WEIGHTS.get(k, 1) for k in left])[0]
        out.append(by_hops[h].pop(0))
    return out


def _world_job(args: tuple[int, int, int, int, int]) -> list[tuple[dict, list[Step]]]:
    world_seed, questions_per_world, seed, phrasings, planner_phrasings = args
    rng = random.Random(f"agent-data-{seed}-{world_seed}")
    world = generate_world(world_seed, n_questions=max(questions_per_world * 3, 10))
    docs = rerender_documents(world, rng) if rng.random() < 0.5 else list(world.documents)
    questions = balanced_by_hops(world.questions, questions_per_world, rng)
    if rng.random() < 0.5:
        docs, questions = remap_ids(docs, questions, rng, rng.choice(ID_STYLES))
    rng.shuffle(docs)  # search ties must not favour the generation order
    tools = InMemorySearch(docs)
    out = []
    for q in questions:
        seen = {q["question"]}
        for k in range(phrasings):
            text = phrase_question(q["hops"], rng)
            for _ in range(5):
                if text not in seen:
                    break
                text = phrase_question(q["hops"], rng)
            seen.add(text)
            record = {**copy.deepcopy(q), "id": f"{q['id']}-v{k}", "question": text}
            out.append((record, oracle_episode(record, tools)))
        # Planner-only wordings: the plan (how many hops, which relations) is the decision
        # that the rest of the episode follows, and it is one turn in six of an episode.
        for k in range(planner_phrasings):
            text = phrase_question(q["hops"], rng)
            record = {**copy.deepcopy(q), "id": f"{q['id']}-p{k}", "question": text}
            out.append((record, [Step("planner", oracle_turn("planner", record), None)]))
    return out


def _pool_map(fn, jobs: list, workers: int, label: str) -> list:
    results: list = []
    t0 = time.time()
    if workers <= 1:
        it = map(fn, jobs)
    else:
        pool = mp.get_context("fork").Pool(workers)
        it = pool.imap(fn, jobs, chunksize=1)
    for i, r in enumerate(it, 1):
        results.append(r)
        if i % max(1, len(jobs) // 10) == 0 or i == len(jobs):
            print(f"  {label}: {i}/{len(jobs)} ({time.time() - t0:.0f}s)", file=sys.stderr)
    if workers > 1:
        pool.close()
        pool.join()
    return results


def world_examples(
    n_worlds: int,
    questions_per_world: int,
    seed: int,
    phrasings: int = 2,
    workers: int = 1,
    planner_phrasings: int = 0,
) -> list[tuple[dict, list[Step]]]:
    """Oracle episodes over ``n_worlds`` training worlds, ``phrasings`` wordings per question
    (plus ``planner_phrasings`` more wordings whose episode is the planner turn alone)."""
    offset = (seed * 10_007) % (800_000 - n_worlds)
    jobs = [
        (s, questions_per_world, seed, phrasings, planner_phrasings)
        for s in train_seeds(n_worlds, offset)
    ]
    out = []
    for part in _pool_map(_world_job, jobs, workers, "worlds"):
        out.extend(part)
    return out


# ---------------------------------------------------------------------------------------------
# Real prose: Python docstrings


def _source_roots() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    return [r for r in roots if r.is_dir()]


_BANNED = ("/usr/share", "bench/evalsets", "/site-packages/dllmflow", "/work/main")


def _allowed(path: str) -> bool:
    return not any(b in path for b in _BANNED)


def _python_files(rng: random.Random) -> list[tuple[Path, Path]]:
    files = []
    for root in _source_roots():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in ("__pycache__", "test", "tests", "idle_test")
            )
            if not _allowed(dirpath + "/"):
                continue
            for f in sorted(filenames):
                if f.endswith(".py"):
                    files.append((root, Path(dirpath) / f))
    files.sort(key=lambda rf: str(rf[1]))
    rng.shuffle(files)
    return files


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts and parts[0] == "site-packages":
        parts = parts[1:]
    return ".".join(parts)


def _clean_docstring(doc: str) -> str:
    import inspect

    return inspect.cleandoc(doc).strip()


def _signature(node: ast.AST, qualname: str) -> str:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        args = node.args
        if args.args and args.args[0].arg in ("self", "cls"):
            args = copy.copy(args)
            args.args = args.args[1:]
        try:
            sig = ast.unparse(args)
        except Exception:
            sig = "..."
        if len(sig) > 160:
            sig = sig[:157] + "..."
        return f"{qualname}({sig})"
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)[:100]
        return f"class {qualname}({bases})" if bases else f"class {qualname}"
    return f"Module {qualname}"


_DOC_ID_STYLES = ("py", "hex", "api", "alnum")


def _doc_id(style: str, i: int, rng: random.Random) -> str:
    if style == "py":
        return f"py{i:05d}"
    if style == "hex":
        return f"d-{rng.getrandbits(24):06x}"
    if style == "api":
        return f"api_{i}"
    return rng.choice(string.ascii_lowercase) + "".join(rng.choice(_ALNUM) for _ in range(5))


def _distinct_doc_ids(n: int, style: str, rng: random.Random) -> list[str]:
    """``n`` distinct random ids of one style, so fetch ids must be copied from the results."""
    ids: dict[str, None] = {}
    while len(ids) < n:
        ids.setdefault(_doc_id(style, rng.randrange(100_000), rng))
    return list(ids)


def _defaults(node: ast.AST) -> dict[str, str]:
    """Parameter -> default value text, for simple constant defaults of a function node."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return {}
    a = node.args
    pos = a.posonlyargs + a.args
    pairs = list(zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True))
    pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
    out = {}
    for arg, d in pairs:
        if isinstance(d, ast.Constant) and isinstance(d.value, int | float | str | None):
            v = str(d.value)
            if 0 < len(v) <= 20 and "\n" not in v:
                out[arg.arg] = v
    return out


def _fit(sig: str, doc: str, limit: int = 1150) -> str | None:
    """The docstring cut at a paragraph boundary so that signature + docstring fit ``limit``."""
    room = limit - len(sig) - 2
    if len(doc) <= room:
        return doc
    paras = doc.split("\n\n")
    kept: list[str] = []
    for p in paras:
        if len("\n\n".join([*kept, p])) > room:
            break
        kept.append(p)
    return "\n\n".join(kept) if kept else None


def _docs_in_file(item: tuple[Path, Path]) -> list[tuple[str, str, str, str, dict[str, str]]]:
    """(qualname, kind, signature, docstring, defaults) of documented modules, classes and
    functions in one file; docstrings are cleaned and cut to fit a page."""
    root, path = item
    try:
        if path.stat().st_size > 300_000:
            return []
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError, ValueError, RecursionError, MemoryError):
        return []
    module = _module_name(root, path)
    if not module or any(p.startswith("_") for p in module.split(".")[1:]):
        return []
    out = []

    def visit(node: ast.AST, prefix: str, kind: str) -> None:
        raw = ast.get_docstring(node, clean=False)
        if raw:
            sig = _signature(node, prefix)
            doc = _fit(sig, _clean_docstring(raw))
            if doc and "\x00" not in doc and len(sig) + len(doc) + 2 >= 200:
                out.append((prefix, kind, sig, doc, _defaults(node)))
        for child in getattr(node, "body", []):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if child.name.startswith("_"):
                    continue
                if isinstance(child, ast.ClassDef):
                    sub = "class"
                else:
                    sub = "method" if isinstance(node, ast.ClassDef) else "function"
                visit(child, f"{prefix}.{child.name}", sub)

    visit(tree, module, "module")
    return out


def docstring_corpus(max_docs: int, rng: random.Random, workers: int = 1) -> list[dict[str, Any]]:
    """Up to ``max_docs`` API documents made from Python docstrings (stdlib, site-packages).

    Each is {"id", "title", "url", "text"} (text: the signature line, a blank line, the
    docstring) plus private keys "_kind" (module | class | function | method), "_doc" (the
    docstring as shown) and "_defaults" (parameter -> default value text).
    """
    style = rng.choice(_DOC_ID_STYLES)
    docs: list[dict[str, Any]] = []
    seen_first: set[str] = set()
    used_ids: set[str] = set()
    files = _python_files(rng)
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    it = pool.imap(_docs_in_file, files, chunksize=32) if pool else map(_docs_in_file, files)
    try:
        for (_root, path), entries in zip(files, it, strict=False):
            if len(docs) >= max_docs:
                break
            rng.shuffle(entries)
            for qualname, kind, sig, doc, defaults in entries[:12]:
                first = _first_sentence(doc)
                if first is None or first.lower() in seen_first:
                    continue
                seen_first.add(first.lower())
                for _ in range(100):
                    doc_id = _doc_id(style, len(docs), rng)
                    if doc_id not in used_ids:
                        break
                used_ids.add(doc_id)
                docs.append(
                    {
                        "id": doc_id,
                        "title": qualname,
                        "url": f"file://{path}#{qualname}",
                        "text": f"{sig}\n\n{doc}",
                        "_kind": kind,
                        "_doc": doc,
                        "_defaults": defaults,
                    }
                )
                if len(docs) >= max_docs:
                    break
    finally:
        if pool:
            pool.terminate()
    return docs


def public_doc(doc: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


_SENT_END = re.compile(r"(?<=[a-z0-9)\]`'\"])\.(?:\s|$)")


def _first_sentence(doc: str) -> str | None:
    para = doc.split("\n\n", 1)[0]
    para = " ".join(para.split())
    m = _SENT_END.search(para)
    if not m:
        return None
    s = para[: m.start()].strip()
    words = s.split()
    if not 4 <= len(words) <= 28 or any(c in s for c in ">{}|\\=") or s.endswith(":"):
        return None
    if not re.match(r"^[A-Z][a-z]+$", words[0]):
        return None
    return s


_NOT_VERBS = {
    "The", "A", "An", "This", "These", "That", "If", "It", "Its", "In", "For", "When", "Each",
    "All", "Base", "Class", "Helper", "Mixin", "Used", "Internal", "Note", "Deprecated", "Like",
    "Same", "Simple", "Abstract", "Utility", "Utilities", "Some", "One", "Function",
    "Module", "Wrapper", "Convenience", "Private", "Public", "Default", "Generic", "Functions",
    "Tools", "Classes", "Support", "Routines", "Implementation", "Interface", "Constants",
    "Exceptions", "Objects", "Various", "Miscellaneous", "Definitions", "Types", "Common",
    "Core", "Basic", "Exception", "Representation", "Container", "Context", "Object",
}  # fmt: skip


_DANGLING = {
    "a", "an", "the", "to", "of", "from", "is", "are", "for", "with", "in", "and", "or", "if",
    "whether", "by", "on", "at", "into", "that", "which", "as", "not", "be", "its", "this",
}  # fmt: skip
_ARTICLES = ("A", "An", "The", "This", "These")
_CLASS_VERBS = {
    "Represents", "Implements", "Provides", "Manages", "Handles", "Stores", "Holds", "Wraps",
    "Defines", "Creates", "Encapsulates", "Indicates", "Describes", "Contains", "Allows",
    "Generates", "Tracks", "Converts", "Parses", "Builds", "Runs", "Raised", "Signals",
}  # fmt: skip


_DEFAULT_RE = re.compile(
    r"(?:[Dd]efaults? (?:to|is)|[Dd]efault:|[Dd]efault value is|by default)\s+"
    r"[`'\"]*([A-Za-z0-9_.\-]+?)[`'\"]*(?=[\s.,;)]|$)"
)
_RAISES_RE = re.compile(
    r"\b[Rr]aises?\s+(?:an?\s+)?[`:~!.a-z]*?`?([A-Z][A-Za-z]*(?:Error|Exception|Warning|Exit))`?"
    r"\s+(if|when|unless)\s+([^.;:]{8,120})[.;]"
)
_RAISED_RE = re.compile(
    r"`?([A-Z][A-Za-z]*(?:Error|Exception|Warning|Exit))`?\s+is raised\s+(if|when|unless)\s+"
    r"([^.;:]{8,120})[.;]"
)
_GOOGLE_RAISES_RE = re.compile(
    r"Raises:\s*\n\s+([A-Z][A-Za-z]*(?:Error|Exception|Warning|Exit)):\s+"
    r"(?:[Ii]f|[Ww]hen)\s+([^.;:\n]{8,120})"
)


def _params(doc: str) -> dict[str, str]:
    """Parameter name -> first sentence of its description, from the common docstring styles."""
    found: dict[str, str] = {}

    def add(name: str, desc: str) -> None:
        desc = " ".join(desc.split())
        desc = re.split(r"(?<=[a-z0-9)])\.(?:\s|$)", desc)[0].strip().rstrip(".")
        if name not in found and 3 <= len(desc.split()) <= 22 and name.isidentifier():
            found[name] = desc

    for m in re.finditer(r":param\s+(?:[\w\[\], .|]+\s+)?(\w+):\s*(.+(?:\n\s+.+)*)", doc):
        add(m.group(1), m.group(2))
    for m in re.finditer(r"^\s*(\w+)\s+--\s+(.+(?:\n\s{4,}.+)*)", doc, re.M):
        add(m.group(1), m.group(2))
    # numpy: "name : type" then an indented description
    for m in re.finditer(r"^(\w+)\s+:\s+[^\n]+\n((?:[ \t]+\S.*\n?)+)", doc, re.M):
        add(m.group(1), m.group(2))
    # Google: "Args:" block with "name (type): desc" or "name: desc"
    for block in re.finditer(
        r"^\s*(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments):\s*\n"
        r"((?:[ \t]+.+\n?)+)",
        doc,
        re.M,
    ):
        for m in re.finditer(
            r"^[ \t]+\*{0,2}(\w+)(?:\s*\([^)]*\))?:\s+(.+(?:\n[ \t]{6,}.+)*)", block.group(1), re.M
        ):
            add(m.group(1), m.group(2))
    return found


_WHICH_FUNC = [
    "Which function {vp}?",
    "What's the function that {vp}?",
    "which {module} function {vp}?",
    "I need the function that {vp}. What is it called?",
    "Name of the function that {vp}?",
    "What should I call to {inf}?",
    "Is there a function that {vp}? What's its name?",
]
_WHICH_METHOD = [
    "Which method {vp}?",
    "What's the method that {vp}?",
    "Which method of {cls} {vp}?",
    "What method do I call to {inf}?",
]
_WHICH_CLASS = [
    "Which class is {np}?",
    "What's the name of the class that is {np}?",
    "which {module} class is {np}?",
    "Name the class: {np}.",
]
_WHICH_CLASS_VERB = [
    "Which class {vp}?",
    "What class {vp}?",
    "Which {module} class {vp}?",
]
_WHICH_MODULE = [
    "Which module is about {np}?",
    "Which module has {np}?",
    "What Python module has {np}?",
]
_PARAM_Q = [
    "Which parameter of {name} is {desc}?",
    "What's the name of the {name} argument for {desc}?",
    "{name}: which option is {desc}?",
    "In {name}, what argument is {desc}?",
    "Which keyword of {name} do I use for {desc}?",
]
_DEFAULT_Q = [
    "What is the default {p} of {name}?",
    "What does {p} default to in {name}?",
    "If I don't pass {p} to {name}, what value does it get?",
    "Default value of {p} in {name}?",
]
_RAISE_Q = [
    "What exception does {name} raise {cond}?",
    "Which error do I get from {name} {cond}?",
    "{name} raises what {cond}?",
    "What error is raised by {name} {cond}?",
]


def _prose_candidates(doc: dict[str, Any], rng: random.Random) -> list[tuple[str, str, str, list]]:
    """(kind, question template with one hole, answer, [hole text]) for one document."""
    title, kind, raw = doc["title"], doc["_kind"], doc["_doc"]
    parts = title.split(".")
    short = parts[-1]
    module = parts[0]
    name = title if rng.random() < 0.5 or len(parts) < 2 else short
    if kind == "method" and len(parts) >= 3 and rng.random() < 0.5:
        name = f"{parts[-2]}.{short}"
    out = []
    first = _first_sentence(raw)
    if first:
        words = first.split()
        if len(words) > 6 and rng.random() < 0.35:
            # A vaguer question (people rarely quote the whole description): search may miss.
            short = words[: rng.randint(4, 6)]
            while len(short) > 3 and short[-1].lower().strip(",;:") in _DANGLING:
                short = short[:-1]
            if short[-1].lower().strip(",;:") not in _DANGLING:
                first = " ".join(short).rstrip(",;:")
                words = first.split()
        is_verb = words[0] not in _NOT_VERBS and not words[0].endswith(
            ("ed", "ing", "al", "ic", "ly")
        )
        rest = " ".join(words[1:])
        vp = f"{_third_person(words[0])} {rest}" if is_verb else None
        inf = f"{_base_form(words[0])} {rest}" if is_verb else None
        np = _lower_first(first)
        if words[0] in _NOT_VERBS and words[0] not in _ARTICLES:
            np = ("an " if np[0] in "aeio" else "a ") + np
        q = None
        if kind == "function" and vp:
            q = rng.choice(_WHICH_FUNC).format(vp=vp, inf=inf, module=module)
        elif kind == "method" and vp and len(parts) >= 3:
            t = rng.choice(_WHICH_METHOD)
            q = t.format(vp=vp, inf=inf, cls=_HOLE)
            holes = [parts[-2]] if _HOLE in q else []
            if holes:
                out.append(("which", q, title, holes))
                q = None
        elif kind == "class":
            if vp and words[0] in _CLASS_VERBS:
                q = rng.choice(_WHICH_CLASS_VERB).format(vp=vp, module=module)
            elif words[0] in ("A", "An", "The") or np[:2] in ("a ", "an"):
                q = rng.choice(_WHICH_CLASS).format(np=np, module=module)
            else:
                q = f'Which class is described as "{first}"?'
        elif kind == "module" and len(first) < 140 and words[0] not in ("This", "It", "These"):
            q = rng.choice(_WHICH_MODULE).format(np=np)
        if q:
            out.append(("which", q, title, []))
    if kind in ("function", "method", "class"):
        params = _params(raw)
        for p, desc in params.items():
            if p not in doc["text"]:
                continue
            d = _lower_first(desc)
            d = re.sub(r"^(the|a|an)\s", lambda m: m.group(0), d)
            out.append(("param", rng.choice(_PARAM_Q).format(name=_HOLE, desc=d), p, [name]))
        defaults = dict(doc.get("_defaults", {}))
        for p, desc in params.items():
            m = _DEFAULT_RE.search(desc)
            if m and p not in defaults:
                defaults[p] = m.group(1).rstrip(".")
        for p, value in defaults.items():
            if value in doc["text"] and not p.startswith("_"):
                q = rng.choice(_DEFAULT_Q).format(p=p, name=_HOLE)
                out.append(("default", q, value, [name]))
        for rx in (_RAISES_RE, _RAISED_RE):
            for m in rx.finditer(raw):
                exc, word, cond = m.group(1), m.group(2), " ".join(m.group(3).split())
                q = rng.choice(_RAISE_Q).format(name=_HOLE, cond=f"{word} {cond}")
                out.append(("raises", q, exc, [name]))
        for m in _GOOGLE_RAISES_RE.finditer(raw):
            exc, cond = m.group(1), " ".join(m.group(2).split())
            q = rng.choice(_RAISE_Q).format(name=_HOLE, cond=f"if {cond}")
            out.append(("raises", q, exc, [name]))
    return out


_SYNONYMS = {
    "returns": "gives back", "return": "give back", "creates": "makes", "create": "make",
    "computes": "calculates", "compute": "calculate", "calculates": "works out",
    "checks": "tests", "check": "test", "gets": "fetches", "get": "fetch", "sets": "assigns",
    "number": "count", "given": "supplied", "specified": "given", "object": "instance",
    "instance": "object", "list": "sequence", "converts": "turns", "convert": "turn",
    "determines": "figures out", "removes": "deletes", "remove": "delete", "adds": "appends",
    "generates": "produces", "generate": "produce", "whether": "if", "value": "setting",
    "retrieves": "gets", "retrieve": "get", "initializes": "sets up", "initialize": "set up",
}  # fmt: skip


def _paraphrase(text: str, rng: random.Random, p: float) -> str:
    """Swap some common words for synonyms (outside ``_HOLE`` markers)."""

    def swap(m: re.Match) -> str:
        w = m.group(0)
        alt = _SYNONYMS.get(w.lower())
        if alt is None or rng.random() >= p:
            return w
        return alt.capitalize() if w[0].isupper() else alt

    return re.sub(r"[A-Za-z]+", swap, text)


def _rank(tools: InMemorySearch, question: str, doc_id: str, k: int = 10) -> int | None:
    for i, r in enumerate(tools.search(question, k=k)):
        if r["id"] == doc_id:
            return i
    return None


_KIND_WEIGHT = {"which": 1.0, "param": 1.0, "default": 0.8, "raises": 1.2}


def prose_questions(
    docs: Sequence[dict[str, Any]], rng: random.Random, n: int, *, low_share: float = 0.15
) -> list[dict[str, Any]]:
    """Up to ``n`` question records over ``docs`` whose short answers occur in their document.

    Records: {"id", "question", "answer", "aliases"?, "doc_id", "kind", "rank"}; ``rank`` is
    the answering document's place in ``InMemorySearch(docs).search(question)`` (None: not in
    the top 10). Most have rank < 4; about ``low_share`` are ranked lower or missing.
    """
    tools = InMemorySearch([public_doc(d) for d in docs])
    order = list(range(len(docs)))
    rng.shuffle(order)
    good: list[dict[str, Any]] = []
    low: list[dict[str, Any]] = []
    for j in order:
        doc = docs[j]
        if "_kind" not in doc:
            continue
        cands = _prose_candidates(doc, rng)
        if not cands:
            continue
        rng.shuffle(cands)
        cands.sort(key=lambda c: -_KIND_WEIGHT[c[0]] * rng.random())
        for kind, template, answer, holes in cands[:2]:
            if answer.lower() not in (doc["text"] + " " + doc["title"]).lower():
                continue
            q = template[0].upper() + template[1:] if template[:1] != _HOLE else template
            q = _paraphrase(q, rng, rng.choice([0.0, 0.0, 0.5, 1.0]))
            text = add_noise(q, holes, rng)
            rank = _rank(tools, text, doc["id"])
            record: dict[str, Any] = {
                "id": f"prose-{doc['id']}-{kind}",
                "question": text,
                "answer": answer,
            }
            if kind == "which" and "." in answer:
                record["aliases"] = [answer.rsplit(".", 1)[1]]
            record.update(doc_id=doc["id"], kind=kind, rank=rank)
            (good if rank is not None and rank < 4 else low).append(record)
            break
        if len(good) >= n and len(low) >= n * low_share:
            break
    n_low = min(len(low), round(n * low_share))
    picked = good[: n - n_low] + low[:n_low]
    rng.shuffle(picked)
    return picked


def _prose_job(args: tuple[int, int, int]) -> list[tuple[dict, list[Step]]]:
    group, n_questions, seed = args
    docs = _PROSE_DOCS[group]
    rng = random.Random(f"agent-prose-{seed}-{group}")
    style = rng.choice(_DOC_ID_STYLES)
    ids = _distinct_doc_ids(len(docs), style, rng)  # each corpus its own id style
    docs = [{**d, "id": new} for d, new in zip(docs, ids, strict=True)]
    records = prose_questions(docs, rng, n_questions)
    tools = InMemorySearch([public_doc(d) for d in docs])
    return [(r, oracle_episode(r, tools)) for r in records]


_PROSE_DOCS: list[list[dict[str, Any]]] = []


def prose_examples(
    n_docs: int, n_questions: int, seed: int, *, corpus_size: int = 300, workers: int = 1
) -> list[tuple[dict, list[Step]]]:
    """Oracle episodes for ``n_questions`` docstring questions over corpora of ``corpus_size``
    documents (each question's document among many distractors) drawn from ``n_docs``."""
    rng = random.Random(f"agent-prose-{seed}")
    t0 = time.time()
    docs = docstring_corpus(n_docs, rng, workers=workers)
    print(f"  docstring corpus: {len(docs)} documents ({time.time() - t0:.0f}s)", file=sys.stderr)
    rng.shuffle(docs)
    groups = [docs[i : i + corpus_size] for i in range(0, len(docs), corpus_size)]
    groups = [g for g in groups if len(g) >= corpus_size // 2] or groups
    per_group = -(-n_questions // len(groups))
    _PROSE_DOCS[:] = groups
    jobs = [(i, per_group, seed) for i in range(len(groups))]
    out = []
    for part in _pool_map(_prose_job, jobs, workers, "prose corpora"):
        out.extend(part)
    return out[:n_questions]


# ---------------------------------------------------------------------------------------------
# Mix and CLI


def _fill_holes(template: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """``{p}``-style slots -> ``_HOLE`` markers and the texts they stand for, in order."""
    holes: list[str] = []

    def hole(m: re.Match) -> str:
        if m.group(1) not in values:
            return m.group(0)
        holes.append(values[m.group(1)])
        return _HOLE

    return re.sub(r"\{(\w)\}", hole, template), holes


def help_examples(
    n_questions: int,
    seed: int,
    *,
    corpus_size: int = 120,
    max_rounds: int = 40,
    screens: Sequence[tuple[str, str]] | None = None,
) -> list[tuple[dict, list[Step]]]:
    """Oracle episodes for ``n_questions`` questions over command-line help excerpts
    (``help_prose``), each asked of a corpus of ``corpus_size`` excerpts; every round draws
    new id styles, corpora and wordings over the same help screens."""
    rng = random.Random(f"agent-help-{seed}")
    t0 = time.time()
    docs = help_documents((collect_help() + source_screens()) if screens is None else screens)
    print(f"  help excerpts: {len(docs)} ({time.time() - t0:.0f}s)", file=sys.stderr)
    out: list[tuple[dict, list[Step]]] = []
    for _round in range(max_rounds):
        if len(out) >= n_questions or not docs:
            break
        order = list(range(len(docs)))
        rng.shuffle(order)
        style = rng.choice(_DOC_ID_STYLES)
        for start in range(0, len(order), corpus_size):
            group = [docs[i] for i in order[start : start + corpus_size]]
            ids = _distinct_doc_ids(len(group), style, rng)
            public = [
                {"id": doc_id, "title": d["title"], "url": f"cli:{d['title']}", "text": d["text"]}
                for d, doc_id in zip(group, ids, strict=True)
            ]
            tools = InMemorySearch(public)
            for rec in help_questions(group, rng):
                doc = public[rec["doc_index"]]
                template = rec["question"]
                template = template[0].upper() + template[1:] if template[0] != "{" else template
                template = _paraphrase(template, rng, rng.choice([0.0, 0.0, 0.5]))
                text, holes = _fill_holes(template, {"p": rec["prog"], "f": rec.get("flag", "")})
                text = add_noise(text, holes, rng)
                rank = _rank(tools, text, doc["id"])
                if rank is None or rank >= 4:
                    continue  # the oracle never guesses a document the search did not show
                record = {
                    "id": f"help-{doc['id']}-{len(out)}",
                    "question": text,
                    "answer": rec["answer"],
                    "aliases": rec["aliases"],
                    "doc_id": doc["id"],
                    "kind": f"help-{rec['kind']}",
                    "rank": rank,
                }
                out.append((record, oracle_episode(record, tools)))
    rng.shuffle(out)
    return out[:n_questions]


def build_training_episodes(
    n_world_questions: int,
    n_prose_questions: int,
    seed: int = 0,
    *,
    n_help_questions: int = 0,
    questions_per_world: int = 25,
    phrasings: int = 2,
    planner_phrasings: int = 0,
    workers: int = 1,
) -> list[tuple[dict, list[Step]]]:
    """``n_world_questions`` world episodes (phrasings included; planner-only wordings come on
    top), ``n_prose_questions`` docstring episodes and ``n_help_questions`` command-line help
    episodes, shuffled together."""
    per_world = questions_per_world * phrasings
    n_worlds = -(-n_world_questions // per_world) if n_world_questions else 0
    world = (
        world_examples(
            n_worlds,
            questions_per_world,
            seed,
            phrasings,
            workers=workers,
            planner_phrasings=planner_phrasings,
        )
        if n_worlds
        else []
    )
    full = [e for e in world if len(e[1]) > 1][:n_world_questions]
    planner_only = [e for e in world if len(e[1]) == 1]
    prose = []
    if n_prose_questions:
        n_docs = max(600, int(n_prose_questions * 2.2))
        prose = prose_examples(n_docs, n_prose_questions, seed, workers=workers)
    helps = help_examples(n_help_questions, seed) if n_help_questions else []
    episodes = full + planner_only + prose + helps
    random.Random(f"agent-mix-{seed}").shuffle(episodes)
    return episodes


def summarize(episodes: Sequence[tuple[dict, list[Step]]]) -> dict[str, Any]:
    prose = [q for q, _ in episodes if "hops" not in q and not q.get("kind", "").startswith("help")]
    helps = [q for q, _ in episodes if q.get("kind", "").startswith("help")]
    n = len(episodes)
    answered = 0
    for q, steps in episodes:
        final = steps[-1].turn
        answered += json.dumps(q["answer"], ensure_ascii=False)[1:-1] in final
    return {
        "episodes": n,
        "world": n - len(prose) - len(helps),
        "planner_only": sum(1 for _, steps in episodes if len(steps) == 1),
        "prose": len(prose),
        "help": len(helps),
        "prose_share": round(len(prose) / n, 3) if n else 0.0,
        "mean_turns": round(sum(len(s) for _, s in episodes) / n, 2) if n else 0.0,
        "prose_doc_in_top4": sum(1 for q in prose if q.get("rank") is not None and q["rank"] < 4),
        "prose_kinds": {
            k: sum(1 for q in prose if q.get("kind") == k)
            for k in ("which", "param", "default", "raises")
        },
        "final_turn_has_answer": answered,
    }


def adaptation_texts(n_docs: int, seed: int, workers: int = 1) -> list[str]:
    """Plain texts for block-diffusion adaptation: docstring documents and help screens (run
    and rebuilt from source)."""
    rng = random.Random(f"agent-adapt-{seed}")
    texts = [d["text"] for d in docstring_corpus(n_docs, rng, workers=workers)]
    texts += [text for _prog, text in collect_help() + source_screens()]
    rng.shuffle(texts)
    return texts


def _write_jsonl(out: Path, records: Iterable[dict[str, Any]]) -> None:
    """All records or nothing: written beside ``out``, then renamed over it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--world-questions", type=int, default=8000, help="questions over generated worlds"
    )
    ap.add_argument(
        "--prose-questions", type=int, default=4000, help="questions over Python docstrings"
    )
    ap.add_argument(
        "--help-questions", type=int, default=0, help="questions over command-line help screens"
    )
    ap.add_argument(
        "--phrasings", type=int, default=2, help="wordings of each world question (episodes)"
    )
    ap.add_argument(
        "--planner-phrasings",
        type=int,
        default=0,
        help="more wordings of each world question whose episode is the planner turn alone",
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes used"
    )
    ap.add_argument("--out", required=True, help="episodes JSONL, one {question, steps} per line")
    ap.add_argument(
        "--adaptation-out",
        help="also write plain texts for the diffusion half's adaptation phase (docstring "
        "documents and help screens, one {'text'} per line)",
    )
    ap.add_argument(
        "--adaptation-docs",
        type=int,
        default=6000,
        help="docstring documents read for --adaptation-out",
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.adaptation_out:
        texts = adaptation_texts(args.adaptation_docs, args.seed, workers=args.workers)
        _write_jsonl(Path(args.adaptation_out), ({"text": t} for t in texts))
        print(f"  adaptation texts: {len(texts)} -> {args.adaptation_out}", file=sys.stderr)
    episodes = build_training_episodes(
        args.world_questions,
        args.prose_questions,
        args.seed,
        n_help_questions=args.help_questions,
        phrasings=args.phrasings,
        planner_phrasings=args.planner_phrasings,
        workers=args.workers,
    )
    _write_jsonl(
        Path(args.out),
        ({"question": q, "steps": [s.to_dict() for s in steps]} for q, steps in episodes),
    )
    summary = summarize(episodes)
    summary["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
