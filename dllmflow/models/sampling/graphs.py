"""CUDA graphs for the samplers' cached decoding pass (``arena_forward`` over the KV arena).

At batch 1 a pass of a ~1B model on an H200 costs ~20 ms of Python and kernel launches around
well under a millisecond of GPU work (bench/results/peer_loop_h200/README.md): the pass is
launch-bound. A captured graph launches the whole forward at once.

A graph is captured per pass shape: (input rows, extra rows, input width, span bucket, logits
rows), and per arena allocation (it reads and writes those K/V tensors; a reallocation drops
every graph). A shape is captured the second time it is seen: continuous batching meets many
batch sizes once, and a capture costs about one eager pass. Positions, rows to gather and cache
lengths are tensors in the graph's static inputs, so one graph serves every block of a sequence
while its span stays in one bucket: the attention kernels bound their loops by each row's cache
length, not by the span. The capturing pass runs eagerly on the capture stream first (it is a
real pass: its keys land in the arena, its logits are returned), then the same call is recorded.

The returned logits are the graph's static output: read them before the next pass (the samplers
do: commits come right after, and the one tensor kept across passes, the token-shift boundary
logits, is cloned). Graphs share one memory pool, safe because one pass replays at a time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

MIN_SPAN_BUCKET = 256
MAX_GRAPHS = 48  # captured shapes kept (least recently used dropped first)
Capture = Literal["cuda", "emulate"]


@dataclass(frozen=True)
class ArenaPass:
    """One cached forward's inputs (``arena_forward``): rows [R, L], their first positions,
    the span to attend, the arena rows of the extra rows, the rows that need logits."""

    ids: torch.Tensor
    starts: torch.Tensor
    span: int
    extra_rows: torch.Tensor | None = None
    n_logits: int | None = None

    def run(self, model: Any, arena: Any) -> torch.Tensor:
        """The pass over the arena's K/V tensors, launched op by op."""
        return model.forward_arena(
            self.ids, arena.ks, arena.vs, self.starts, self.span,
            extra_rows=self.extra_rows, n_logits=self.n_logits,
        )  # fmt: skip


def span_bucket(span: int, capacity: int) -> int:
    """The power of two >= ``span`` (at least MIN_SPAN_BUCKET), capped by the arena capacity."""
    bucket = MIN_SPAN_BUCKET
    while bucket < span:
        bucket *= 2
    return min(bucket, capacity)


@dataclass
class _Captured:
    inputs: ArenaPass  # its tensors are the graph's static inputs
    out: torch.Tensor  # static output (logits)
    graph: Any  # torch.cuda.CUDAGraph, or the forward itself when emulating


class ArenaGraphs:
    """Captured arena forwards of one sampler thread's KV arena.

    ``capture="emulate"`` keeps the same static buffers and replays by re-running the forward
    into the static output, without CUDA: on CPU it tests what the samplers must get right
    (inputs copied in, an output overwritten by the next pass) where no GPU is present.
    """

    def __init__(self, capture: Capture = "cuda", max_graphs: int = MAX_GRAPHS) -> None:
        self.capture = capture
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self.seen: set[tuple] = set()  # shapes met once (captured when met again)
        self.generation: int | None = None  # the arena allocation the graphs belong to
        self.pool: Any = None
        self.stream: Any = None
        self.captures = 0
        self.replays = 0
        self.disabled: str | None = None  # why capture failed (the eager path serves then)

    def forward(self, model: Any, arena: Any, p: ArenaPass) -> torch.Tensor:
        """Pass ``p`` over ``arena``, replayed from a graph of its shape."""
        if self.disabled is not None:
            return p.run(model, arena)
        if arena.generation != self.generation:
            self.graphs.clear()
            self.seen.clear()
            self.generation = arena.generation
        n_extra = 0 if p.extra_rows is None else int(p.extra_rows.shape[0])
        p = replace(p, span=span_bucket(p.span, arena.allocated[1]))
        key = (tuple(p.ids.shape), n_extra, p.span, p.n_logits)
        entry = self.graphs.get(key)
        if entry is None:
            if key not in self.seen:
                self.seen.add(key)
                return p.run(model, arena)
            return self._capture(model, arena, key, p)
        self.graphs.move_to_end(key)
        entry.inputs.ids.copy_(p.ids)
        entry.inputs.starts.copy_(p.starts)
        if entry.inputs.extra_rows is not None:
            entry.inputs.extra_rows.copy_(p.extra_rows)
        if self.capture == "cuda":
            entry.graph.replay()
        else:
            entry.out.copy_(entry.graph())
        self.replays += 1
        return entry.out

    def _capture(self, model: Any, arena: Any, key: tuple, p: ArenaPass) -> torch.Tensor:
        extra = None if p.extra_rows is None else p.extra_rows.clone()
        inputs = replace(p, ids=p.ids.clone(), starts=p.starts.clone(), extra_rows=extra)

        def run() -> torch.Tensor:
            return inputs.run(model, arena)

        if self.capture == "emulate":
            logits = run()
            self._keep(key, _Captured(inputs, logits, run))
            return logits
        if self.stream is None:
            self.stream = torch.cuda.Stream()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            logits = run()  # the real pass; compiles kernels and fills lazy buffers first
        torch.cuda.current_stream().wait_stream(self.stream)
        try:
            graph, out = self._record(run)
        except RuntimeError as e:  # an op that cannot be captured: serve eagerly from now on
            self.disabled = f"{type(e).__name__}: {e}"
            self.graphs.clear()
            log.warning("CUDA graph capture failed, decoding eagerly: %s", self.disabled)
            return logits
        self._keep(key, _Captured(inputs, out, graph))
        return logits

    def _record(self, run: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(
            graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"
        ):
            out = run()  # recorded, not run
        if self.pool is None:
            self.pool = graph.pool()
        return graph, out

    def _keep(self, key: tuple, entry: _Captured) -> None:
        self.graphs[key] = entry
        self.captures += 1
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        return {
            "graphs": len(self.graphs),
            "captures": self.captures,
            "replays": self.replays,
            "disabled": self.disabled,
        }
