"""The device adapter: what the gain-cell kernel needs of the circuit, from a surrogate bundle.

:class:`CellModel` holds the cell's functions (read current at the read amplitude, write
transfer, retention, Monte Carlo sigma); :class:`CellReadout` derives from it, once per kernel,
the arrays and functions the kernel reads with: the pre-distortion tables, the stored voltage of
each storage code, and the expansion terms of the decayed read current with their fine tables.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .. import _fused
from ..peripherals import quantise, signed_code


@dataclasses.dataclass
class CellModel:
    """What the kernel needs of the circuit: cell current vs stored voltage at the read
    amplitude, write transfer, retention. Built from a surrogate bundle, or ideal for tests."""

    vdd: float
    v_mid: float
    current: callable            # I(V_store) at the read amplitude (A), vectorised
    write: callable              # V_written -> V_stored
    tau: float                   # retention time constant (s); inf = no decay
    v_eq: float                  # voltage the stored value decays to
    sigma: callable | None = None  # Monte Carlo sigma of the current at V_store (A)
    t_max: float = 15e-9         # longest pulse (s)
    noise_q: callable | None = None  # rms read-noise charge of one full pulse at V_store (C), vectorised
    write_sigma: callable | None = None  # spread of the written voltage at the nominal stored voltage (V)

    def gain(self) -> float:
        """Charge per volt of stored (V - mid-rail) for a full pulse: t_max x dI/dV at mid-rail."""
        return float((self.current(self.v_mid + 0.01) - self.current(self.v_mid - 0.01)) / 0.02) * self.t_max

    @classmethod
    def ideal(cls, g: float = 20e-6, vdd: float = 0.9):
        """Linear cell, no decay, perfect write: the kernel then computes exact attention."""
        mid = vdd / 2
        return cls(vdd, mid, lambda v: g * (np.asarray(v) - mid), lambda v: np.asarray(v, float), np.inf, mid)

    @classmethod
    def from_bundle(cls, b, v_in: float | None = None, temperature: float = 27.0):
        s = b.need("gaincell.read_surface")
        (vlo, vhi), (_, yhi) = s.domain["x"], s.domain["y"]
        v_read = yhi if v_in is None else v_in
        w = b.need("gaincell.write")
        r = b.need("gaincell.retention")
        tau, veq = r.params_at(temperature)
        var = b.get("gaincell.variation")
        t_read = float(b["gaincell.t_read"]()) if "gaincell.t_read" in b else 15e-9
        mid = 0.5 * (vlo + vhi)
        nz = b.get("gaincell.read_noise")
        ws = b.get("gaincell.write_sigma")
        return cls(vhi, mid, lambda v: s(v, np.full(np.shape(v), v_read)), w, tau, veq,
                   (lambda v: var(v, np.full(np.shape(v), v_read))) if var is not None else None, t_read,
                   (lambda v: nz(v, np.full(np.shape(v), v_read))) if nz is not None else None, ws)


class CellReadout:
    """A cell as the kernel writes and reads it, for one configuration (pre-distortion, storage
    levels, expansion degree). Every derived table is built once, on first use."""

    TAYLOR_LIMIT = 0.25  # largest decay 1 - D read with the expansion in (D - 1)
    TABLE_POINTS = 65537  # uniform grid of the term tables over the stored range, VDD/20 beyond each end

    def __init__(self, cell: CellModel, predistort: bool, storage_levels: int, poly_degree: int):
        self.cell, self.predistort = cell, predistort
        self.storage_levels, self.poly_degree = storage_levels, poly_degree
        self._tables = {}  # kind -> (n, TABLE_POINTS) float32 term tables, filled by table()

    # -- writing --------------------------------------------------------------------------------
    @functools.cached_property
    def inverse_tables(self):
        """Monotone tables of the cell current and the write transfer, for pre-distortion:
        (v, w, vs, i, i_sym)."""
        c = self.cell
        v = np.linspace(0.0, c.vdd, 2001)
        w = np.asarray(c.write(v), float)
        w = np.maximum.accumulate(w)  # monotone for inversion
        v_max = float(w.max())  # highest storable voltage
        vs = np.linspace(0.0, v_max, 2001)
        i = np.asarray(self.read_current(vs), float)
        i_sym = float(min(abs(i[0]), abs(i[-1])))
        return v, w, vs, i, i_sym

    @functools.cached_property
    def v_zero(self) -> float:
        """Stored voltage of a zero: the retention equilibrium V_eq when it lies inside the
        storable range with a tenth of the range to spare on either side (decay then shrinks codes
        towards zero); otherwise the middle of the storable range. A V_eq at or beyond a rail
        (a write device that barely leaks, whose decay fit cannot place V_eq, e.g. SKY130's
        thick-oxide PMOS: tau ~ 6000 s) would leave no codes on one side of zero."""
        c = self.cell
        v_max = float(np.max(np.asarray(c.write(np.linspace(0.0, c.vdd, 2001)), float)))
        if 0.1 * v_max <= c.v_eq <= 0.9 * v_max:
            return float(c.v_eq)
        return 0.5 * v_max

    @functools.cached_property
    def i_eq(self) -> float:
        return float(self.cell.current(np.array([self.v_zero]))[0])

    @functools.cached_property
    def gain(self) -> float:
        return self.cell.gain()

    def read_current(self, v):
        """What a bit line delivers per cell: with pre-distortion, the cell's current minus that of
        a reference column of cells held at the retention equilibrium V_eq (differential read), so
        a stored zero is written at V_eq and decay shrinks codes towards zero instead of dragging
        them towards I(V_eq) (see :attr:`v_zero` for a V_eq outside the range); without, the cell
        current itself."""
        if not self.predistort:
            return self.cell.current(v)
        return self.cell.current(v) - self.i_eq

    def unit_charge(self) -> float:
        """Charge per unit of scaled key/value (and unit pulse): t_max x I_sym with
        pre-distortion, t_max x dI/dV at mid-rail without."""
        if self.predistort:
            return self.cell.t_max * self.inverse_tables[4]
        return self.cell.gain()

    @functools.cached_property
    def noise_var_q(self) -> float:
        """Read-noise charge variance of one cell for a full pulse (C^2): sigma_Q(V)^2 of the cell's
        noise model averaged over the stored voltages of the storage codes (or, unquantised, the
        storable range); a pulse of fraction u contributes u times it (white-noise scaling of the
        integration window), so a bit line of pulses u_i carries var = noise_var_q sum_i u_i. 0
        without a noise model."""
        if self.cell.noise_q is None:
            return 0.0
        if self.predistort and self.storage_levels and self.storage_levels >= 2:
            v = self.code_table
        else:
            v = np.linspace(0.0, self.inverse_tables[2][-1] if self.predistort else self.cell.vdd, 101)
        return float(np.mean(np.asarray(self.cell.noise_q(v), float) ** 2))

    def _stored(self, frac):
        """Stored voltage of a cell written so its read current is frac x I_sym."""
        v, w, vs, i, i_sym = self.inverse_tables
        v_target = np.interp(frac * i_sym, i, vs)   # voltage whose read current is frac x I_sym
        v_write = np.interp(v_target, w, v)          # what to drive so the cell ends there
        return np.asarray(self.cell.write(v_write), float)

    @functools.cached_property
    def code_table(self):
        """Stored voltage of each signed storage code -half .. half-1 (a mid-tread grid of
        storage_levels over [-1, 1] of I_sym: zero is a level)."""
        half = self.storage_levels // 2
        return self._stored(np.arange(-half, half) / half)

    def store(self, x, a, b):
        """Stored voltages of values x (kv, T, d) written through the per-head scalers a, b."""
        if not self.predistort:
            target = quantise(a[:, None, None] * x + b[:, None, None], 0.0, self.cell.vdd, self.storage_levels)
            return np.asarray(self.cell.write(target), float)
        levels = self.storage_levels
        if levels and levels >= 2:
            half = levels // 2
            code = signed_code(a[:, None, None] * x * half, half).astype(np.int64)
            return self.code_table[code + half]
        return self._stored(np.clip(a[:, None, None] * x, -1.0, 1.0))

    # -- reading --------------------------------------------------------------------------------
    def decay_terms(self, d_min):
        """(kind, [f_i]) with I(V_eq + y D) ~ sum_i D^i f_i(y), by the smaller of two expansions
        that fit the call's decay (d_min: the smallest D a query reads; 1 without decay: the
        current itself, one term):

        - while every D >= 1 - TAYLOR_LIMIT: Taylor in (D - 1) around the stored voltage V,
          I(V + y (D - 1)) = I - I' y (1 - D) + I'' y^2 (1 - D)^2 / 2 + O((1 - D)^3), collected
          in powers of D: three terms, I itself exact from the surrogate (derivatives from a
          degree-9 fit over the storable range);
        - otherwise the polynomial in y of degree poly_degree, (y D)^i c_i."""
        if d_min >= 1.0:
            return "none", self.terms_none
        if 1.0 - d_min <= self.TAYLOR_LIMIT:
            return "taylor", self.terms_taylor
        return "poly", self.terms_poly

    @functools.cached_property
    def terms_none(self):
        return [lambda y: self.read_current(y + self.cell.v_eq)]

    @functools.cached_property
    def terms_taylor(self):
        c = self.cell
        hi = self.inverse_tables[2][-1] if self.predistort else c.vdd
        v = np.linspace(0.0, hi, 401)
        fit = np.polynomial.Polynomial.fit(v, self.read_current(v), 9)
        d1, d2 = fit.deriv(1), fit.deriv(2)

        def f0(y):
            v = y + c.v_eq
            return self.read_current(v) - d1(v) * y + 0.5 * d2(v) * y * y

        def f1(y):
            v = y + c.v_eq
            return d1(v) * y - d2(v) * y * y

        def f2(y):
            return 0.5 * d2(y + c.v_eq) * y * y
        return [f0, f1, f2]

    @functools.cached_property
    def expansion(self):
        """c_i of I(V_eq + y) = sum_i c_i y^i over the stored range (least squares)."""
        v = np.linspace(0.0, self.cell.vdd, 201)
        y = v - self.cell.v_eq
        return np.polynomial.polynomial.polyfit(y, self.read_current(v), self.poly_degree)

    @functools.cached_property
    def terms_poly(self):
        return [(lambda y, ci=ci, i=i: ci * y ** i) for i, ci in enumerate(self.expansion)]

    def table(self, kind):
        """The term tables of one expansion on the uniform grid (built on first use)."""
        if kind not in self._tables:
            c = self.cell
            grid = np.linspace(-0.05 * c.vdd, 1.05 * c.vdd, self.TABLE_POINTS)
            fs = getattr(self, "terms_" + kind)
            self._tables[kind] = np.stack([np.asarray(f(grid - c.v_eq), float) for f in fs]).astype(np.float32)
        return self._tables[kind]

    def on_table_grid(self, v) -> bool:
        """Whether every voltage of v lies on the term tables' grid (:meth:`terms` then reads all of
        them from the tables, each row on its own; otherwise it evaluates every one directly)."""
        v = np.asarray(v)
        return not v.size or (v.min() >= -0.05 * self.cell.vdd and v.max() <= 1.05 * self.cell.vdd)

    def terms(self, v, kind, dev=None):
        """(S, n, d) float32: f_i(V - V_eq) of stored voltages v (S, d) for each term f_i of the
        expansion ``kind``, read from tables of each f_i on a uniform grid of TABLE_POINTS over
        [-VDD/20, 21 VDD/20] (linear interpolation: evaluating the surrogate at every cell of every
        key cost more than the attention; the tables' error is tested below 1e-5 of the largest
        current; voltages outside the grid are evaluated directly); a cell's fixed current
        deviation ``dev`` (S, d) joins the undecayed term f_0."""
        c = self.cell
        fs = getattr(self, "terms_" + kind)
        lo, hi = -0.05 * c.vdd, 1.05 * c.vdd
        v = np.asarray(v, np.float64)
        out = np.empty((v.shape[0], len(fs), v.shape[1]), np.float32)
        if not self.on_table_grid(v):
            y = v - c.v_eq
            for i, f in enumerate(fs):
                out[:, i] = f(y)
        else:
            _fused.interp_terms(np.ascontiguousarray(v), lo, (self.TABLE_POINTS - 1) / (hi - lo), self.table(kind), out)
        if dev is not None:
            out[:, 0] += dev
        return out
