"""Gain-cell attention: the KV cache lives in gain cells.

Signal path per layer and head (after Leroux et al., arXiv 2409.19315; see
../shared/reference/gaincell-attention.md), with every circuit effect from the surrogate bundle:

- **write**: k and v pass per-head affine scalers to target voltages, are quantised to
  ``storage_levels`` over [0, VDD], go through the write-transfer surrogate, and are stored with
  their write time (token index x ``token_period``) in the kernel's own cache;
- **decay**: stored (V - V_eq) decays as exp(-dt / tau(T)) (retention surrogate);
- **scores** (first array): q passes its scaler to a signed pulse width in [-1, 1] quantised to
  ``input_levels`` per sign. A negative pulse is applied in a second read phase with the
  integrator sign inverted (two-phase signed input; pulses themselves are unsigned). The charge
  of a product is pulse x t_max x I(V_store) from the read-surface surrogate at the read
  amplitude; a column sums the charge of up to ``rows`` cells (head dims), per-tile outputs
  clamped to the charge-to-pulse range and passed on in analog (not digitised);
- **activation**: ``hardsigmoid`` (no softmax, no normalisation: phi(S) = clamp(S / s_sat, 0, 1)),
  or ``softmax`` (an ADC of ``adc_bits`` on S, then a digital softmax);
- **values** (second array): pulses phi (softmax: divided by the row's largest weight, which is
  multiplied back digitally after the array) quantised to ``input_levels``;
  A = sum over keys of phi x t_max x I(V_value), keys in tiles of
  ``rows`` tokens, each tile's output clamped to [-1, 1] of ``out_scale`` and digitised to
  ``output_levels``, tiles summed digitally; then the output scaler.

Decay with a non-linear cell is kept separable by expanding the decayed cell current in a few
terms, I(V_eq + y D) ~ sum_i D^i f_i(y) (y = V - V_eq; a Taylor expansion in D - 1 while decay is
small, else a polynomial in y: ``_decay_terms``), and D[t, s] = exp(-(t - s) T_tok / tau) =
r_t k_s about a reference query: every term folds into the query rows and key columns of one
matrix product (the paper's form generalised to a curved cell). Queries go in blocks that read
only the keys they may see; the f_i come from fine tables of the surrogate (``_terms``); the
per-element work after each matrix product is compiled (:mod:`._fused`).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import ParameterError
from ..params import Validated, param
from ..transformer.cache import KVCache
from . import _fused
from .base import AttentionKernel, visible


@dataclasses.dataclass(frozen=True)
class GainCellConfig(Validated):
    input_levels: int = param(16, "", 0, 65536, "pulse-width levels per sign (0 = unquantised)")
    storage_levels: int = param(8, "", 0, 65536, "stored-voltage levels over [0, VDD] (0 = unquantised)")
    output_levels: int = param(32, "", 0, 65536, "levels of each tile's digitised output (0 = none)")
    rows: int = param(64, "", 1, 65536, "rows per array: cells summed on one bit line")
    token_period: float = param(65e-9, "s", 0.0, 1.0, "time between tokens (0 = no decay)")
    temperature: float = param(27.0, "degC", -55.0, 150.0, "temperature of the retention model")
    activation: str = param("softmax", choices=("softmax", "hardsigmoid"), doc="score activation")
    adc_bits: int = param(8, "bits", 0, 24, "ADC on the scores before the digital softmax (0 = none)")
    window: int = param(1024, "tokens", 0, 10**7, "causal sliding window (0 = unlimited)")
    poly_degree: int = param(5, "", 1, 12, "degree of the cell expansion used when decay is on")
    mismatch: bool = param(False, doc="fixed per-cell current deviation from the Monte Carlo surrogate")
    read_noise: float = param(0.0, "", 0.0, 1.0, "per-read Gaussian noise, relative to a tile's full scale")
    seed: int = param(0, "", 0, 2**31 - 1, "seed of mismatch and noise draws")
    query_scale: bool = param(False, doc="scale each query's pulses to its largest element (DAC reference "
                                        "per token), undone digitally on the scores")
    tile_scale: bool = param(True, doc="softmax: each value tile's pulses span the tile's largest weight (a "
                                       "per-tile DAC reference), multiplied back digitally after its ADC")
    predistort: bool = param(True, doc="write through the inverse cell and write-transfer curves, so the "
                                       "read current (not the voltage) is linear in k and v")
    retention_comp: bool = param(True, doc="softmax: undo the known decay digitally (each score divided by "
                                           "its decay factor after the ADC; each weight's pulse lengthened by it)")
    ratiometric: bool = param(True, doc="softmax: each value tile's ADC reference follows the tile's pulse sum "
                                        "(a reference column of full-scale cells driven by the same pulses), so "
                                        "the ADC digitises the weighted mean of the tile's values")


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
        return cls(vhi, mid, lambda v: s(v, np.full(np.shape(v), v_read)), w, tau, veq,
                   (lambda v: var(v, np.full(np.shape(v), v_read))) if var is not None else None, t_read)


def quantise(x, lo, hi, levels):
    """Round x (clipped to [lo, hi]) to ``levels`` evenly spaced values (levels 0: clip only)."""
    x = np.clip(x, lo, hi)
    if levels and levels > 1 and hi > lo:
        step = (hi - lo) / (levels - 1)
        x = lo + np.round((x - lo) / step) * step
    return x


def adc(x, full, levels):
    """A signed ADC of ``levels`` codes (two's complement: -levels/2 .. levels/2 - 1) over
    [-full, full): mid-tread, so zero is a code (levels 0: clip only). ``full`` may be an array
    broadcasting against x (one reference per row); a reference of 0 reads 0."""
    if not levels or levels < 2:
        return np.clip(x, -full, full)
    full = np.asarray(full)
    half = levels // 2
    step = np.where(full > 0, full, 1.0) / half
    out = np.where(full > 0, np.clip(np.round(x / step), -half, half - 1) * step, 0.0)
    return out.astype(x.dtype, copy=False) if isinstance(x, np.ndarray) else out


class GainCellCache(KVCache):
    """Stored cell voltages of K and V (written, before decay) and their write times, and each
    cell's fixed current deviation (mismatch; zero when off)."""

    token_arrays = KVCache.token_arrays + (("_dk", 1), ("_dv", 1))

    def __init__(self, n_kv_heads, head_dim, capacity=256):
        super().__init__(n_kv_heads, head_dim, capacity, dtype=np.float64)
        self._dk = np.zeros((n_kv_heads, capacity, head_dim), np.float32)
        self._dv = np.zeros((n_kv_heads, capacity, head_dim), np.float32)

    def append_mismatch(self, dk, dv):
        """The current deviations of the cells the next append() writes (call it first)."""
        self._write_ahead(_dk=dk, _dv=dv)

    @property
    def mismatch_k(self):
        return self._dk[:, : self.length]

    @property
    def mismatch_v(self):
        return self._dv[:, : self.length]


@dataclasses.dataclass
class Scalers:
    """Per-layer, per-head affine maps (arrays of shape (layers, heads))."""

    a_q: np.ndarray
    b_q: np.ndarray
    a_k: np.ndarray
    b_k: np.ndarray
    a_v: np.ndarray
    b_v: np.ndarray
    a_o: np.ndarray
    b_o: np.ndarray
    s_sat: np.ndarray        # hardsigmoid saturation (charge, C)
    score_scale: np.ndarray  # full scale of a score tile's digitised output (charge, C)
    out_scale: np.ndarray    # full scale of a value tile's digitised output (charge, C)
    # per-channel equalisation (layers, kv_heads, head_dim), exact in ideal arithmetic:
    # k / k_chan is stored and q x k_chan applied (digital, before the DAC); v / v_chan is stored
    # and the output multiplied by v_chan (digital, after the ADC). None = off.
    k_chan: np.ndarray | None = None
    v_chan: np.ndarray | None = None

    def save(self, path, meta: dict | None = None):
        from . import calfile
        calfile.save(path, "gaincell", dataclasses.asdict(self), meta or {})

    @classmethod
    def load(cls, path, expect: dict | None = None):
        from . import calfile
        names = [f.name for f in dataclasses.fields(cls)]
        lh, lk, lkd = ("L", "H"), ("L", "K"), ("L", "K", "D")
        arrays, _ = calfile.load(path, "gaincell", [n for n in names if n not in ("k_chan", "v_chan")],
                                 ("k_chan", "v_chan"), expect,
                                 shapes={**{n: lh for n in ("a_q", "b_q", "a_o", "b_o", "s_sat", "score_scale",
                                                            "out_scale")},
                                         **{n: lk for n in ("a_k", "b_k", "a_v", "b_v")},
                                         "k_chan": lkd, "v_chan": lkd})
        return cls(**arrays)

    @classmethod
    def identity(cls, layers, heads, kv_heads, cell: CellModel):
        """q in [-1, 1] per unit, k and v centred on mid-rail with a 1 V/unit gain; the output
        scaler undoes t_max x dI/dV so an ideal cell reproduces exact attention."""
        one = np.ones((layers, heads))
        kv1 = np.ones((layers, kv_heads))
        gain = cell.gain()
        i_fs = float(np.max(np.abs(cell.current(np.array([0.0, cell.vdd])))))
        # physical full scales: every cell of a 64-row score column at full current; a value tile
        # driven by softmax weights (sum <= 1) at most one full-current cell's charge
        return cls(one.copy(), 0 * one, kv1.copy(), cell.v_mid * kv1, kv1.copy(), cell.v_mid * kv1,
                   one / gain, 0 * one, np.full((layers, heads), np.inf), 64 * cell.t_max * i_fs * one,
                   cell.t_max * i_fs * one)


class GainCellAttention(AttentionKernel):
    name = "gaincell"

    def __init__(self, cell: CellModel, config: GainCellConfig, scalers: Scalers):
        self.cell, self.cfg, self.sc = cell, config, scalers
        self.rng = np.random.default_rng(config.seed)
        self._poly = None

    def new_cache(self, layer, n_kv_heads, head_dim):
        return GainCellCache(n_kv_heads, head_dim)

    # -- writing ------------------------------------------------------------------------------
    def _inverse_tables(self):
        """Monotone tables of the cell current and the write transfer, for pre-distortion."""
        if getattr(self, "_inv", None) is None:
            c = self.cell
            v = np.linspace(0.0, c.vdd, 2001)
            w = np.asarray(c.write(v), float)
            w = np.maximum.accumulate(w)  # monotone for inversion
            v_max = float(w.max())  # highest storable voltage
            vs = np.linspace(0.0, v_max, 2001)
            i = np.asarray(self.read_current(vs), float)
            i_sym = float(min(abs(i[0]), abs(i[-1])))
            self._inv = (v, w, vs, i, i_sym)
        return self._inv

    def read_current(self, v):
        """What a bit line delivers per cell: with pre-distortion, the cell's current minus that of
        a reference column of cells held at the retention equilibrium V_eq (differential read), so
        a stored zero is written at V_eq and decay shrinks codes towards zero instead of dragging
        them towards I(V_eq); without, the cell current itself."""
        if not self.cfg.predistort:
            return self.cell.current(v)
        if getattr(self, "_i_eq", None) is None:
            self._i_eq = float(self.cell.current(np.array([self.cell.v_eq]))[0])
        return self.cell.current(v) - self._i_eq

    def unit_charge(self) -> float:
        """Charge per unit of scaled key/value (and unit pulse): t_max x I_sym with
        pre-distortion, t_max x dI/dV at mid-rail without."""
        if self.cfg.predistort:
            return self.cell.t_max * self._inverse_tables()[4]
        return self.cell.gain()

    def _store(self, x, a, b):
        if not self.cfg.predistort:
            target = quantise(a[:, None, None] * x + b[:, None, None], 0.0, self.cell.vdd, self.cfg.storage_levels)
            return np.asarray(self.cell.write(target), float)
        v, w, vs, i, i_sym = self._inverse_tables()
        levels = self.cfg.storage_levels

        def stored(frac):
            v_target = np.interp(frac * i_sym, i, vs)   # voltage whose read current is frac x I_sym
            v_write = np.interp(v_target, w, v)          # what to drive so the cell ends there
            return np.asarray(self.cell.write(v_write), float)
        if levels and levels >= 2:
            # signed storage codes: a mid-tread grid of storage_levels over [-1, 1] (zero is a
            # level); each code's stored voltage computed once
            half = levels // 2
            if getattr(self, "_code_table", (None,))[0] != levels:
                self._code_table = (levels, stored(np.arange(-half, half) / half))
            code = np.clip(np.rint(a[:, None, None] * x * half), -half, half - 1).astype(np.int64)
            return self._code_table[1][code + half]
        return stored(np.clip(a[:, None, None] * x, -1.0, 1.0))

    def __call__(self, q, k, v, positions, mask, cache, layer):
        sc = self.sc
        if sc.k_chan is not None:
            k = k / sc.k_chan[layer][:, None, :]
        if sc.v_chan is not None:
            v = v / sc.v_chan[layer][:, None, :]
        vk, vv = self._store(k, sc.a_k[layer], sc.b_k[layer]), self._store(v, sc.a_v[layer], sc.b_v[layer])
        if self.cfg.mismatch and self.cell.sigma is not None:
            # each cell's fixed deviation: its Monte Carlo sigma at the written voltage x N(0, 1)
            cache.append_mismatch(self.cell.sigma(vk) * self.rng.standard_normal(vk.shape),
                                  self.cell.sigma(vv) * self.rng.standard_normal(vv.shape))
        cache.append(vk, vv, positions)
        return self.attend(q, positions, mask, cache, layer)

    # -- reading ------------------------------------------------------------------------------
    TAYLOR_LIMIT = 0.25  # largest decay 1 - D read with the expansion in (D - 1)

    def _decay_terms(self, d_min):
        """(kind, [f_i]) with I(V_eq + y D) ~ sum_i D^i f_i(y), by the smaller of two expansions
        that fit the call's decay (d_min: the smallest D a query reads; 1 without decay: the
        current itself, one term):

        - while every D >= 1 - TAYLOR_LIMIT: Taylor in (D - 1) around the stored voltage V,
          I(V + y (D - 1)) = I - I' y (1 - D) + I'' y^2 (1 - D)^2 / 2 + O((1 - D)^3), collected
          in powers of D: three terms, I itself exact from the surrogate (derivatives from a
          degree-9 fit over the storable range);
        - otherwise the polynomial in y of degree poly_degree, (y D)^i c_i."""
        fs = self.__dict__.setdefault("_fs", {})
        if d_min >= 1.0:
            if "none" not in fs:
                fs["none"] = [lambda y: self.read_current(y + self.cell.v_eq)]
            return "none", fs["none"]
        if 1.0 - d_min <= self.TAYLOR_LIMIT:
            if "taylor" not in fs:
                c = self.cell
                hi = self._inverse_tables()[2][-1] if self.cfg.predistort else c.vdd
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
                fs["taylor"] = [f0, f1, f2]
            return "taylor", fs["taylor"]
        if "poly" not in fs:
            fs["poly"] = [(lambda y, ci=ci, i=i: ci * y ** i) for i, ci in enumerate(self._expansion())]
        return "poly", fs["poly"]

    def _expansion(self):
        """c_i of I(V_eq + y) = sum_i c_i y^i over the stored range (least squares)."""
        if self._poly is None:
            v = np.linspace(0.0, self.cell.vdd, 201)
            y = v - self.cell.v_eq
            self._poly = np.polynomial.polynomial.polyfit(y, self.read_current(v), self.cfg.poly_degree)
        return self._poly

    def _decays(self):
        return np.isfinite(self.cell.tau) and self.cfg.token_period > 0

    TABLE_POINTS = 65537  # uniform grid of the term tables over the stored range, VDD/20 beyond each end

    def _terms(self, v, kind, dev=None):
        """(S, n, d) float32: f_i(V - V_eq) of stored voltages v (S, d) for each term f_i of the
        expansion ``kind``, read from tables of each f_i on a uniform grid of TABLE_POINTS over
        [-VDD/20, 21 VDD/20] (linear interpolation: evaluating the surrogate at every cell of every
        key cost more than the attention; the tables' error is tested below 1e-5 of the largest
        current; voltages outside the grid are evaluated directly); a cell's fixed current
        deviation ``dev`` (S, d) joins the undecayed term f_0."""
        c = self.cell
        fs = self._fs[kind]
        lo, hi = -0.05 * c.vdd, 1.05 * c.vdd
        tables = self.__dict__.setdefault("_tables", {})
        if kind not in tables:
            grid = np.linspace(lo, hi, self.TABLE_POINTS)
            tables[kind] = np.stack([np.asarray(f(grid - c.v_eq), float) for f in fs]).astype(np.float32)
        v = np.asarray(v, np.float64)
        out = np.empty((v.shape[0], len(fs), v.shape[1]), np.float32)
        if v.size and (v.min() < lo or v.max() > hi):
            y = v - c.v_eq
            for i, f in enumerate(fs):
                out[:, i] = f(y)
        else:
            _fused.interp_terms(np.ascontiguousarray(v), lo, (self.TABLE_POINTS - 1) / (hi - lo), tables[kind], out)
        if dev is not None:
            out[:, 0] += dev
        return out

    BLOCK = 256  # queries per block; each block reads only the keys its queries may see

    def _blocks(self, allowed, lam, n):
        """(b0, b1, lo, hi) per block of queries: rows b0..b1 of ``allowed`` read keys lo..hi
        (lo at a tile boundary of the value arrays); blocks short enough that the decay factors
        exp(+-lam n (block length)) stay far inside float32."""
        T = allowed.shape[0]
        B = self.BLOCK if lam <= 0 else max(1, min(self.BLOCK, int(30.0 / (lam * n))))
        rows = self.cfg.rows
        out = []
        for b0 in range(0, T, B):
            b1 = min(T, b0 + B)
            cols = np.flatnonzero(allowed[b0:b1].any(axis=0))
            if cols.size:
                out.append((b0, b1, (int(cols[0]) // rows) * rows, int(cols[-1]) + 1))
        return out

    def attend(self, q, positions, mask, cache, layer):
        """Per KV head, its g query heads stacked as rows, in blocks of queries: scores (one GEMM
        per head-dim tile, every expansion term folded into the operands), the activation, then the
        value tiles (one batched GEMM per block and a fused epilogue of ADCs). The decay of key s
        at query t, D = exp(-lam (t - s)) = r_t k_s with r_t = exp(-lam (t - c)), k_s =
        exp(-lam (c - s)) about the block's first query c, is separable, and so is each term
        D^i f_i(y) of the cell current."""
        cfg, sc = self.cfg, self.sc
        keys, values, kpos = cache.keys, cache.values, cache.positions
        n_kv, S, d = keys.shape
        H, T, _ = q.shape
        g = H // n_kv
        allowed = visible(mask, positions, kpos, cfg.window)
        bias = np.where(allowed, np.float32(0.0), np.float32(-np.inf))
        lam = 0.0
        kind, fs = self._decay_terms(1.0)
        if self._decays():
            lam = cfg.token_period / self.cell.tau  # decay per token step
            oldest = max(int(positions.max()) - int(kpos.min()), 0)  # age of the oldest key a query may read
            if cfg.window:
                oldest = min(oldest, cfg.window)
            kind, fs = self._decay_terms(min(math.exp(-lam * oldest), 1.0 - 1e-12))
        n = len(fs)
        blocks = self._blocks(allowed, lam, n)
        gain = self.unit_charge()
        soft = cfg.activation == "softmax"
        use_comp = lam > 0 and soft and cfg.retention_comp
        half = 2 ** cfg.adc_bits // 2 if (soft and cfg.adc_bits) else 0
        mode = (2 if cfg.tile_scale else 1) if soft else 0
        tmax = self.cell.t_max
        out = np.empty((H, T, d), np.float32)
        factors = {}
        for (b0, b1, lo, hi) in blocks:
            c0 = float(positions[b0])
            r = np.exp(-lam * (positions[b0:b1] - c0))
            k = np.exp(-lam * (c0 - kpos[lo:hi]))
            rw = np.stack([tmax * r ** i for i in range(n)]).astype(np.float32)  # (n, tb)
            kw = np.stack([k ** i for i in range(n)], axis=1).astype(np.float32)  # (s, n)
            factors[b0] = (rw, kw, (1.0 / r).astype(np.float32), np.minimum(1.0 / np.maximum(k, 1e-30), 1e6)
                           .astype(np.float32), np.ascontiguousarray(bias[b0:b1, lo:hi]))
        for j in range(n_kv):  # the g query heads reading one KV head's arrays, stacked as rows
            hs = np.arange(j * g, (j + 1) * g)
            qh = q[hs].astype(np.float32)
            if sc.k_chan is not None:
                qh = qh * sc.k_chan[layer, j].astype(np.float32)
            u = sc.a_q[layer, hs][:, None, None] * qh + sc.b_q[layer, hs][:, None, None]
            # per-query DAC full scale = the query's largest |u| (undone digitally on the charge)
            u_max = (np.abs(u).max(axis=2, keepdims=True).clip(min=1e-12) if cfg.query_scale
                     else np.ones((g, T, 1), np.float32))
            u = (np.sign(u) * quantise(np.abs(u) / u_max, 0.0, 1.0, cfg.input_levels)).astype(np.float32)
            # digital rescale of the charge: softmax -> logits (an ideal cell gives q.k / sqrt(d))
            row_scale = u_max[:, :, 0].astype(np.float32)
            if soft:
                row_scale = row_scale / (gain * sc.a_q[layer, hs] * sc.a_k[layer, j] * np.sqrt(d)
                                         ).astype(np.float32)[:, None]
            s_full = (sc.score_scale[layer, hs] if cfg.output_levels else np.full(g, np.inf)).astype(np.float32)
            Fk = self._terms(keys[j], kind, cache.mismatch_k[j] if cfg.mismatch else None)
            Fv = self._terms(values[j], kind, cache.mismatch_v[j] if cfg.mismatch else None)
            zs = {}  # each block's (g, tb, s) scores, then weights
            hmax = np.zeros(g, np.float32)
            for (b0, b1, lo, hi) in blocks:  # scores
                rw, kw, _, _, bb = factors[b0]
                tb = b1 - b0
                zs[b0] = np.empty((g, tb, hi - lo), np.float32)
                lhs = (u[:, b0:b1, None, :] * rw.T[None, :, :, None]).reshape(g * tb, n * d)
                rhs = (Fk[lo:hi] * kw[:, :, None]).reshape(hi - lo, n * d)
                for k0 in range(0, d, cfg.rows):  # tiles over head dims, each clamped on its own
                    cols = (np.arange(n)[:, None] * d + np.arange(k0, min(d, k0 + cfg.rows))[None, :]).ravel()
                    x = (lhs @ rhs.T) if cols.size == n * d else (lhs[:, cols] @ rhs[:, cols].T)
                    if cfg.read_noise > 0 and cfg.output_levels:
                        x += (cfg.read_noise * np.repeat(s_full, tb)[:, None]
                              * self.rng.standard_normal(x.shape)).astype(np.float32)
                    last = k0 + cfg.rows >= d
                    m = _fused.score_tile(x, s_full, np.ascontiguousarray(row_scale[:, b0:b1]), zs[b0], k0 > 0,
                                          bb, last and soft and half > 0)
                    np.maximum(hmax, m, out=hmax)
            acc = np.zeros((g, T, d), np.float32)
            v_full = sc.out_scale[layer, hs].astype(np.float32)
            probe = self._probe_head(layer, hs)
            weights = np.zeros((T, S), np.float32) if probe is not None else None
            inv_sat = (1.0 / sc.s_sat[layer, hs]).astype(np.float32)
            for (b0, b1, lo, hi) in blocks:  # activation and values
                rw, kw, inv_r, inv_k, bb = factors[b0]
                zb = zs.pop(b0)
                if soft:
                    # the score ADC (reference: the head's largest |logit| in this call), the decay
                    # undone digitally, softmax over the visible keys, older keys' pulses lengthened
                    _fused.softmax_block(zb, hmax if half else np.ones(g, np.float32), half, inv_r, inv_k,
                                         use_comp, bb)
                if weights is not None:
                    w = zb[probe]
                    if not soft:
                        w = np.clip(w / np.float32(sc.s_sat[layer, hs[probe]]), 0, 1)
                    weights[b0:b1, lo:hi] = np.where(allowed[b0:b1, lo:hi], w, 0)
                VT = Fv[lo:hi] * kw[:, :, None]
                acc[:, b0:b1] += self._value_block(zb, bb, VT, rw, v_full, mode, inv_sat,
                                                   (layer, hs)).reshape(g, b1 - b0, d)
            if weights is not None:
                self.probe_out = (positions.copy(), kpos.copy(), weights)  # the head's attention weights
            if sc.v_chan is not None:
                acc *= sc.v_chan[layer, j].astype(np.float32)
            scale = (sc.a_o[layer, hs] * (self._cell_gain() / gain) / sc.a_v[layer, j])[:, None, None]
            out[hs] = scale * acc + sc.b_o[layer, hs][:, None, None]
        return out.astype(q.dtype)

    def _probe_head(self, layer, hs):
        pr = getattr(self, "probe", None)
        if pr is not None and pr[0] == layer and pr[1] in hs and getattr(self, "probe_out", None) is None:
            return int(pr[1] - hs[0])
        return None

    def _value_block(self, p, bias, VT, rw, full, mode, inv_sat, ctx=None):
        """A block's value arrays: p (g, tb, s) weights (or hardsigmoid charges), VT (s, n, dd) the
        value terms of its keys (decay factors applied), rw (n, tb) the query-side factors, full (g,)
        each head's tile full scale. Pulses per tile (``mode``: 0 none, 1 row, 2 tile scaling),
        one batched GEMM over the tiles, then each tile's ADC (ratiometric or fixed reference),
        multiplied back and summed digitally. Returns (g tb, dd)."""
        cfg = self.cfg
        g, tb, s = p.shape
        n, dd = VT.shape[1], VT.shape[2]
        rows = cfg.rows
        ntl = -(-s // rows)
        R = g * tb
        pq = np.empty((ntl, R, rows), np.float32)
        m = np.ones((R, ntl), np.float32)
        psum = np.empty((R, ntl), np.float32)
        _fused.tile_pulses(p, bias, mode, inv_sat, cfg.input_levels, rows, pq, m, psum)
        vt = np.zeros((ntl * rows, n * dd), np.float32)
        vt[:s] = VT.reshape(s, n * dd)
        M = np.matmul(pq, vt.reshape(ntl, rows, n * dd))  # (ntl, R, n dd): every tile's raw charge terms
        rwr = np.tile(rw, (1, g))  # (n, R): row factors repeated per stacked head
        ratio = mode == 2 and cfg.ratiometric
        full_r = np.repeat(np.asarray(full, np.float32), tb)
        digitise = bool(cfg.output_levels) and not np.all(np.isinf(full_r))
        acc = np.zeros((R, dd), np.float32)
        record = getattr(self, "_tile_record", None) is not None and ctx is not None
        if not record and not (cfg.read_noise > 0 and digitise):
            _fused.tile_outputs(M, rwr, dd, psum, m, ratio, full_r, cfg.output_levels // 2, digitise, acc)
            return acc
        parts = np.empty((ntl, R, dd), np.float32)  # tile outputs before their ADC
        _fused.tile_parts(M, rwr, psum, ratio, parts)
        read = psum.T > 0  # (ntl, R): rows that drive the tile
        if record:
            layer, hs = ctx
            q = self._tile_quantile
            for i, h in enumerate(hs):
                for k in range(ntl):
                    blk = parts[k, i * tb:(i + 1) * tb][read[k, i * tb:(i + 1) * tb]]
                    if blk.size:
                        self._tile_record.setdefault((layer, h), []).append(np.quantile(np.abs(blk), q))
        if digitise:
            if cfg.read_noise > 0:
                noise = self.rng.standard_normal(parts.shape).astype(np.float32)
                parts += np.float32(cfg.read_noise) * full_r[None, :, None] * noise
            parts = adc(parts, full_r[None, :, None], cfg.output_levels)
        back = (psum if ratio else 1.0) * m  # (R, ntl)
        return (parts * (back.T * read)[:, :, None]).sum(axis=0).astype(np.float32)

    def _values(self, p, vv, D, full, allowed=None, dev=None):
        """Value arrays for weights p (R, S) over stored values vv (S, dd), no decay (D None), one
        block: what the attention path computes, for hand-computed tests."""
        if D is not None:
            raise ValueError("_values: decay is applied by attend()")
        R, S = p.shape
        bias = np.zeros((R, S), np.float32) if allowed is None else np.where(allowed, 0, -np.inf).astype(np.float32)
        mode = (2 if self.cfg.tile_scale else 1) if self.cfg.activation == "softmax" else 0
        VT = self._terms(vv, self._decay_terms(1.0)[0], dev)
        rw = np.full((1, R), self.cell.t_max, np.float32)
        return self._value_block(np.asarray(p, np.float32)[None], bias, VT, rw, np.atleast_1d(np.float32(full))[:1],
                                 mode, np.ones(1, np.float32))

    def _cell_gain(self):
        if getattr(self, "_gain", None) is None:
            self._gain = self.cell.gain()
        return self._gain


def ideal_kernel(layers, heads, kv_heads):
    """Ideal cell, unquantised, no decay, softmax without ADC: equals exact attention."""
    cell = CellModel.ideal()
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=0.0, adc_bits=0,
                         window=0, predistort=False)
    return GainCellAttention(cell, cfg, Scalers.identity(layers, heads, kv_heads, cell))


__all__ = ["GainCellAttention", "GainCellConfig", "CellModel", "Scalers", "quantise", "adc",
           "ideal_kernel"]


class _Recorder:
    """Wraps a kernel and records per-layer, per-head statistics of q, k, v (for calibration)."""

    def __init__(self, inner, layers, heads, kv_heads, quantile, transform=None, score_quantile=None):
        self.inner, self.name, self.quantile, self.transform = inner, "recorder", quantile, transform
        self.score_quantile = quantile if score_quantile is None else score_quantile
        self.q = [[[] for _ in range(heads)] for _ in range(layers)]
        self.k = [[[] for _ in range(kv_heads)] for _ in range(layers)]
        self.v = [[[] for _ in range(kv_heads)] for _ in range(layers)]
        self.qk = [[[] for _ in range(heads)] for _ in range(layers)]

    def new_cache(self, layer, n_kv_heads, head_dim):
        return self.inner.new_cache(layer, n_kv_heads, head_dim)

    def __call__(self, q, k, v, positions, mask, cache, layer):
        if self.transform is not None:
            q, k, v = self.transform(q, k, v, layer)
        g = q.shape[0] // k.shape[0]
        for h in range(q.shape[0]):
            self.q[layer][h].append(np.quantile(np.abs(q[h]), self.quantile))
            self.qk[layer][h].append(np.quantile(np.abs(q[h] @ k[h // g].T), self.score_quantile))
        for j in range(k.shape[0]):
            self.k[layer][j].append(np.quantile(np.abs(k[j]), self.quantile))
            self.v[layer][j].append(np.quantile(np.abs(v[j]), self.quantile))
        return self.inner(q, k, v, positions, mask, cache, layer)


def _channel_scales(model, token_windows):
    """Per layer and KV head, per channel: k_chan = sqrt(max|k_d| / max|q_d|) (q pooled over the
    heads that read this KV head; SmoothQuant's balance with alpha = 1/2) and v_chan = max|v_d|."""
    from .base import IdealAttention
    c = model.config
    qm = np.zeros((c.n_layers, c.n_kv_heads, c.head_dim))
    km, vm = np.zeros_like(qm), np.zeros_like(qm)

    class _Max(IdealAttention):
        def __call__(self, q, k, v, positions, mask, cache, layer):
            g = q.shape[0] // k.shape[0]
            qq = np.abs(q).reshape(k.shape[0], g, -1, q.shape[-1]).max(axis=(1, 2))
            np.maximum(qm[layer], qq, out=qm[layer])
            np.maximum(km[layer], np.abs(k).max(axis=1), out=km[layer])
            np.maximum(vm[layer], np.abs(v).max(axis=1), out=vm[layer])
            return super().__call__(q, k, v, positions, mask, cache, layer)

    for ids in token_windows:
        rec = _Max()
        model.forward(ids, caches=model.new_caches(rec), kernel=rec, logits="none")
    k_chan = np.sqrt(np.maximum(km, 1e-6) / np.maximum(qm, 1e-6))
    return k_chan, np.maximum(vm, 1e-6)


def calibrate_ranges(model, token_windows, cell: CellModel, quantile: float = 0.999, headroom: float = 0.9,
                     kernel: "GainCellAttention | None" = None, equalise: bool = True,
                     score_quantile: float | None = None, score_margin: float = 1.0):
    """Training-free range calibration: per layer and head, the ``quantile`` of |q| maps to a full
    pulse and that of |k| and |v| to ``headroom`` x (VDD/2) around mid-rail. Output scaler:
    1 / (t_max dI/dV) so a linear cell gives back sum p v. (A first calibration; the paper's
    mean/std matching and a least-squares output fit are the next step of issue #6.)"""
    from .base import IdealAttention
    c = model.config
    k_chan, v_chan = _channel_scales(model, token_windows) if equalise else (None, None)

    def equalised(q, k, v, layer):  # what the arrays will see
        if k_chan is None:
            return q, k, v
        g = q.shape[0] // k.shape[0]
        return (q * np.repeat(k_chan[layer], g, axis=0)[:, None, :], k / k_chan[layer][:, None, :],
                v / v_chan[layer][:, None, :])

    rec = _Recorder(IdealAttention(), c.n_layers, c.n_heads, c.n_kv_heads, quantile, equalised, score_quantile)
    for ids in token_windows:
        model.forward(ids, caches=model.new_caches(rec), kernel=rec, logits="none")
    qs = np.array([[np.mean(x) for x in layer] for layer in rec.q])
    ks = np.array([[np.mean(x) for x in layer] for layer in rec.k])
    vs = np.array([[np.mean(x) for x in layer] for layer in rec.v])
    sc = Scalers.identity(c.n_layers, c.n_heads, c.n_kv_heads, cell)
    sc.k_chan, sc.v_chan = k_chan, v_chan
    predistort = kernel is not None and kernel.cfg.predistort
    half = headroom if predistort else headroom * cell.vdd / 2  # fraction of I_sym, or volts
    sc.a_q = 1.0 / np.maximum(qs, 1e-9)
    sc.a_k = half / np.maximum(ks, 1e-9)
    sc.a_v = half / np.maximum(vs, 1e-9)
    # score tiles: full scale at the quantile of |q.k| mapped through the scalers and the cell gain
    qk = np.array([[np.mean(x) for x in layer] for layer in rec.qk])
    gain = kernel.unit_charge() if kernel is not None else cell.gain()
    kv_of = np.arange(c.n_heads) // (c.n_heads // c.n_kv_heads)
    sc.score_scale = score_margin * gain * sc.a_q * sc.a_k[:, kv_of] * qk
    # hardsigmoid: the calibration quantile of |q.k| saturates the pulse (training-free S_sat)
    sc.s_sat = sc.score_scale.copy()
    sc.out_scale = gain * sc.a_v[:, kv_of] * vs[:, kv_of]  # a value tile's output at most ~ max |v|
    return sc


def calibrate_tiles(model, token_windows, kernel: "GainCellAttention", quantile: float = 0.999,
                    margin: float = 1.1):
    """Set each head's value-tile full scale to ``margin`` x the ``quantile`` of |tile output|
    seen on calibration text (run with output digitisation off), instead of the worst case: the
    quantile over the rows that drive a tile, for every (query block, tile), and the largest of
    those per head."""
    levels = kernel.cfg.output_levels
    kernel.cfg = dataclasses.replace(kernel.cfg, output_levels=0)
    kernel._tile_record, kernel._tile_quantile = {}, quantile
    try:
        for ids in token_windows:
            model.forward(ids, caches=model.new_caches(kernel), kernel=kernel, logits="none")
    finally:
        rec, kernel._tile_record = kernel._tile_record, None
        kernel.cfg = dataclasses.replace(kernel.cfg, output_levels=levels)
    for (layer, h), vals in rec.items():
        kernel.sc.out_scale[layer, h] = margin * float(np.max(vals))
    return kernel.sc


def calibrate_output(model, token_windows, kernel: "GainCellAttention", method: str = "lstsq"):
    """Per layer and head, fit the output scaler so the circuit's attention output matches the
    ideal model's on calibration text, each layer fed the ideal model's own q, k, v (no error
    build-up during calibration).

    - ``meanstd``: the paper's rule for a scaler, a <- a sigma_ideal / sigma, b <- b + mu_ideal - mu
      (applied once, exactly, instead of iterated with damping: with q, k, v fixed it converges
      in one step);
    - ``lstsq``: least squares of the ideal output on the circuit output (slope and offset), which
      minimises the output error instead of matching two moments.
    """
    from ..transformer.cache import KVCache
    from .base import IdealAttention

    if method not in ("lstsq", "meanstd"):
        raise ParameterError("calibration", method, "lstsq or meanstd")
    c = model.config
    captured = {}

    class _Capture(IdealAttention):
        def __call__(self, q, k, v, positions, mask, cache, layer):
            captured.setdefault(layer, []).append((q.copy(), k.copy(), v.copy(), positions.copy(), mask))
            return super().__call__(q, k, v, positions, mask, cache, layer)

    for ids in token_windows:
        cap = _Capture()
        model.forward(ids, caches=model.new_caches(cap), kernel=cap, logits="none")
    sc = kernel.sc
    base = 1.0 / kernel.cell.gain()
    for layer in range(c.n_layers):
        sc.a_o[layer, :], sc.b_o[layer, :] = base, 0.0
        xs, ys = [], []
        for q, k, v, pos, mask in captured[layer]:
            ys.append(IdealAttention()(q, k, v, pos, mask, KVCache(c.n_kv_heads, c.head_dim), layer))
            xs.append(kernel(q, k, v, pos, mask, kernel.new_cache(layer, c.n_kv_heads, c.head_dim), layer))
        x = np.concatenate(xs, axis=1).astype(np.float64)
        y = np.concatenate(ys, axis=1).astype(np.float64)
        for h in range(c.n_heads):
            xh, yh = x[h].ravel(), y[h].ravel()
            if not (np.isfinite(xh).all() and np.isfinite(yh).all()):
                raise ParameterError(f"calibration (layer {layer}, head {h})", "non-finite output",
                                     "finite kernel outputs on the calibration text")
            if method == "meanstd":
                a = yh.std() / max(xh.std(), 1e-30)
                b = yh.mean() - a * xh.mean()
            else:
                xc = xh - xh.mean()  # closed-form least squares (polyfit's SVD fails on degenerate heads)
                a = float((xc * (yh - yh.mean())).sum() / max((xc * xc).sum(), 1e-300))
                b = yh.mean() - a * xh.mean()
            sc.a_o[layer, h], sc.b_o[layer, h] = a * base, b
    return sc


def calibrated_kernel(model, token_windows, cell: CellModel, config: GainCellConfig, method: str = "meanstd",
                      equalise: bool = True, ranges: "Scalers | None" = None, **range_options):
    """A gain-cell kernel with every calibration step: ranges (or a copy of ``ranges`` from an
    earlier call: they do not depend on levels or activation), value-tile full scales on the first
    window, and the output scaler by ``method`` (meanstd | lstsq | none). Returns (kernel, ranges)."""
    kernel = GainCellAttention(cell, config, None)
    if ranges is None:
        ranges = calibrate_ranges(model, token_windows, cell, kernel=kernel, equalise=equalise, **range_options)
    kernel.sc = dataclasses.replace(ranges, a_o=ranges.a_o.copy(), b_o=ranges.b_o.copy(),
                                    out_scale=ranges.out_scale.copy())
    calibrate_tiles(model, token_windows[:1], kernel)
    if method != "none":
        calibrate_output(model, token_windows[:1], kernel, method)
    return kernel, ranges
