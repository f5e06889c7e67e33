"""Gain-cell attention: the KV cache lives in gain cells (work in progress, issue #6).

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

Decay with a non-linear cell is kept separable by expanding the cell current in powers of
y = V - V_eq: I = sum_i c_i y^i, so S = sum_i c_i (U (Y^i)^T) .* D^i with D[t, s] = exp(-dt / tau)
(the paper's form). Without decay the surrogate is evaluated directly.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import ParameterError
from ..params import Validated, param
from ..transformer.cache import KVCache
from . import _fused
from .base import AttentionKernel, exp_rows_, visible


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


_ONE = np.ones((1, 1), np.float32)


def _stack_rows(a, R):
    """(T, ...) per-query rows repeated for the R // T heads stacked as rows."""
    return np.tile(a, (R // a.shape[0], 1))


class Separable:
    """Decay D[t, s] = r_t k_s (r: query rows, k: keys, relative to the block's first query), and
    the read current of a decayed cell as a short sum of separable terms,
    I(V_eq + y D) ~ sum_i r_t^i k_s^i f_i(y_s), so every term folds into the query rows and the
    key columns of one matrix product. (A key written after t0 but before t has k_s > 1, r_t < 1;
    keys after the query, masked anyway, get the same formula instead of D = 1.)"""

    def __init__(self, r, k, terms):
        self.r, self.k, self.terms = np.asarray(r, float), np.asarray(k, float), terms
        self.n = len(terms)

    def row_weights(self, t_max):
        """[(T, 1) t_max r^i for each term i]."""
        return [(t_max * self.r ** i)[:, None] for i in range(self.n)]

    def key_terms(self, y):
        """[(S, d) k^i f_i(y) for each term i] (y: stored V - V_eq of the keys)."""
        return [f(y) * (self.k ** i)[:, None] for i, f in enumerate(self.terms)]

    def matrix(self):
        return self.r[:, None] * self.k[None, :]


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
        arrays, _ = calfile.load(path, "gaincell", [n for n in names if n not in ("k_chan", "v_chan")],
                                 ("k_chan", "v_chan"), expect)
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
        """f_i with I(V_eq + y D) ~ sum_i (r k)^i f_i(y) (D = r k), by the smaller of two
        expansions that fit the block's decay:

        - while every D >= 1 - TAYLOR_LIMIT: Taylor in (D - 1) around the stored voltage V,
          I(V + y (D - 1)) = I - I' y (1 - D) + I'' y^2 (1 - D)^2 / 2 + O((1 - D)^3), collected
          in powers of D: three terms, I itself exact from the surrogate (derivatives from a
          degree-9 fit over the storable range);
        - otherwise the polynomial in y of degree poly_degree, (y D)^i c_i."""
        if 1.0 - d_min <= self.TAYLOR_LIMIT:
            if getattr(self, "_taylor", None) is None:
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
                self._taylor = [f0, f1, f2]
            return self._taylor
        return [(lambda y, ci=ci, i=i: ci * y ** i) for i, ci in enumerate(self._expansion())]

    def _expansion(self):
        """c_i of I(V_eq + y) = sum_i c_i y^i over the stored range (least squares)."""
        if self._poly is None:
            v = np.linspace(0.0, self.cell.vdd, 201)
            y = v - self.cell.v_eq
            self._poly = np.polynomial.polynomial.polyfit(y, self.read_current(v), self.cfg.poly_degree)
        return self._poly


    def _decays(self):
        return np.isfinite(self.cell.tau) and self.cfg.token_period > 0

    def _scores(self, u, vk, D, full, dev=None):
        """S[t, s] = t_max sum_d u[t, d] I(V_eq + (vk[s, d] - V_eq) D[t, s]); tiles of rows over d,
        each clamped to +-full (the charge-to-pulse stage's range; scalar or one per row) but not
        digitised: the score goes on in analog (to the hardsigmoid pulse, or to the ADC before the
        softmax). u may stack several heads' queries (rows); D's row factors repeat per head.
        ``dev`` (S, d): the cells' fixed current deviations (mismatch)."""
        c, cfg = self.cell, self.cfg
        full = full if cfg.output_levels else None
        R, d = u.shape
        out = np.zeros((R, vk.shape[0]), np.float32)
        if not self._decays():
            cur = ((self.read_current(vk) + (0 if dev is None else dev)) * c.t_max).astype(np.float32)
            for k0 in range(0, d, cfg.rows):
                sl = slice(k0, k0 + cfg.rows)
                out += self._digitise(u[:, sl].astype(np.float32) @ cur[:, sl].T, full, levels=0)
            return out
        if isinstance(D, Separable):
            terms = self._key_terms(vk, D, dev)
            wts = self._row_weights(D, R)
            n = len(wts)
            for k0 in range(0, d, cfg.rows):  # tiles over head dims: one GEMM each
                sl = slice(k0, k0 + cfg.rows)
                w = min(cfg.rows, d - k0)
                lhs = np.empty((R, n * w), np.float32)
                for i in range(n):
                    np.multiply(u[:, sl], wts[i], out=lhs[:, i * w:(i + 1) * w])
                rhs = terms if w == d else terms[:, np.concatenate([np.arange(i * d + k0, i * d + k0 + w)
                                                                    for i in range(n)])]
                out += self._digitise(lhs @ rhs.T, full, levels=0)
            return out
        y = vk - c.v_eq
        Dr = [_stack_rows(x, R) for x in D]
        for k0 in range(0, d, cfg.rows):  # tiles over head dims, explicit decay powers
            part = np.zeros(out.shape)
            for i, ci in enumerate(self._expansion()):
                part += (u[:, k0:k0 + cfg.rows] @ (y[:, k0:k0 + cfg.rows] ** i).T) * (ci * c.t_max) * Dr[i]
            if dev is not None:
                part += (u[:, k0:k0 + cfg.rows] @ dev[:, k0:k0 + cfg.rows].T) * c.t_max
            out += self._digitise(part, full, levels=0)
        return out

    def _key_terms(self, vv, D, dev=None):
        """(S, n d) float32: [k^0 f_0(y) | k^1 f_1(y) | ...] of stored y = V - V_eq (Separable
        decay); a cell's fixed current deviation ``dev`` (S, d) joins the undecayed term."""
        t = np.concatenate(D.key_terms(vv - self.cell.v_eq), axis=1).astype(np.float32)
        if dev is not None:
            t[:, :vv.shape[1]] += dev
        return t

    def _row_weights(self, D, R):
        """Per term i, (R, 1) float32 c_i t_max r_t^i, repeated for each stacked head."""
        return [_stack_rows(w, R).astype(np.float32) for w in D.row_weights(self.cell.t_max)]

    def _values(self, p, vv, D, full, allowed=None, dev=None):
        """A[t, d] = t_max sum_s p[t, s] I(V_eq + (vv[s, d] - V_eq) D[t, s]); tiles of ``rows`` keys.
        Pulses are quantised to ``input_levels`` over [0, 1]; with ``tile_scale`` (softmax) each
        tile's pulses span the tile's largest weight (its DAC full scale), and the tile's digitised
        output is multiplied back by that weight digitally. ``full``: scalar or one per row.
        ``allowed`` (T, S), with p's rows stacked heads of T queries: a tile is read only for the
        queries that may see one of its keys (the others have no pulse on it). ``dev`` (S, d): the
        cells' fixed current deviations (mismatch)."""
        c, cfg = self.cell, self.cfg
        full = full if cfg.output_levels else None
        per_tile = cfg.activation == "softmax" and cfg.tile_scale
        decays = self._decays()
        R, dd = p.shape[0], vv.shape[1]
        sep = decays and isinstance(D, Separable)
        if sep:
            terms = self._key_terms(vv, D, dev)
            wts = self._row_weights(D, R)
            n = len(wts)
        elif decays:
            y = vv - c.v_eq
            coeffs = self._expansion()
            Dr = [_stack_rows(x, R) for x in D]
        else:
            cur = ((self.read_current(vv) + (0 if dev is None else dev)) * c.t_max).astype(np.float32)
        out = np.zeros((R, dd), np.float32)
        T = allowed.shape[0] if allowed is not None else R
        row_full = full is not None and np.size(full) == R
        for k0 in range(0, vv.shape[0], cfg.rows):  # tiles over keys
            sl = slice(k0, k0 + cfg.rows)
            rsel = None
            if allowed is not None:
                on = np.flatnonzero(allowed[:, sl].any(axis=1))
                if on.size == 0:
                    continue
                if on[-1] + 1 - on[0] < T:  # queries on[0] .. on[-1] of every stacked head
                    rsel = (np.arange(R // T)[:, None] * T + np.arange(on[0], on[-1] + 1)[None, :]).reshape(-1)
            pt = p[:, sl] if rsel is None else p[rsel, sl]
            m = None
            if per_tile:
                m = pt.max(axis=1, keepdims=True)
                m[m == 0] = 1.0
                pt = pt / m
            pq = quantise(pt, 0.0, 1.0, cfg.input_levels).astype(np.float32)
            if not pq.any():  # no pulse drives this tile (outside every query's window): not read
                continue
            w = None
            if per_tile and cfg.ratiometric:
                w = pq.sum(axis=1, keepdims=True)  # pulse sum: the reference column's charge / full pulse
                w[w == 0] = 1.0
            if sep:  # one GEMM per tile, n terms wide
                m_all = pq @ terms[sl]
                ws = wts if rsel is None else [x[rsel] for x in wts]
                part = m_all[:, :dd] * ws[0]
                for i in range(1, n):
                    part += m_all[:, i * dd:(i + 1) * dd] * ws[i]
            elif decays:
                part = np.zeros((pq.shape[0], dd))
                for i, ci in enumerate(coeffs):
                    di = Dr[i][:, sl] if rsel is None else Dr[i][rsel, sl]
                    part += ((pq * di) @ (y[sl] ** i)) * (ci * c.t_max)
                if dev is not None:
                    part += (pq @ dev[sl]) * c.t_max
            else:
                part = pq @ cur[sl]
            if w is not None:  # digitise the tile's weighted mean against a reference of the pulse sum
                part = part / w
            self._note_tile(part)
            part = self._digitise(part, full[rsel] if (row_full and rsel is not None) else full)
            if w is not None:
                part = part * w
            if m is not None:
                part = part * m
            if rsel is None:
                out += part
            else:
                out[rsel] += part
        return out

    def _note_tile(self, part):
        rec = getattr(self, "_tile_record", None)
        if rec is not None:
            g = self._ctx_heads
            for i, h in enumerate(g):  # rows are stacked per head
                blk = part[i * (part.shape[0] // len(g)):(i + 1) * (part.shape[0] // len(g))]
                rec.setdefault((self._ctx_layer, h), []).append(np.quantile(np.abs(blk), self._tile_quantile))

    def _digitise(self, x, full, levels=None):
        """Read noise and the ADC of a tile's output; full: None (no clamp), a scalar, or one per
        row. float32 (rows, n) arrays are digitised in place."""
        if full is None:
            return x
        cfg = self.cfg
        levels = cfg.output_levels if levels is None else levels
        if np.all(np.isinf(full)):
            return x
        if cfg.read_noise > 0:
            x = x + (cfg.read_noise * full * self.rng.standard_normal(x.shape)).astype(x.dtype)
        if x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous and (not levels or levels >= 2):
            rows = np.broadcast_to(np.asarray(full, np.float32).reshape(-1), (x.shape[0],)).copy() \
                if np.size(full) in (1, x.shape[0]) else None
            if rows is not None:
                _fused.adc_rows(x, rows, (levels or 0) // 2)
                return x
        return adc(x, full, levels)

    def _cell_gain(self):
        if getattr(self, "_gain", None) is None:
            self._gain = self.cell.gain()
        return self._gain

    def attend(self, q, positions, mask, cache, layer):
        cfg, sc = self.cfg, self.sc
        keys, values, kpos = cache.keys, cache.values, cache.positions
        n_kv, S, d = keys.shape
        H, T, _ = q.shape
        g = H // n_kv
        allowed = visible(mask, positions, kpos, cfg.window)
        D = None
        if self._decays():
            lam = cfg.token_period / self.cell.tau  # decay per token step
            t0 = int(positions.min())
            span = max(int(positions.max()) - t0, 0) + max(t0 - int(kpos.min()), 0)
            oldest = max(int(positions.max()) - int(kpos.min()), 0)  # age of the oldest key a query may read
            if cfg.window:
                oldest = min(oldest, cfg.window)
            terms = self._decay_terms(math.exp(-lam * oldest))
            if span * lam * len(terms) < 60:
                # D[t, s] = exp(-lam (t - t0)) exp(-lam (t0 - s)): separable
                D = Separable(np.exp(-lam * (positions - t0)), np.exp(-lam * (t0 - kpos)), terms)
            else:  # factors would overflow: the explicit (T, S) powers, shared by the layer's heads
                d1 = np.exp(-(positions[:, None] - kpos[None, :]).clip(min=0) * lam)
                D = [np.ones_like(d1)]
                for _ in range(len(self._expansion()) - 1):
                    D.append(D[-1] * d1)
        gain = self.unit_charge()
        comp = None
        if D is not None and cfg.activation == "softmax" and cfg.retention_comp:
            comp = D.matrix() if isinstance(D, Separable) else D[1]
            comp = np.where(allowed, comp, 1.0).astype(np.float32)
        out = np.empty((H, T, d), np.float32)
        for j in range(n_kv):  # the g query heads reading one KV head's arrays, stacked as rows
            hs = np.arange(j * g, (j + 1) * g)
            qh = q[hs].astype(np.float32)
            if sc.k_chan is not None:
                qh = qh * sc.k_chan[layer, j].astype(np.float32)
            u = sc.a_q[layer, hs][:, None, None] * qh + sc.b_q[layer, hs][:, None, None]
            # per-query DAC full scale = the query's largest |u| (undone digitally on the charge)
            u_max = (np.abs(u).max(axis=2, keepdims=True).clip(min=1e-12) if cfg.query_scale
                     else np.ones((g, T, 1), np.float32))
            u = np.sign(u) * quantise(np.abs(u) / u_max, 0.0, 1.0, cfg.input_levels)  # two-phase signed pulses
            u = u.reshape(g * T, d).astype(np.float32)
            row_full = np.repeat(sc.score_scale[layer, hs], T)[:, None]
            dk = cache.mismatch_k[j] if cfg.mismatch else None
            dv = cache.mismatch_v[j] if cfg.mismatch else None
            s = self._scores(u, keys[j], D, row_full, dk)
            s = s.reshape(g, T, S) * u_max.astype(np.float32)  # (g, T, S) charge
            if cfg.activation == "hardsigmoid":
                p = np.clip(s / sc.s_sat[layer, hs][:, None, None].astype(np.float32), 0.0, 1.0)
                p = np.where(allowed, p, np.float32(0.0))
            else:
                # digital rescale of the charge to logits: ideal cell -> q.k / sqrt(d); the score
                # ADC (reference: the head's largest |logit|), the decay of each key at each query
                # undone digitally, softmax over the visible keys, and older keys' pulses
                # lengthened by their decay (digital, before the DAC): one fused pass
                z = s / (gain * sc.a_q[layer, hs] * sc.a_k[layer, j] * np.sqrt(d)).astype(np.float32)[:, None, None]
                z = np.ascontiguousarray(z, np.float32).reshape(g * T, S)
                half = 2 ** cfg.adc_bits // 2 if cfg.adc_bits else 0
                lim = (np.repeat(_fused.masked_absmax_rows(z, allowed, T, g), T) if half
                       else np.ones(g * T, np.float32))
                _fused.circuit_softmax(z, lim, half, comp if comp is not None else _ONE, comp is not None, allowed, T)
                p = z.reshape(g, T, S)
            # softmax without tile_scale: pulses span each row's largest weight (DAC full scale =
            # row max, undone digitally after the value array); with tile_scale, each tile's own
            # largest weight (in _values)
            p_max = np.ones((g, T, 1), np.float32)
            if cfg.activation == "softmax" and not cfg.tile_scale:
                p_max = p.max(axis=2, keepdims=True)
                p_max[p_max == 0] = 1.0
                p = p / p_max
            self._ctx_layer, self._ctx_heads = layer, hs
            pr = getattr(self, "probe", None)
            if pr is not None and pr[0] == layer and pr[1] in hs and getattr(self, "probe_out", None) is None:
                i = int(pr[1] - hs[0])
                self.probe_out = (positions.copy(), kpos.copy(), p[i] * p_max[i])  # the head's attention weights
            row_full = np.repeat(sc.out_scale[layer, hs], T)[:, None]
            a = self._values(p.reshape(g * T, S), values[j], D, row_full, allowed, dv).reshape(g, T, d) * p_max
            if sc.v_chan is not None:
                a = a * sc.v_chan[layer, j].astype(np.float32)
            scale = (sc.a_o[layer, hs] * (self._cell_gain() / gain) / sc.a_v[layer, j])[:, None, None]
            out[hs] = scale * a + sc.b_o[layer, hs][:, None, None]
        return out.astype(q.dtype)


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
    seen on calibration text (run with output digitisation off), instead of the worst case."""
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
