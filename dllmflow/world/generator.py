"""A seeded synthetic research world: entities, the corpus that describes them, multi-hop questions.

A world holds countries, cities, organisations, people and works, linked by relations (a person's
employer, an organisation's headquarters, a work's author...). Each entity is rendered as one
corpus document, and questions chain 1-4 relations so the answer needs facts from as many
documents (BrowseComp-like: "In what year was the founder of the publisher of "X" born?").

Formats (JSONL, one object per line; any corpus/questions in these shapes work with the rest of
dllmflow, generated or not):
  corpus    {"id", "title", "url", "text"}
  questions {"id", "question", "answer", "aliases"?, "hops"?}
"hops" is optional ground truth for the oracle policy only: one entry per document to read,
{"entity", "doc_id", "relation", "value", "step"} (search ``entity``, fetch ``doc_id``, read
``relation`` -> ``value``; ``step`` is the plan line for that hop).

Everything is a pure function of the seed. Training uses ``train_seeds``; evaluation uses
``eval_seeds``, which never overlap them; the shipped demo world is ``DEMO_SEED``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Seed ranges: training worlds draw from [TRAIN_SEED_BASE, EVAL_SEED_BASE), held-out evaluation
# worlds from [EVAL_SEED_BASE, ...). The demo world's seed is outside both.
TRAIN_SEED_BASE = 10_000
EVAL_SEED_BASE = 900_000
DEMO_SEED = 7

_ONSETS = [
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st",
    "t", "tr", "v", "z", "th", "sh",
]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "y"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "nd", "x"]
_ORG_KINDS = ["Institute", "Press", "Laboratories", "Foundation", "Society", "Works", "Academy"]
_CITY_ENDS = ["", "", "burg", "ford", "holm", "mouth", "ville", "stad", "port"]
_FIELDS = [
    "astronomy", "botany", "chemistry", "economics", "geology", "history", "linguistics",
    "mathematics", "medicine", "architecture", "music", "philosophy",
]  # fmt: skip
_WORK_KINDS = ["novel", "study", "atlas", "memoir", "treatise", "play", "survey"]
_ADJECTIVES = [
    "Silent", "Hidden", "Last", "Northern", "Quiet", "Broken", "Golden", "Distant", "Second",
    "Burning", "Lost", "Patient", "Restless", "Winter", "Painted", "Hollow", "Bright", "Iron",
]  # fmt: skip
_NOUNS = [
    "Harbor", "Garden", "Archive", "Orchard", "Lantern", "River", "Engine", "Atlas", "Mirror",
    "Bridge", "Tower", "Compass", "Meadow", "Signal", "Voyage", "Theorem", "Census", "Island",
]  # fmt: skip
_CURRENCIES = ["crown", "mark", "florin", "dinar", "thaler", "ducat", "real", "sol"]
_HOBBIES = ["chess", "sailing", "beekeeping", "rowing", "pottery", "cartography", "gardening"]

# Relation -> (source kind, target kind or "value"). Entity-valued relations can be chained.
RELATIONS: dict[str, tuple[str, str]] = {
    "birthplace": ("person", "city"),
    "employer": ("person", "org"),
    "born": ("person", "value"),
    "field": ("person", "value"),
    "headquarters": ("org", "city"),
    "founder": ("org", "person"),
    "founded": ("org", "value"),
    "country": ("city", "country"),
    "mayor": ("city", "person"),
    "capital": ("country", "city"),
    "currency": ("country", "value"),
    "author": ("work", "person"),
    "publisher": ("work", "org"),
    "published": ("work", "value"),
}
_KIND_WORD = {
    "person": "person",
    "org": "organisation",
    "city": "city",
    "country": "country",
    "work": "work",
}
# Noun phrase for "relation of X" when the relation is not the last one asked.
_NP = {
    "birthplace": "the birthplace of {x}",
    "employer": "the organisation that employs {x}",
    "headquarters": "the city where {x} is headquartered",
    "founder": "the founder of {x}",
    "country": "the country where {x} lies",
    "mayor": "the mayor of {x}",
    "capital": "the capital of {x}",
    "author": "the author of {x}",
    "publisher": "the publisher of {x}",
}
# Final question for a chain that ends in this relation.
_FINAL = {
    "born": "In what year was {x} born?",
    "field": "In which field does {x} work?",
    "founded": "In what year was {x} founded?",
    "currency": "What currency is used in {x}?",
    "published": "In what year was {x} published?",
    "birthplace": "In which city was {x} born?",
    "employer": "Which organisation employs {x}?",
    "headquarters": "In which city is {x} headquartered?",
    "founder": "Who founded {x}?",
    "country": "In which country is {x}?",
    "mayor": "Who is the mayor of {x}?",
    "capital": "What is the capital of {x}?",
    "author": "Who wrote {x}?",
    "publisher": "Who published {x}?",
}
# Plan line for one hop: what to read from the current document.
_STEP = {
    "birthplace": "find where {x} was born",
    "employer": "find the organisation that employs {x}",
    "born": "find the year {x} was born",
    "field": "find the field of {x}",
    "headquarters": "find where {x} is headquartered",
    "founder": "find who founded {x}",
    "founded": "find the year {x} was founded",
    "country": "find the country of {x}",
    "mayor": "find the mayor of {x}",
    "capital": "find the capital of {x}",
    "currency": "find the currency of {x}",
    "author": "find the author of {x}",
    "publisher": "find the publisher of {x}",
    "published": "find the year {x} was published",
}


@dataclass
class Entity:
    id: str
    kind: str  # person | org | city | country | work
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)  # relation -> entity id or value
    extra: dict[str, Any] = field(default_factory=dict)  # filler facts (not asked about)


@dataclass
class World:
    seed: int
    entities: dict[str, Entity]
    documents: list[dict[str, str]]
    questions: list[dict[str, Any]]

    def name(self, entity_id: str) -> str:
        return self.entities[entity_id].name


class _Names:
    """Unique pronounceable names from one RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        parts = [
            self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
            for _ in range(syllables)
        ]
        return "".join(parts).capitalize()

    def unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("could not draw a unique name; the world is too large for its names")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _value_text(value: Any) -> str:
    return str(value)


