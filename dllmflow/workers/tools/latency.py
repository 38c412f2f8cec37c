"""Injected tool latency, so benchmarks reproduce realistic web-search and page-fetch delays.

A profile maps a tool to a delay distribution, written as::

    search=lognormal:0.8:2.5,fetch=fixed:0.3,*=uniform:0.1:0.4

    fixed:SECONDS
    uniform:LOW:HIGH
    lognormal:MEDIAN:P95      (heavy right tail, like real search APIs)

``*`` applies to every tool without its own entry. A preset name stands for a whole profile:
``realistic`` is the production waterfall the project is built for (web search p50 600 ms with
a long tail, page fetch p50 900 ms), see PRESETS. Each delay is drawn from an RNG seeded by the
tool and a caller-given key (the activity's idempotency key, or the call's arguments), so a
replayed or retried call waits exactly as long as the first time.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from statistics import NormalDist

DISTRIBUTIONS = {"fixed": 1, "uniform": 2, "lognormal": 2}
DELAYED_TOOLS = ("search", "fetch")
_Z95 = NormalDist().inv_cdf(0.95)


# Named profiles (DLLMFLOW_TOOL_LATENCY=realistic, `dllmflow eval --tool-latency realistic`).
PRESETS = {
    # search: median 0.6 s, p95 2.0 s (p99 ~3.0 s); fetch: median 0.9 s, p95 2.5 s.
    "realistic": "search=lognormal:0.6:2.0,fetch=lognormal:0.9:2.5",
}


class LatencySpecError(ValueError):
    pass


@dataclass(frozen=True)
class Delay:
    kind: str
    params: tuple[float, ...]

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.params[0]
        if self.kind == "uniform":
            low, high = self.params
            return low + (high - low) * rng.random()
        median, p95 = self.params
        sigma = math.log(p95 / median) / _Z95
        # inv_cdf of a uniform keeps the draw identical across Python versions (gauss may not).
        u = min(max(rng.random(), 1e-12), 1 - 1e-12)
        return median * math.exp(sigma * NormalDist().inv_cdf(u))

    def __str__(self) -> str:
        return ":".join([self.kind, *(f"{p:g}" for p in self.params)])


def _parse_delay(entry: str, body: str) -> Delay:
    kind, *raw = body.split(":")
    if kind not in DISTRIBUTIONS:
        raise LatencySpecError(
            f"{entry!r}: unknown distribution {kind!r}; use one of "
            "fixed:SECONDS, uniform:LOW:HIGH, lognormal:MEDIAN:P95"
        )
    if len(raw) != DISTRIBUTIONS[kind]:
        raise LatencySpecError(f"{entry!r}: {kind} takes {DISTRIBUTIONS[kind]} number(s)")
    try:
        params = tuple(float(p) for p in raw)
    except ValueError:
        raise LatencySpecError(f"{entry!r}: {raw} are not all numbers of seconds") from None
    if any(not math.isfinite(p) or p < 0 for p in params):
        raise LatencySpecError(f"{entry!r}: seconds must be finite and >= 0")
    if kind == "uniform" and params[0] > params[1]:
        raise LatencySpecError(f"{entry!r}: LOW must not exceed HIGH")
    if kind == "lognormal" and not 0 < params[0] < params[1]:
        raise LatencySpecError(f"{entry!r}: needs 0 < MEDIAN < P95")
    return Delay(kind, params)


@dataclass(frozen=True)
class LatencyProfile:
    delays: tuple[tuple[str, Delay], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> LatencyProfile:
        """Parse ``tool=dist:params,...`` or a preset name; empty or None: no injected latency."""
        delays: dict[str, Delay] = {}
        spec = PRESETS.get((spec or "").strip().lower(), spec)
        for entry in (spec or "").split(","):
            entry = entry.strip()
            if not entry:
                continue
            tool, sep, body = (part.strip() for part in entry.partition("="))
            if not sep or not body:
                raise LatencySpecError(f"{entry!r}: expected TOOL=DISTRIBUTION:PARAMS")
            if tool != "*" and tool not in DELAYED_TOOLS:
                raise LatencySpecError(
                    f"{entry!r}: unknown tool {tool!r}; tools: {', '.join(DELAYED_TOOLS)}, *"
                )
            if tool in delays:
                raise LatencySpecError(f"{entry!r}: tool {tool!r} is given twice")
            delays[tool] = _parse_delay(entry, body)
        return cls(tuple(delays.items()))

    @property
    def enabled(self) -> bool:
        return bool(self.delays)

    def delay_for(self, tool: str) -> Delay | None:
        table = dict(self.delays)
        return table.get(tool, table.get("*"))

    def sample(self, tool: str, key: str) -> float:
        """Seconds to wait before answering ``tool``; a pure function of (profile, tool, key)."""
        delay = self.delay_for(tool)
        if delay is None:
            return 0.0
        seed = hashlib.sha256(f"{tool}\x00{key}".encode("utf-8", "replace")).digest()
        return delay.sample(random.Random(int.from_bytes(seed[:8], "big")))

    def __str__(self) -> str:
        return ",".join(f"{tool}={delay}" for tool, delay in self.delays)
