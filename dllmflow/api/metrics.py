"""Prometheus metrics, computed from Postgres and Redis at scrape time.

The API process does not see activities run, so nothing is counted in memory: each scrape runs
a few aggregate queries over the checkpoints table. Checkpoint rows are only ever added
(superseded rows stay), so the histogram and *_total series only grow and rate() works on
them. Rows copied into a replay (payload.copied_from) are skipped so no work counts twice.

- dllmflow_episodes{status}: episodes per status (gauge).
- dllmflow_dlq_depth: entries in the dead-letter stream (gauge).
- dllmflow_activity_seconds{kind,backend}: histogram of activity work time per checkpoint:
  decode_s for model turns (kind plan|seek|write), tool_s for tool calls (kind tool, backend
  tool). Queue, checkpoint-write and orchestration time are in each episode's waterfall.
- dllmflow_turns_total / dllmflow_valid_turns_total / dllmflow_repaired_turns_total{backend},
  and dllmflow_tool_call_schema_adherence{backend} = valid / all model turns.
- dllmflow_tokens_total / dllmflow_forward_passes_total{backend}, and
  dllmflow_tokens_per_forward_pass{backend} (turns that report forward passes only).
- dllmflow_metrics_source_up{source}: 0 when Postgres or Redis could not be read this scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import text

from dllmflow.config import Settings
from dllmflow.store.db import transaction
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import EpisodeStatus
from dllmflow.store.streams import DeadLetterQueue

log = logging.getLogger(__name__)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ORIGINAL = "NOT (payload ? 'copied_from')"


def _num(path: str) -> str:
    """A JSONB number at `path` as float, NULL when absent or not a number."""
    return f"CASE WHEN jsonb_typeof({path}) = 'number' THEN ({path})::text::float END"


LATENCY_SQL = f"""
SELECT kind, coalesce(backend, '') AS backend, count(*) AS n, sum(lat) AS total,
       {", ".join(f"count(*) FILTER (WHERE lat <= {b!r}) AS le{i}" for i, b in enumerate(BUCKETS))}
FROM (
    SELECT kind, backend,
           CASE WHEN kind = 'tool' THEN {_num("timings->'tool_s'")}
                ELSE {_num("timings->'decode_s'")} END AS lat
    FROM checkpoints WHERE {ORIGINAL}
) AS s
WHERE lat IS NOT NULL
GROUP BY kind, coalesce(backend, '')
"""

TURNS_SQL = f"""
SELECT coalesce(backend, '') AS backend, count(*) AS turns,
       count(*) FILTER (WHERE payload->'valid' = 'true'::jsonb) AS valid,
       count(*) FILTER (WHERE payload->'repaired' = 'true'::jsonb) AS repaired,
       coalesce(sum({_num("payload->'stats'->'tokens'")})
                FILTER (WHERE {_num("payload->'stats'->'forward_passes'")} > 0), 0) AS tokens,
       coalesce(sum({_num("payload->'stats'->'forward_passes'")})
                FILTER (WHERE {_num("payload->'stats'->'forward_passes'")} > 0), 0) AS passes
FROM checkpoints
WHERE kind <> 'tool' AND {ORIGINAL}
GROUP BY coalesce(backend, '')
"""


class StoreCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.episodes = EpisodeRepository(settings)
        self.dlq = DeadLetterQueue(settings)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "dllmflow_metrics_source_up",
            "Whether this scrape could read the source",
            labels=["source"],
        )
        try:
            yield from self._postgres()
            up.add_metric(["postgres"], 1)
        except Exception as exc:
            log.warning("metrics: postgres unavailable: %s", exc)
            up.add_metric(["postgres"], 0)
        try:
            depth = GaugeMetricFamily("dllmflow_dlq_depth", "Entries in the dead-letter stream")
            depth.add_metric([], self.dlq.depth())
            yield depth
            up.add_metric(["redis"], 1)
        except Exception as exc:
            log.warning("metrics: redis unavailable: %s", exc)
            up.add_metric(["redis"], 0)
        yield up

    def _postgres(self) -> Iterator[Metric]:
        counts = self.episodes.counts_by_status()
        with transaction(self.settings) as session:
            latency = session.execute(text(LATENCY_SQL)).mappings().all()
            turns = session.execute(text(TURNS_SQL)).mappings().all()

        episodes = GaugeMetricFamily("dllmflow_episodes", "Episodes by status", labels=["status"])
        for status in sorted(set(EpisodeStatus.ALL) | set(counts)):
            episodes.add_metric([status], counts.get(status, 0))

        hist = HistogramMetricFamily(
            "dllmflow_activity_seconds",
            "Activity work time per checkpoint (decode for model turns, tool for tool calls)",
            labels=["kind", "backend"],
        )
        for row in latency:
            buckets = [(repr(b), row[f"le{i}"]) for i, b in enumerate(BUCKETS)]
            buckets.append(("+Inf", row["n"]))
            hist.add_metric([row["kind"], row["backend"]], buckets, float(row["total"] or 0.0))

        families = {
            "turns": CounterMetricFamily("dllmflow_turns", "Model turns", labels=["backend"]),
            "valid": CounterMetricFamily(
                "dllmflow_valid_turns",
                "Model turns whose action parsed and validated",
                labels=["backend"],
            ),
            "repaired": CounterMetricFamily(
                "dllmflow_repaired_turns",
                "Valid only after re-decoding the action span",
                labels=["backend"],
            ),
            "tokens": CounterMetricFamily(
                "dllmflow_tokens", "Tokens generated by model turns", labels=["backend"]
            ),
            "passes": CounterMetricFamily(
                "dllmflow_forward_passes", "Model forward passes of those turns", labels=["backend"]
            ),
        }
        adherence = GaugeMetricFamily(
            "dllmflow_tool_call_schema_adherence",
            "Share of model turns with a valid action",
            labels=["backend"],
        )
        per_pass = GaugeMetricFamily(
            "dllmflow_tokens_per_forward_pass",
            "Tokens per forward pass (AR is 1; diffusion commits more)",
            labels=["backend"],
        )
        for row in turns:
            for key, family in families.items():
                family.add_metric([row["backend"]], float(row[key]))
            if row["turns"]:
                adherence.add_metric([row["backend"]], row["valid"] / row["turns"])
            if row["passes"]:
                per_pass.add_metric([row["backend"]], float(row["tokens"]) / float(row["passes"]))
        yield episodes
        yield hist
        yield from families.values()
        yield adherence
        yield per_pass


def registry_for(settings: Settings) -> CollectorRegistry:
    """A registry per app, so several apps (tests) never register the same names twice."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings))
    return registry
