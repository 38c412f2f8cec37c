"""Benchmark: the `search` tool's latency (p50/p95) on a generated 100K-document corpus.

    python bench/search.py                 # starts its own Postgres in a temp dir, then stops it
    DLLMFLOW_POSTGRES_PORT=... python bench/search.py   # or use a running one (any DLLMFLOW_*
                                                        # database setting), migrated first

The corpus is one large synthetic world (dllmflow.world.generator), and the queries are what the
oracle agent sends: entity names, "quoted" names and whole questions (which rarely match every
word, so they exercise the any-term fallback). Each query runs through the tool function
itself (pooled connection, snapshot, version read, ranking, snippets), against two baselines
in the same run on the same queries (every --baseline-every'th one; they are slow):
  ilike     every word ILIKE-matched against title or text: a sequential scan, no index
  memory    dllmflow.world.local_search.InMemorySearch, the training data's Python search
Results go to stdout and bench/results/search.json (with the exact command).

Only Postgres is started (not Temporal/Ray): the other servers would only add CPU noise here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from dllmflow.config import Settings, load_settings
from dllmflow.store import corpus as store
from dllmflow.store.db import get_engine
from dllmflow.store.migrate import upgrade
from dllmflow.workers.tools.fetch import fetch
from dllmflow.workers.tools.search import or_terms, search
from dllmflow.world.generator import generate_world
from dllmflow.world.local_search import InMemorySearch

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"
CORPUS = "bench-world"

_ILIKE_SQL = """
SELECT id, title, url FROM documents
WHERE corpus = :corpus AND {conditions}
ORDER BY {title_hits} DESC, id
LIMIT :k
"""


def world_sizes(docs: int) -> dict[str, int]:
    """Entity counts summing to ``docs``, in the demo world's proportions."""
    countries = max(8, docs // 1000)
    cities = max(40, docs * 79 // 1000)
    orgs = max(50, docs * 12 // 100)
    works = max(80, docs * 30 // 100)
    people = docs - countries - cities - orgs - works
    return {
        "n_people": people,
        "n_orgs": orgs,
        "n_cities": cities,
        "n_countries": countries,
        "n_works": works,
    }


def make_queries(world: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """Oracle-shaped queries, each with the document an entity query should find."""
    rng = random.Random(seed)
    hops = [hop for q in world.questions for hop in q["hops"]]
    queries = []
    for i in range(n):
        roll = i % 10
        if roll < 5:
            hop = rng.choice(hops)
            queries.append({"kind": "entity", "query": hop["entity"], "target": hop["doc_id"]})
        elif roll < 7:
            hop = rng.choice(hops)
            quoted = f'"{hop["entity"]}"'
            queries.append({"kind": "quoted", "query": quoted, "target": hop["doc_id"]})
        else:
            question = rng.choice(world.questions)
            queries.append({"kind": "question", "query": question["question"], "target": None})
    return queries


def ilike_search(settings: Settings, query: str, k: int) -> list[dict[str, str]]:
    """Baseline: every word as a substring of title or text, title matches first."""
    words = or_terms(query) or [query]
    params: dict[str, Any] = {"corpus": CORPUS, "k": k}
    conditions, title_hits = [], []
    for i, word in enumerate(words):
        params[f"w{i}"] = "%" + word.replace("\\", "\\\\").replace("_", "\\_") + "%"
        conditions.append(f"(title ILIKE :w{i} OR text ILIKE :w{i})")
        title_hits.append(f"(title ILIKE :w{i})::int")
    sql = _ILIKE_SQL.format(conditions=" AND ".join(conditions), title_hits=" + ".join(title_hits))
    with get_engine(settings).connect() as conn:
        rows = conn.execute(text(sql), params).all()
    return [dict(r._mapping) for r in rows]


def timed(fn: Callable[[str], list[dict[str, Any]]], queries: list[dict[str, Any]]) -> dict:
    """Latency percentiles (ms) overall and per query kind, and hit@k for entity queries."""
    per_kind: dict[str, list[float]] = {}
    latencies, hits, targets = [], 0, 0
    for q in queries:
        start = time.perf_counter()
        results = fn(q["query"])
        ms = (time.perf_counter() - start) * 1000
        latencies.append(ms)
        per_kind.setdefault(q["kind"], []).append(ms)
        if q["target"]:
            targets += 1
            hits += q["target"] in {r["id"] for r in results}
    summary = percentiles(latencies)
    summary["by_kind_p50_ms"] = {k: round(statistics.median(v), 2) for k, v in per_kind.items()}
    summary["hit_at_k"] = round(hits / targets, 3) if targets else None
    return summary


def percentiles(values: list[float]) -> dict[str, Any]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def database() -> Iterator[tuple[Settings, str]]:
    """The configured Postgres if DLLMFLOW_* points at one, else a throwaway embedded one."""
    if os.environ.get("DLLMFLOW_DATABASE_URL") or os.environ.get("DLLMFLOW_POSTGRES_PORT"):
        settings = load_settings()
        upgrade(settings)
        yield settings, "configured"
        return
    from dllmflow.stack.components import PostgresComponent

    with tempfile.TemporaryDirectory(prefix="dllmflow-bench-") as state:
        settings = load_settings(state_dir=state, postgres_port=_free_port())
        postgres = PostgresComponent(settings)
        record = postgres.start()
        try:
            upgrade(settings)
            yield settings, "embedded (temporary)"
        finally:
            get_engine(settings).dispose()
            postgres.stop(record)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--baseline-every", type=int, default=2, help="Run the slow baselines on every Nth query."
    )
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20_261_126)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    world = generate_world(args.seed, **world_sizes(args.docs), n_questions=args.queries)
    generate_s = time.perf_counter() - started
    queries = make_queries(world, args.queries, args.seed)

    with database() as (settings, where):
        started = time.perf_counter()
        report = store.load_documents(settings, world.documents, corpus=CORPUS)
        load_s = time.perf_counter() - started
        store.vacuum(settings)  # the loader does this too, but not when nothing changed
        with get_engine(settings).connect() as conn:
            server = conn.execute(text("SHOW server_version")).scalar_one()

        def fts(query: str) -> list[dict[str, Any]]:
            return search(settings, query, args.k, corpus=CORPUS).value

        for q in queries[:20]:  # warm the pool, the caches and the planner
            fts(q["query"])
            ilike_search(settings, q["query"], args.k)
        load_before = os.getloadavg()[0]
        results = {"fts": timed(fts, queries)}
        # The baselines are 10-100x slower; a fixed subset keeps the run to a few minutes, and
        # the speedups compare all three on exactly that subset.
        subset = queries[:: args.baseline_every]
        results["fts_on_baseline_queries"] = timed(fts, subset)
        results["ilike"] = timed(lambda q: ilike_search(settings, q, args.k), subset)
        started = time.perf_counter()
        memory = InMemorySearch(world.documents)
        memory_build_s = time.perf_counter() - started
        results["memory"] = timed(lambda q: memory.search(q, args.k), subset)
        load_after = os.getloadavg()[0]

        fetch_ms = []
        for q in queries:
            if q["target"]:
                start = time.perf_counter()
                fetch(settings, q["target"], corpus=CORPUS)
                fetch_ms.append((time.perf_counter() - start) * 1000)
        sizes = store.storage_sizes(settings)
        (stats,) = store.corpus_stats(settings, CORPUS)

    fts_p = results["fts_on_baseline_queries"]
    output = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": server,
            "database": where,
            # Other work on the machine inflates every latency alike; the ratios hold better.
            "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        },
        "corpus": {
            "documents": stats.documents,
            "total_chars": stats.total_chars,
            "generate_s": round(generate_s, 1),
            "load_s": round(load_s, 1),
            "load_docs_per_s": round(report.loaded / load_s) if load_s else None,
            **sizes,
        },
        "queries": {"n": len(queries), "k": args.k, "mix": "50% entity, 20% quoted, 30% question"},
        "search": results,
        "fetch": percentiles(fetch_ms),
        "memory_index_build_s": round(memory_build_s, 1),
        "speedup": {
            f"{base}_over_fts_{p}": round(results[base][f"{p}_ms"] / fts_p[f"{p}_ms"], 1)
            for base in ("ilike", "memory")
            for p in ("p50", "p95")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps(output, indent=2))
    return output


if __name__ == "__main__":
    main()