def generate_world(
    seed: int,
    *,
    n_people: int = 120,
    n_orgs: int = 50,
    n_cities: int = 40,
    n_countries: int = 8,
    n_works: int = 80,
    n_questions: int = 50,
) -> World:
    """Build a world deterministically from ``seed`` (same seed, same world, byte for byte)."""
    rng = random.Random(seed)
    names = _Names(rng)
    ents: dict[str, Entity] = {}

    def add(prefix: str, kind: str, i: int, name: str) -> Entity:
        e = Entity(id=f"{prefix}{i:03d}", kind=kind, name=name)
        ents[e.id] = e
        return e

    countries = [
        add("n", "country", i, names.unique(lambda: names.word(rng.choice([2, 3])) + "ia"))
        for i in range(n_countries)
    ]
    cities = [
        add(
            "c",
            "city",
            i,
            names.unique(lambda: names.word(rng.choice([1, 2])) + rng.choice(_CITY_ENDS)),
        )
        for i in range(n_cities)
    ]
    orgs = [
        add(
            "o",
            "org",
            i,
            names.unique(lambda: f"{names.word(rng.choice([1, 2]))} {rng.choice(_ORG_KINDS)}"),
        )
        for i in range(n_orgs)
    ]
    people = [
        add(
            "p",
            "person",
            i,
            names.unique(lambda: f"{names.word(rng.choice([1, 2]))} {names.word(2)}"),
        )
        for i in range(n_people)
    ]
    works = [
        add(
            "w",
            "work",
            i,
            names.unique(
                lambda: (
                    f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
                    + rng.choice(["", "", f" of {names.word(2)}"])
                )
            ),
        )
        for i in range(n_works)
    ]

    for i, c in enumerate(countries):
        c.attrs["capital"] = cities[i % len(cities)].id
        c.attrs["currency"] = f"{names.word(1).lower()} {rng.choice(_CURRENCIES)}"
    for i, c in enumerate(cities):
        # Capitals lie in their own country; other cities anywhere.
        c.attrs["country"] = countries[i].id if i < len(countries) else rng.choice(countries).id
        c.attrs["mayor"] = rng.choice(people).id
        c.extra["river"] = names.word(2)
    for o in orgs:
        o.attrs["founded"] = rng.randint(1800, 2015)
        o.attrs["founder"] = rng.choice(people).id
        o.attrs["headquarters"] = rng.choice(cities).id
        o.extra["partner"] = rng.choice(orgs).id
    for p in people:
        p.attrs["born"] = rng.randint(1900, 2000)
        p.attrs["birthplace"] = rng.choice(cities).id
        p.attrs["employer"] = rng.choice(orgs).id
        p.attrs["field"] = rng.choice(_FIELDS)
        p.extra["hobby"] = rng.choice(_HOBBIES)
        p.extra["colleague"] = rng.choice(people).id
    for w in works:
        w.attrs["author"] = rng.choice(people).id
        w.attrs["publisher"] = rng.choice(orgs).id
        w.attrs["published"] = rng.randint(1850, 2020)
        w.extra["kind"] = rng.choice(_WORK_KINDS)
        w.extra["compared"] = rng.choice(works).id

    world = World(seed=seed, entities=ents, documents=[], questions=[])
    world.documents = [_render_document(world, e) for e in ents.values()]
    world.questions = _make_questions(world, rng, n_questions)
    return world


