"""Observers of a kernel: statistics, probes and calibration records.

A kernel takes one ``recorder`` when it is built and calls its hooks; nothing else is set on a
kernel from outside. Every hook of :class:`Recorder` does nothing, so a recorder implements only
what it wants. Hooks that cost work in the kernel are asked for first (``wants_*``).
"""
from __future__ import annotations

import numpy as np

from .stats import quantile


class Recorder:
    """The hooks a kernel calls (all no-ops here)."""

    # -- gain cell ------------------------------------------------------------------------------
    def wants_weights(self, layer: int, head: int) -> bool:
        """Should the kernel hand over this head's attention weights (``weights``)?"""
        return False

    def weights(self, layer: int, head: int, positions, key_positions, w) -> None:
        """(T, S) attention weights of one query head over the keys of one call."""

    wants_tiles = False  # value-tile outputs before their ADC, for the tile full-scale calibration

    def tile_outputs(self, layer: int, head: int, values) -> None:
        """|outputs| of the value tile (one query block, one tile) that the rows driving it give."""

    wants_score_tiles = False  # the score tiles' charges before their ADC (kernel-vs-SPICE validation)

    def score_tile(self, layer: int, kv_head: int, b0: int, k0: int, x) -> None:
        """(g tb, S) charges of one score tile (rows k0.. of the head dims) of the query block
        starting at b0, after the read noise, before the clamp and the ADC."""

    # -- pruning kernel ---------------------------------------------------------------------------
    def keep(self, layer: int, kv_head: int, positions, key_positions, keep) -> None:
        """(g, T, S) kept keys of the g query heads reading one KV head, for one query block."""

    def counts(self, layer: int, **n) -> None:
        """Per-block sums (allowed, kept, mass, rows, new, new_base, decisions, queries)."""

    wants_comparator_inputs = False  # calibration: record the comparator inputs, keep every key

    def comparator_inputs(self, layer: int, kv_head: int, z, ref, free, v_q: float) -> None:
        """The approximate scores z (g, T, S) in logits, the anchors' best ref (g, T, 1) or None,
        the free (decided) scores (T, S) and the quantile of |comparator input| in volts."""


class Recorders(Recorder):
    """Several recorders as one: every hook goes to each; a ``wants_*`` is true if any wants it."""

    def __init__(self, *recorders):
        self.items = [r for r in recorders if r is not None]
        self.wants_tiles = any(r.wants_tiles for r in self.items)
        self.wants_comparator_inputs = any(r.wants_comparator_inputs for r in self.items)
        self.wants_score_tiles = any(r.wants_score_tiles for r in self.items)

    def score_tile(self, *a):
        for r in self.items:
            r.score_tile(*a)

    def wants_weights(self, layer, head):
        return any(r.wants_weights(layer, head) for r in self.items)

    def weights(self, *a):
        for r in self.items:
            r.weights(*a)

    def tile_outputs(self, *a):
        for r in self.items:
            r.tile_outputs(*a)

    def keep(self, *a):
        for r in self.items:
            r.keep(*a)

    def counts(self, layer, **n):
        for r in self.items:
            r.counts(layer, **n)

    def comparator_inputs(self, *a):
        for r in self.items:
            r.comparator_inputs(*a)


class WeightProbe(Recorder):
    """The first attention weights of one (layer, head): ``out`` = (positions, key positions, w)."""

    def __init__(self, layer: int, head: int):
        self.layer, self.head, self.out = layer, head, None

    def wants_weights(self, layer, head):
        return self.out is None and (layer, head) == (self.layer, self.head)

    def weights(self, layer, head, positions, key_positions, w):
        if self.wants_weights(layer, head):
            self.out = (positions.copy(), key_positions.copy(), w)


class KeepLog(Recorder):
    """Collects (layer, kv head, positions, key positions, keep) tuples into a list."""

    def __init__(self, log: list | None = None):
        self.log = [] if log is None else log

    def keep(self, layer, kv_head, positions, key_positions, keep):
        self.log.append((layer, kv_head, positions.copy(), key_positions.copy(), np.array(keep)))


class TileQuantiles(Recorder):
    """Per (layer, head) the ``quantile`` of |value-tile output| of every (query block, tile)."""

    wants_tiles = True

    def __init__(self, quantile: float):
        self.quantile, self.per_head = quantile, {}

    def tile_outputs(self, layer, head, values):
        self.per_head.setdefault((layer, head), []).append(quantile(np.abs(values), self.quantile))
