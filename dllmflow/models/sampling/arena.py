"""A persistent batched KV cache: one [rows, H, capacity, D] key and value tensor per layer.

Every running sequence owns one row. Rows stay compact (a finished sequence's row is refilled
with the last row), so a decoding step runs on the view ``k[:n, :, :span]`` and nothing is
gathered or copied back. New keys/values are scattered in place, one op per layer for the whole
batch. Rows move only when membership changes: a sequence leaves (one row copied), or a step
runs a different subset of the sequences than the arena holds (``arrange``).

The model side is ``arena_forward``: rows [0, n) of the input are arena rows 0..n-1; optional
extra rows (a diffusion block that finished last pass and still needs its clean keys written)
name their arena row in ``extra_rows`` and attend a gathered copy of only those rows.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from .graphs import ArenaGraphs

CAPACITY_QUANTUM = 64  # capacity grows in steps of this many positions (few reallocations)


class HasRow(Protocol):
    row: int | None


class KVArena:
    """Per-layer K/V rows for the sequences one sampler runs in one thread."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ks: list[torch.Tensor] = []
        self.vs: list[torch.Tensor] = []
        self.owners: list[weakref.ref[Any]] = []  # row -> its sequence (freed when collected)
        self.needs: list[int] = []  # row -> positions its sequence can fill (prompt + budget)
        self.generation = 0  # bumped when the K/V tensors are reallocated (graphs hold them)
        self.graphs: ArenaGraphs | None = None  # the captured passes over these tensors

    @property
    def rows(self) -> int:
        return len(self.owners)

    @property
    def allocated(self) -> tuple[int, int]:
        """(rows, capacity) of the preallocated tensors."""
        return (self.ks[0].shape[0], self.ks[0].shape[2]) if self.ks else (0, 0)

    def add(self, state: HasRow, need: int) -> int:
        """Give ``state`` the next free row, for up to ``need`` positions."""
        self._reserve(self.rows + 1, need)
        state.row = self.rows
        self.owners.append(weakref.ref(state))
        self.needs.append(need)
        return state.row

    def free(self, state: HasRow) -> None:
        row = state.row
        if row is not None and row < self.rows and self.owners[row]() is state:
            self._free_row(row)
            state.row = None

    def arrange(self, states: Sequence[HasRow]) -> list[HasRow]:
        """Put these sequences' rows first, in their current order; returns them in row order.

        A scheduler steps every running sequence each time, so this moves nothing then.
        """
        self._drop_collected()
        ordered = sorted(states, key=lambda s: s.row)
        for i, s in enumerate(ordered):
            if s.row is None or s.row >= self.rows or self.owners[s.row]() is not s:
                raise ValueError("a sequence's cache row belongs to another arena (thread)")
            if s.row != i:
                self._swap(i, s.row)
        return ordered

    def view(self, start: int, stop: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Rows [start, stop) of every layer, as views (writes land in the arena)."""
        return [k[start:stop] for k in self.ks], [v[start:stop] for v in self.vs]

    # -- internals -------------------------------------------------------------------------------
    def _reserve(self, rows: int, need: int) -> None:
        have_rows, have_cap = self.allocated
        if rows <= have_rows and need <= have_cap:
            return
        # Rows double only when more are needed: a capacity-only growth keeps the row count
        # (doubling both compounded to 2^k rows of the largest capacity after k long prompts).
        new_rows = max(rows, 2 * have_rows if rows > have_rows else have_rows, 4)
        new_cap = max(have_cap, -(-need // CAPACITY_QUANTUM) * CAPACITY_QUANTUM)
        ks, vs = self.model.new_cache(new_rows, new_cap)
        n = self.rows
        for new, old in zip(ks + vs, self.ks + self.vs, strict=False):  # none at first
            new[:n, :, :have_cap] = old[:n]
        self.ks, self.vs = ks, vs
        self.generation += 1

    def _span(self, *rows: int) -> int:
        return max(self.needs[r] for r in rows)

    def _free_row(self, row: int) -> None:
        last = self.rows - 1
        if row != last:
            span = self.needs[last]
            for t in self.ks + self.vs:
                t[row, :, :span] = t[last, :, :span]
            self.owners[row], self.needs[row] = self.owners[last], self.needs[last]
            moved = self.owners[row]()
            if moved is not None:
                moved.row = row
        self.owners.pop()
        self.needs.pop()

    def _swap(self, a: int, b: int) -> None:
        span = self._span(a, b)
        for t in self.ks + self.vs:
            t[[a, b], :, :span] = t[[b, a], :, :span]
        self.owners[a], self.owners[b] = self.owners[b], self.owners[a]
        self.needs[a], self.needs[b] = self.needs[b], self.needs[a]
        for row in (a, b):
            owner = self.owners[row]()
            if owner is not None:
                owner.row = row

    def _drop_collected(self) -> None:
        for row in reversed(range(self.rows)):
            if self.owners[row]() is None:
                self._free_row(row)


@dataclass
class _Part:
    """Input rows that attend one cache: the arena's leading rows (a view) or gathered rows."""

    inputs: slice
    gather: torch.Tensor | None  # arena rows to gather; None = arena rows 0.. (no copy)
    sub_blocks: list[tuple[int, int, torch.Tensor]]  # (first, end) query columns, kv_lens


@dataclass
class _Plan:
    """What every layer of one arena forward shares (built once, not per layer)."""

    index: tuple[torch.Tensor, torch.Tensor]  # (arena row, position) of each new key, [R, L]
    parts: list[_Part]
    span: int


def _plan(
    positions: torch.Tensor, extra_rows: torch.Tensor | None, span: int, sub_block: int
) -> _Plan:
    r, length = positions.shape
    direct = r - (0 if extra_rows is None else extra_rows.shape[0])
    rows = torch.arange(direct, device=positions.device)
    if extra_rows is not None:
        rows = torch.cat([rows, extra_rows])
    starts = positions[:, 0]
    parts = []
    for inputs, gather in ((slice(0, direct), None), (slice(direct, r), extra_rows)):
        if inputs.stop > inputs.start:
            cols = [(i, min(i + sub_block, length)) for i in range(0, length, sub_block)]
            subs = [(i, end, starts[inputs] + end) for i, end in cols]
            parts.append(_Part(inputs, gather, subs))
    return _Plan((rows[:, None].expand(r, length), positions), parts, span)


def arena_attention(
    q: torch.Tensor,  # [R, H, L, D]
    k: torch.Tensor,
    v: torch.Tensor,
    cache_k: torch.Tensor,  # [rows, H, capacity, D], the whole arena layer
    cache_v: torch.Tensor,
    plan: _Plan,
) -> torch.Tensor:
    """Scatter the new keys/values into the arena, then attend: each sub-block of queries sees
    its row's cache up to the end of its own sub-block. Returns [R, H, L, D]."""
    from dllmflow import kernels

    cache_k.transpose(1, 2).index_put_(plan.index, k.transpose(1, 2))  # [rows, S, H, D] view
    cache_v.transpose(1, 2).index_put_(plan.index, v.transpose(1, 2))
    outs = []
    for part in plan.parts:
        if part.gather is None:
            ck, cv = cache_k[: part.inputs.stop, :, : plan.span], cache_v[: part.inputs.stop]
        else:  # copies of these rows only
            ck, cv = cache_k[part.gather, :, : plan.span], cache_v[part.gather]
        cv = cv[:, :, : plan.span]
        chunks = [
            kernels.block_decode_attention(q[part.inputs, :, i:end], ck, cv, kv_lens)
            for i, end, kv_lens in part.sub_blocks
        ]
        outs.append(chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def arena_forward(
    model: Any,
    input_ids: torch.Tensor,  # [R, L]
    cache_k: list[torch.Tensor],
    cache_v: list[torch.Tensor],
    starts: torch.Tensor,  # [R] position of each row's first token
    span: int,
    sub_block: int,
    extra_rows: torch.Tensor | None = None,
    n_logits: int | None = None,
) -> torch.Tensor:
    """A cached forward of a model built from ``layers.Block`` over arena rows; logits of the
    first ``n_logits`` input rows (all by default), [n_logits, L, V]."""
    length = input_ids.shape[1]
    positions = starts[:, None] + torch.arange(length, device=input_ids.device)
    plan = _plan(positions, extra_rows, span, sub_block)
    x = model.embed(input_ids)
    cos, sin = model._rope(positions, x.dtype)
    for layer, block in enumerate(model.blocks):

        def attend(q, k, v, layer=layer):
            return arena_attention(q, k, v, cache_k[layer], cache_v[layer], plan)

        x = block(x, cos, sin, attend)
    return model._logits(x if n_logits is None else x[:n_logits])


def prefill_groups(lengths: Sequence[int], max_waste: float) -> list[list[int]]:
    """Indices grouped for padded prefills: sorted by length, a group grows while its padding
    stays within ``max_waste`` of its real tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is not None:
            real = sum(lengths[j] for j in group) + lengths[i]
            if (len(group) + 1) * lengths[i] <= (1 + max_waste) * real:
                group.append(i)
                continue
        groups.append([i])
    return groups


def rows_at(x: torch.Tensor, at: torch.Tensor | None) -> torch.Tensor:
    """x [B, T, C] at positions ``at`` [B, K] -> [B, K, C] (all of x when ``at`` is None)."""
    return x if at is None else x.gather(1, at[..., None].expand(-1, -1, x.shape[-1]))


def right_padded(rows: Sequence[list[int]], pad_id: int) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [r + [pad_id] * (width - len(r)) for r in rows]