def _render_document(world: World, e: Entity) -> dict[str, str]:
    n = world.name
    a, x = e.attrs, e.extra
    if e.kind == "person":
        text = (
            f"{e.name} is a researcher in {a['field']}. {e.name} was born in {a['born']} in "
            f"{n(a['birthplace'])}. {e.name} works for {n(a['employer'])}. {e.name} enjoys "
            f"{x['hobby']} and has worked with {n(x['colleague'])}."
        )
    elif e.kind == "org":
        text = (
            f"{e.name} is an organisation founded in {a['founded']} by {n(a['founder'])}. "
            f"{e.name} is headquartered in {n(a['headquarters'])}. It partners with "
            f"{n(x['partner'])}."
        )
    elif e.kind == "city":
        text = (
            f"{e.name} is a city in {n(a['country'])}. The mayor of {e.name} is "
            f"{n(a['mayor'])}. {e.name} lies on the {x['river']} river."
        )
    elif e.kind == "country":
        text = (
            f"{e.name} is a country whose capital is {n(a['capital'])}. The currency of "
            f"{e.name} is the {a['currency']}."
        )
    else:  # work
        text = (
            f'"{e.name}" is {_article(x["kind"])} {x["kind"]} written by {n(a["author"])}. '
            f"It was published in {a['published']} by {n(a['publisher'])}. Critics compare it with "
            f'"{n(x["compared"])}".'
        )
    slug = e.name.lower().replace(" ", "-")
    return {
        "id": e.id,
        "title": e.name,
        "url": f"https://world{world.seed}.example.org/{e.kind}/{slug}",
        "text": text,
    }


def _mention(e: Entity) -> str:
    """How an entity is named in questions and plans (works in quotes)."""
    return f'"{e.name}"' if e.kind == "work" else e.name


def _make_questions(world: World, rng: random.Random, n_questions: int) -> list[dict[str, Any]]:
    ents = list(world.entities.values())
    by_kind: dict[str, list[str]] = {}
    for rel, (src, _dst) in RELATIONS.items():
        by_kind.setdefault(src, []).append(rel)
    questions: list[dict[str, Any]] = []
    seen: set[str] = set()
    attempts = 0
    while len(questions) < n_questions and attempts < n_questions * 50:
        attempts += 1
        n_hops = rng.choice([1, 2, 2, 3, 3, 4])
        start = rng.choice(ents)
        chain: list[tuple[Entity, str]] = []  # (entity read, relation)
        cur, visited, ok = start, {start.id}, True
        for h in range(n_hops):
            last = h == n_hops - 1
            rels = [
                r
                for r in by_kind[cur.kind]
                if (RELATIONS[r][1] != "value" or last)
                and (RELATIONS[r][1] == "value" or world.entities[cur.attrs[r]].id not in visited)
            ]
            if not rels:
                ok = False
                break
            rel = rng.choice(rels)
            chain.append((cur, rel))
            if RELATIONS[rel][1] != "value":
                cur = world.entities[cur.attrs[rel]]
                visited.add(cur.id)
        if not ok:
            continue
        last_ent, last_rel = chain[-1]
        raw = last_ent.attrs[last_rel]
        answer = world.name(raw) if RELATIONS[last_rel][1] != "value" else _value_text(raw)
        # Noun phrase for the entity read at the last hop, nested from the start entity.
        np = _mention(start)
        for _ent, rel in chain[:-1]:
            np = _NP[rel].format(x=np)
        question = _FINAL[last_rel].format(x=np)
        if question in seen:
            continue
        seen.add(question)
        hops = []
        for h, (ent, rel) in enumerate(chain):
            subject = _mention(ent) if h == 0 else f"that {_KIND_WORD[ent.kind]}"
            value = ent.attrs[rel]
            hops.append(
                {
                    "entity": ent.name,
                    "doc_id": ent.id,
                    "relation": rel,
                    "value": world.name(value) if RELATIONS[rel][1] != "value" else str(value),
                    "step": _STEP[rel].format(x=subject),
                }
            )
        record: dict[str, Any] = {
            "id": f"w{world.seed}-q{len(questions):03d}",
            "question": question,
            "answer": answer,
            "hops": hops,
        }
        if answer.startswith("The "):
            record["aliases"] = [answer[4:]]
        questions.append(record)
    return questions


