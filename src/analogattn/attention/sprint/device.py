"""The device adapter of the pruning kernel: the ReRAM column and the comparator as the kernel
needs them (from a surrogate bundle, or ideal), and the crossbar's state in the kernel's cache."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..cache import KVCache


@dataclasses.dataclass
class Crossbar:
    """What the kernel needs of the ReRAM column and the comparator (from a bundle, or ideal)."""

    a: np.ndarray            # (levels,) key-side factor of the cell current, A
    b: callable              # word-line voltage -> voltage-side factor (unitless)
    weights: np.ndarray      # (rows,) row-position weights (IR drop)
    c2: float                # current-dependent loss, 1/A
    sigma_g: float           # lognormal sigma of a cell's conductance
    noise_rel: float         # relative read noise per column evaluation
    v_read: float            # full-scale word-line voltage, V
    r_f: float               # TIA transimpedance, Ohm
    cmp_mu: float = 0.0      # comparator: mean input offset, V
    cmp_offset: float = 0.0  # comparator: offset sigma (fixed per comparator), V
    cmp_noise: float = 0.0   # comparator: noise sigma (per decision), V
    rank1_error: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.weights.size)

    @property
    def levels(self) -> int:
        return int(self.a.size)

    kernel_nrmse: float = float("nan")  # the kernel's column currents vs held-out SPICE (bundle score)

    @classmethod
    def from_column(cls, col, probit=None):
        """The column part from a ``column`` surrogate (rank-1 factors of its cell I-V table,
        row weights, loss term, variation, read noise); the comparator from ``probit`` (or ideal)."""
        u, s, vt = np.linalg.svd(col.iv_current, full_matrices=False)
        sign = np.sign(vt[0, -1]) or 1.0
        a = s[0] * u[:, 0] * sign
        bv = vt[0] * sign
        err = float(np.sqrt((s[1:] ** 2).sum()) / np.sqrt((s ** 2).sum()))
        iv_v = col.iv_v.copy()
        cmp = (float(probit.mu), float(probit.offset_sigma), float(probit.noise_sigma)) if probit is not None \
            else (0.0, 0.0, 0.0)
        return cls(a, lambda v: np.interp(v, iv_v, bv), col.weights.copy(), float(col.c2), float(col.sigma_g),
                   float(col.noise_rel), float(col.meta.get("v_read", iv_v[-1])), float(col.meta.get("r_f", 5e3)),
                   *cmp, err)

    @classmethod
    def from_bundle(cls, b):
        x = cls.from_column(b.need("reram.column"), b.need("comparator.probit"))
        if "reram.kernel_column" in b:
            x.kernel_nrmse = float(b["reram.kernel_column"].scores.get("nrmse", float("nan")))
        return x

    @classmethod
    def ideal(cls, rows: int = 64, levels: int = 16, g_step: float = 0.6e-6, v_read: float = 0.2):
        """Linear cells, no IR drop, no loss, no variation or noise, an ideal comparator."""
        a = 1e-6 + g_step * np.arange(levels)
        return cls(a, lambda v: np.asarray(v, float) / v_read, np.ones(rows), 0.0, 0.0, 0.0, v_read, 5e3)


class SprintCache(KVCache):
    """Full-precision keys and values (ordinary memory, fetched on demand) plus the crossbar's
    state: key-side cell factors a(L) x variation (S, d) and each column's comparator offset."""

    token_arrays = KVCache.token_arrays + (("_cells", 1), ("_off", 1))

    def __init__(self, n_kv_heads, head_dim, capacity=256):
        super().__init__(n_kv_heads, head_dim, capacity)
        self._cells = np.empty((n_kv_heads, capacity, head_dim), np.float32)
        self._off = np.empty((n_kv_heads, capacity), np.float32)

    def append_cells(self, cells, offsets):
        """The crossbar state of the tokens the next append() adds (call it first)."""
        self._write_ahead(_cells=cells, _off=offsets)

    @property
    def cells(self):
        return self._cells[:, : self.length]

    @property
    def offsets(self):
        return self._off[:, : self.length]
