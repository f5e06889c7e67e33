"""The pruning kernel's calibrated arrays (and their calibration file) and its run statistics."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..recorders import Recorder


@dataclasses.dataclass
class SprintScales:
    """Calibrated per-layer quantities: key step (layers, kv_heads), per-channel key scales
    (layers, kv_heads, d) or None, thresholds (layers, heads) in logit units (``fixed``: the
    threshold; ``anchor``: the margin below the anchors' best exact score), and the
    transimpedance of each array's differential TIA (layers, kv_heads; Ohm; None = the column's
    r_f), set so calibration scores use the comparator's input swing."""

    k_step: np.ndarray
    k_chan: np.ndarray | None
    theta: np.ndarray
    r_diff: np.ndarray | None = None

    def save(self, path, meta: dict | None = None):
        from .. import calfile
        calfile.save(path, "sprint", dataclasses.asdict(self), meta or {})

    @classmethod
    def load(cls, path, expect: dict | None = None):
        from .. import calfile
        arrays, _ = calfile.load(path, "sprint", ("k_step", "theta"), ("k_chan", "r_diff"), expect,
                                 shapes={"k_step": ("L", "K"), "theta": ("L", "H"), "k_chan": ("L", "K", "D"),
                                         "r_diff": ("L", "K")})
        return cls(**arrays)


@dataclasses.dataclass
class SprintStats(Recorder):
    """Per-layer sums: allowed (causal) scores, kept scores, ideal softmax mass kept (sum over rows),
    rows, newly fetched keys between adjacent queries and their allowed counts, comparator decisions.
    A recorder: the kernel reports each block's counts to it."""

    allowed: np.ndarray
    kept: np.ndarray
    mass: np.ndarray
    rows: np.ndarray
    new: np.ndarray
    new_base: np.ndarray
    decisions: np.ndarray
    queries: np.ndarray

    @classmethod
    def zeros(cls, layers):
        z = lambda: np.zeros(layers)  # noqa: E731
        return cls(z(), z(), z(), z(), z(), z(), z(), z())

    def counts(self, layer, **n):
        for name, value in n.items():
            getattr(self, name)[layer] += value

    def kept_fraction(self):
        return self.kept / np.maximum(self.allowed, 1)

    def summary(self) -> dict:
        a = max(self.allowed.sum(), 1)
        return {"kept_fraction": float(self.kept.sum() / a),
                "kept_fraction_per_layer": [float(x) for x in self.kept_fraction()],
                "softmax_mass_kept": float(self.mass.sum() / max(self.rows.sum(), 1)),
                "newly_fetched_fraction": float(self.new.sum() / max(self.new_base.sum(), 1)),
                "comparator_decisions": float(self.decisions.sum()), "queries": float(self.queries.sum()),
                "kept_scores": float(self.kept.sum()), "allowed_scores": float(self.allowed.sum())}