def train_seeds(n: int, offset: int = 0) -> list[int]:
    """Seeds of training worlds; disjoint from ``eval_seeds`` and ``DEMO_SEED``."""
    if TRAIN_SEED_BASE + offset + n > EVAL_SEED_BASE:
        raise ValueError(f"at most {EVAL_SEED_BASE - TRAIN_SEED_BASE} training worlds")
    return [TRAIN_SEED_BASE + offset + i for i in range(n)]


def eval_seeds(n: int, offset: int = 0) -> list[int]:
    """Seeds of held-out evaluation worlds (never used for training)."""
    return [EVAL_SEED_BASE + offset + i for i in range(n)]


def generate_train_worlds(n: int, **sizes: int) -> Iterator[World]:
    for seed in train_seeds(n):
        yield generate_world(seed, **sizes)


def generate_eval_world(index: int = 0, **sizes: int) -> World:
    return generate_world(eval_seeds(1, offset=index)[0], **sizes)


# ---------------------------------------------------------------------------------------------
# JSONL I/O


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    records = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return records


def read_corpus(path: str | Path) -> list[dict[str, str]]:
    """Read a corpus JSONL; every record needs id, title, url and text (strings)."""
    docs = read_jsonl(path)
    for i, d in enumerate(docs, 1):
        missing = [k for k in ("id", "title", "url", "text") if not isinstance(d.get(k), str)]
        if missing:
            raise ValueError(f"{path}: document {i} lacks string field(s) {', '.join(missing)}")
    return docs


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """Read a questions JSONL; every record needs id, question and answer (strings)."""
    qs = read_jsonl(path)
    for i, q in enumerate(qs, 1):
        missing = [k for k in ("id", "question", "answer") if not isinstance(q.get(k), str)]
        if missing:
            raise ValueError(f"{path}: question {i} lacks string field(s) {', '.join(missing)}")
    return qs


def write_world(world: World, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``corpus.jsonl`` and ``questions.jsonl`` under ``out_dir``; returns both paths."""
    out = Path(out_dir)
    corpus, questions = out / "corpus.jsonl", out / "questions.jsonl"
    write_jsonl(corpus, world.documents)
    write_jsonl(questions, world.questions)
    return corpus, questions


def export_world(
    out_dir: str | Path,
    *,
    split: str = "eval",
    index: int = 0,
    seed: int | None = None,
    n_questions: int = 50,
    **sizes: int,
) -> tuple[Path, Path]:
    """Write one world's corpus.jsonl and questions.jsonl (the `dllmflow world` command).

    split: "eval" (held-out seeds), "train" (training seeds) or "demo"; ``index`` picks the
    world within the split; an explicit ``seed`` overrides both.
    """
    if seed is None:
        if split == "eval":
            seed = eval_seeds(1, offset=index)[0]
        elif split == "train":
            seed = train_seeds(1, offset=index)[0]
        elif split == "demo":
            seed = DEMO_SEED
        else:
            raise ValueError(f"split must be 'eval', 'train' or 'demo', got {split!r}")
    return write_world(generate_world(seed, n_questions=n_questions, **sizes), out_dir)


DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def demo_paths() -> tuple[Path, Path]:
    """The shipped demo world (seed ``DEMO_SEED``): (corpus.jsonl, questions.jsonl)."""
    return DATA_DIR / "demo" / "corpus.jsonl", DATA_DIR / "demo" / "questions.jsonl"


def write_demo(out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Regenerate the demo world (298 documents, 50 questions) from ``DEMO_SEED``."""
    return write_world(generate_world(DEMO_SEED), out_dir or DATA_DIR / "demo")


def normalize_answer(text: str) -> str:
    """Lowercase, strip quotes, punctuation and a leading article, collapse spaces."""
    t = text.lower().strip()
    t = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in t)
    words = t.split()
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def answer_matches(prediction: str, record: dict[str, Any]) -> bool:
    """True when the prediction names the gold answer or one of its aliases."""
    pred = normalize_answer(prediction)
    if not pred:
        return False
    golds = [record["answer"], *record.get("aliases", [])]
    return any(pred == normalize_answer(g) for g in golds)
