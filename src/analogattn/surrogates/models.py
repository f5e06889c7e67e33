"""Surrogate model kinds, evaluated with NumPy only (vectorised over arrays of any shape).

Out-of-domain rule (all kinds): inputs are **clipped** to the validity domain stored with the
model (the fitted range of each input); nothing is extrapolated.
"""
from __future__ import annotations

import json
import math

import numpy as np

from . import _accel

BLOCK = 1 << 16  # elements per block: evaluation stays in cache, one pass over memory
F32 = np.float32  # in-block arithmetic (surrogate error is far above float32 rounding)


def _blocked(fn, *arrays, dtype=np.float64):
    """Apply fn to matching blocks of broadcast inputs, writing one output array."""
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=dtype) for a in arrays])
    shape = arrs[0].shape
    flat = [a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1) for a in arrs]
    out = np.empty(flat[0].size, dtype)
    for i in range(0, out.size, BLOCK):
        out[i:i + BLOCK] = fn(*[f[i:i + BLOCK] for f in flat])
    return out.reshape(shape)


def _flat(*arrays):
    """Broadcast float64 inputs, flattened (contiguous), and their common shape."""
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
    return [np.ascontiguousarray(a).reshape(-1) for a in arrs], arrs[0].shape


class Damaged(ValueError):
    """A stored model fails its checks: ``item`` names the dataset or attribute, ``why`` the fault."""

    def __init__(self, item: str, why: str):
        self.item, self.why = item, why
        super().__init__(f"{item}: {why}")


def _checked(m, name: str, ndim: int, at_least: int = 1, increasing: bool = False, positive: bool = False,
             nonneg: bool = False) -> np.ndarray:
    """The stored array ``name`` of model ``m`` as float64, or Damaged: numeric, ``ndim``
    dimensions (0: one value), ``at_least`` points along each axis, finite, and optionally
    strictly increasing / positive / non-negative. Stores the checked array back on ``m``."""
    if not hasattr(m, name):
        raise Damaged(name, "missing")
    a = np.asarray(getattr(m, name))
    if a.dtype.kind not in "fiub":
        raise Damaged(name, f"not numeric (dtype {a.dtype})")
    if ndim == 0:
        if a.size != 1:
            raise Damaged(name, f"shape {a.shape}, expected one value")
        a = a.reshape(())
    elif a.ndim != ndim:
        raise Damaged(name, f"shape {a.shape}, expected {ndim} dimension(s)")
    elif min(a.shape) < at_least:
        raise Damaged(name, f"shape {a.shape}, needs {at_least} or more points along each axis")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise Damaged(name, "holds NaN or infinite values")
    if increasing and not np.all(np.diff(a) > 0):
        raise Damaged(name, "not strictly increasing")
    if positive and not np.all(a > 0):
        raise Damaged(name, "not all positive")
    if nonneg and not np.all(a >= 0):
        raise Damaged(name, "negative")
    setattr(m, name, a)
    return a


def _shape(m, name: str, shape: tuple, like: str):
    a = getattr(m, name)
    if a.shape != shape:
        raise Damaged(name, f"shape {a.shape}, expected {shape} to match {like}")


def _interval(m, key: str):
    d = m.domain.get(key) if isinstance(m.domain, dict) else None
    ok = (isinstance(d, list) and len(d) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       and math.isfinite(v) for v in d) and d[0] <= d[1])
    if not ok:
        raise Damaged("domain", f"has no interval {key!r} = [lo, hi]")
    return d


class Model:
    kind = "abstract"

    def check(self) -> None:
        """Check the stored arrays after loading (raises Damaged naming the dataset)."""
        for name in ("domain", "units", "scores", "meta"):
            if not isinstance(getattr(self, name), dict):
                raise Damaged(name, "not a JSON table")

    def __init__(self, domain: dict, units: dict, scores: dict | None = None, meta: dict | None = None):
        self.domain = domain  # input name -> [lo, hi]
        self.units = units
        self.scores = scores or {}
        self.meta = meta or {}

    def attrs(self) -> dict:
        return {"kind": self.kind, "domain": json.dumps(self.domain), "units": json.dumps(self.units),
                "scores": json.dumps(self.scores), "meta": json.dumps(self.meta),
                "out_of_domain": "clip"}

    def arrays(self) -> dict:
        return {}

    @classmethod
    def from_stored(cls, attrs: dict, arrays: dict):
        m = cls.__new__(cls)
        Model.__init__(m, json.loads(attrs["domain"]), json.loads(attrs["units"]), json.loads(attrs["scores"]),
                       json.loads(attrs["meta"]))
        m._load(arrays)
        return m

    def _load(self, arrays):
        for k, v in arrays.items():
            setattr(self, k, v)


class Poly2D(Model):
    """sum_{i+j<=deg} c_ij (x - x0)^i (y - y0)^j, Horner in y inside Horner in x."""

    kind = "poly2d"

    def __init__(self, coef: np.ndarray, x0: float, y0: float, **kw):
        super().__init__(**kw)
        self.coef, self.center = np.asarray(coef, float), np.array([x0, y0], float)

    def check(self):
        super().check()
        c = _checked(self, "coef", 2)
        if c.shape[0] != c.shape[1]:
            raise Damaged("coef", f"shape {c.shape}, expected a square (degree + 1) table")
        _checked(self, "center", 1)
        _shape(self, "center", (2,), "(x0, y0)")
        _interval(self, "x"), _interval(self, "y")

    def arrays(self):
        return {"coef": self.coef, "center": self.center}

    def __call__(self, x, y):
        (xl, xh), (yl, yh) = self.domain["x"], self.domain["y"]
        if _accel.AVAILABLE:
            (fx, fy), shape = _flat(x, y)
            out = np.empty(fx.size)
            _accel.poly2d(fx, fy, self.coef, float(self.center[0]), float(self.center[1]),
                          float(xl), float(xh), float(yl), float(yh), out)
            return out.reshape(shape)
        c = self.coef.astype(F32)
        x0, y0 = (F32(v) for v in self.center)
        deg = c.shape[0] - 1

        def f(xb, yb):
            u = np.clip(xb, xl, xh).astype(F32)
            u -= x0
            v = np.clip(yb, yl, yh).astype(F32)
            v -= y0
            acc = np.zeros_like(u)
            inner = np.empty_like(v)
            for i in range(deg, -1, -1):
                inner.fill(c[i, deg - i])
                for j in range(deg - i - 1, -1, -1):
                    inner *= v
                    inner += c[i, j]
                acc *= u
                acc += inner
            return acc
        return _blocked(f, x, y)


class Table2D(Model):
    """Bilinear interpolation on a regular grid (x0 + i dx, y0 + j dy)."""

    kind = "table2d"

    def __init__(self, table: np.ndarray, x: np.ndarray, y: np.ndarray, **kw):
        super().__init__(**kw)
        self.table = np.asarray(table, float)
        self.grid = np.array([x[0], x[1] - x[0], y[0], y[1] - y[0]], float)

    def check(self):
        super().check()
        _checked(self, "table", 2, at_least=2)
        g = _checked(self, "grid", 1)
        _shape(self, "grid", (4,), "(x0, dx, y0, dy)")
        if not (g[1] > 0 and g[3] > 0):
            raise Damaged("grid", "steps dx, dy not positive")
        _interval(self, "x"), _interval(self, "y")

    def arrays(self):
        return {"table": self.table, "grid": self.grid}

    def _patch_coefficients(self):
        """Per grid cell (flattened), the bilinear form p0 + p1 wy + p2 wx + p3 wx wy: [p0, p1, p2, p3]."""
        t = self.table
        a, b, c, d = t[:-1, :-1], t[:-1, 1:], t[1:, :-1], t[1:, 1:]
        return [q.reshape(-1) for q in (a, b - a, c - a, d - c - b + a)]

    def _patches(self):
        """The patch coefficients as float32 arrays, one each (NumPy path)."""
        if getattr(self, "_p", None) is None:
            self._p = [np.ascontiguousarray(q, dtype=F32) for q in self._patch_coefficients()]
        return self._p

    def __call__(self, x, y):
        x0, dx, y0, dy = self.grid
        nx, ny = self.table.shape
        hx, hy = F32(nx - 1) * F32(1 - 1e-6), F32(ny - 1) * F32(1 - 1e-6)
        sx, sy, ox, oy = F32(1 / dx), F32(1 / dy), F32(x0), F32(y0)
        if _accel.AVAILABLE:
            (fx, fy), shape = _flat(x, y)
            out = np.empty(fx.size)
            if getattr(self, "_p64", None) is None:  # (cells, 4) float64: one cache line per gather
                self._p64 = np.ascontiguousarray(np.stack(self._patch_coefficients(), 1))
            _accel.table2d(fx, fy, self._p64, ny - 1, float(ox), float(sx), float(hx), float(oy), float(sy),
                           float(hy), out)
            return out.reshape(shape)
        p0, p1, p2, p3 = self._patches()

        def f(xb, yb):
            fx = xb.astype(F32)
            fx -= ox
            fx *= sx
            np.clip(fx, 0, hx, out=fx)
            fy = yb.astype(F32)
            fy -= oy
            fy *= sy
            np.clip(fy, 0, hy, out=fy)
            ix = fx.astype(np.int32)
            iy = fy.astype(np.int32)
            fx -= ix
            fy -= iy
            ix *= ny - 1
            ix += iy
            r = np.take(p3, ix)
            r *= fx
            r += np.take(p1, ix)
            r *= fy
            t2 = np.take(p2, ix)
            t2 *= fx
            r += t2
            r += np.take(p0, ix)
            return r
        return _blocked(f, x, y)


class Table1D(Model):
    """Piecewise-linear y(x) through stored points (x ascending)."""

    kind = "table1d"

    def __init__(self, x, y, **kw):
        super().__init__(**kw)
        self.x, self.y = np.asarray(x, float), np.asarray(y, float)

    def check(self):
        super().check()
        x = _checked(self, "x", 1, at_least=2, increasing=True)
        _checked(self, "y", 1)
        _shape(self, "y", x.shape, "x")

    def arrays(self):
        return {"x": self.x, "y": self.y}

    def __call__(self, x):
        return np.interp(np.clip(np.asarray(x, float), self.x[0], self.x[-1]), self.x, self.y)


class Decay(Model):
    """Retention: V(t) = V_eq + (V0 - V_eq) exp(-t / tau(T)); tau and V_eq interpolated over
    temperature (log tau linear in 1/T, Arrhenius-like; clipped to the characterized range)."""

    kind = "decay"

    def __init__(self, temps_c, tau, v_eq, **kw):
        super().__init__(**kw)
        self.temps_c, self.tau, self.v_eq = (np.asarray(a, float) for a in (temps_c, tau, v_eq))

    def check(self):
        super().check()
        t = _checked(self, "temps_c", 1)
        if np.any(t <= -273.15):
            raise Damaged("temps_c", "below absolute zero")
        _checked(self, "tau", 1, positive=True)
        _checked(self, "v_eq", 1)
        _shape(self, "tau", t.shape, "temps_c")
        _shape(self, "v_eq", t.shape, "temps_c")

    def arrays(self):
        return {"temps_c": self.temps_c, "tau": self.tau, "v_eq": self.v_eq}

    def params_at(self, temperature_c: float) -> tuple[float, float]:
        t = float(np.clip(temperature_c, self.temps_c.min(), self.temps_c.max()))
        inv = 1.0 / (self.temps_c + 273.15)
        o = np.argsort(inv)
        tau = math.exp(np.interp(1.0 / (t + 273.15), inv[o], np.log(self.tau[o])))
        veq = float(np.interp(t, self.temps_c, self.v_eq))
        return tau, veq

    def factor(self, dt_s, temperature_c: float):
        """Fraction of (V0 - V_eq) left after dt seconds."""
        tau, _ = self.params_at(temperature_c)
        return np.exp(-np.asarray(dt_s, float) / tau)

    def __call__(self, v0, dt_s, temperature_c: float):
        tau, veq = self.params_at(temperature_c)
        return veq + (np.asarray(v0, float) - veq) * np.exp(-np.asarray(dt_s, float) / tau)


class ColumnModel(Model):
    """ReRAM column current from per-row inputs.

    x_i = I_cell(level_i, V_i) from the per-level cell I-V table (access device included);
    I_col = sum_i w_i x_i + c2 (sum_i x_i)^2: w_i carries the IR drop by row position, c2 the
    loss that grows with total column current. Variation: G_i -> G_i exp(sigma_g z) (lognormal,
    programmed once); read noise: relative Gaussian of sigma noise_rel on each evaluation.
    """

    kind = "column"

    def __init__(self, iv_v, iv_current, weights, c2, sigma_g, noise_rel, **kw):
        super().__init__(**kw)
        self.iv_v, self.iv_current = np.asarray(iv_v, float), np.asarray(iv_current, float)
        self.weights, self.c2 = np.asarray(weights, float), np.asarray(c2, float)
        self.sigma_g, self.noise_rel = np.asarray(sigma_g, float), np.asarray(noise_rel, float)

    def check(self):
        super().check()
        v = _checked(self, "iv_v", 1, at_least=2, increasing=True)
        i = _checked(self, "iv_current", 2)
        if i.shape[1] != v.size:
            raise Damaged("iv_current", f"shape {i.shape}, expected (levels, {v.size}) to match iv_v")
        _checked(self, "weights", 1)
        _checked(self, "c2", 0)
        _checked(self, "sigma_g", 0, nonneg=True)
        _checked(self, "noise_rel", 0, nonneg=True)
        for k in ("rows", "levels", "input_levels", "v_read", "g_max", "on_off", "r_f"):
            x = self.meta.get(k, 1.0)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise Damaged("meta", f"{k} is not a number")

    def arrays(self):
        return {k: getattr(self, k) for k in ("iv_v", "iv_current", "weights", "c2", "sigma_g", "noise_rel")}

    def cell_current(self, level, v):
        """Cell current at integer level (clipped) and voltage v (clipped to the I-V range)."""
        lv = np.clip(np.asarray(level), 0, self.iv_current.shape[0] - 1).astype(np.int64)
        vv = np.clip(np.asarray(v, float), self.iv_v[0], self.iv_v[-1])
        dv = self.iv_v[1] - self.iv_v[0]
        f = vv / dv
        i = np.minimum(f.astype(np.int64), self.iv_v.size - 2)
        w = f - i
        t = self.iv_current
        return t[lv, i] * (1 - w) + t[lv, i + 1] * w

    def __call__(self, level, v, g_scale=None, rng=None):
        """level, v: (..., rows). g_scale: optional (..., rows) multiplicative G variation;
        rng: draw read noise. Returns (...) column currents."""
        rows = self.weights.size
        if _accel.AVAILABLE and np.shape(level)[-1:] == (rows,) and np.shape(v)[-1:] == (rows,) \
                and np.ndim(level) >= 1 and (g_scale is None or np.shape(g_scale)[-1:] == (rows,)):
            # one compiled pass per column (the NumPy lines below make ~10 temporaries of the inputs' size)
            shape = np.broadcast_shapes(np.shape(level), np.shape(v),
                                        np.shape(g_scale) if g_scale is not None else ())
            lv = np.ascontiguousarray(np.broadcast_to(np.asarray(level), shape), np.int64).reshape(-1, rows)
            vv = np.ascontiguousarray(np.broadcast_to(np.asarray(v), shape), np.float64).reshape(-1, rows)
            gs = (np.ascontiguousarray(np.broadcast_to(np.asarray(g_scale), shape), np.float64).reshape(-1, rows)
                  if g_scale is not None else np.empty((0, rows)))
            out = np.empty(lv.shape[0])
            _accel.column(lv, vv, np.ascontiguousarray(self.iv_current, np.float64), float(self.iv_v[0]),
                          float(self.iv_v[-1]), float(self.iv_v[1] - self.iv_v[0]),
                          np.ascontiguousarray(self.weights, np.float64), float(self.c2), gs, out)
            out = out.reshape(shape[:-1])
        else:
            x = self.cell_current(level, v)
            if g_scale is not None:
                x = x * g_scale
            s = x.sum(axis=-1)
            out = x @ self.weights + self.c2 * s * s
        if rng is not None and self.noise_rel > 0:
            out = out * (1 + self.noise_rel * rng.standard_normal(out.shape))
        return out


class Probit(Model):
    """P(keep | dv) = Phi((dv - mu) / sigma); offset_sigma (mismatch, fixed per comparator) and
    noise_sigma (fresh per decision) kept apart for the kernel."""

    kind = "probit"

    def __init__(self, mu, offset_sigma, noise_sigma, **kw):
        super().__init__(**kw)
        self.mu, self.offset_sigma, self.noise_sigma = (np.asarray(a, float) for a in (mu, offset_sigma, noise_sigma))

    def check(self):
        super().check()
        _checked(self, "mu", 0)
        a = _checked(self, "offset_sigma", 0, nonneg=True)
        b = _checked(self, "noise_sigma", 0, nonneg=True)
        if not a + b > 0:
            raise Damaged("offset_sigma", "and noise_sigma both zero")

    def arrays(self):
        return {"mu": self.mu, "offset_sigma": self.offset_sigma, "noise_sigma": self.noise_sigma}

    def __call__(self, dv, include_mismatch: bool = True):
        s = math.sqrt(float(self.noise_sigma) ** 2 + (float(self.offset_sigma) ** 2 if include_mismatch else 0.0))
        return phi((np.asarray(dv, float) - float(self.mu)) / s)


def phi(z):
    """Standard normal CDF (NumPy only)."""
    return 0.5 * (1 + _erf(np.asarray(z, float) / math.sqrt(2)))


def _erf(x):
    """erf with NumPy only (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7)."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1 / (1 + 0.3275911 * a)
    y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


class LogDelay(Model):
    """Latch delay t = a + b ln(1 / overdrive) (regeneration), overdrive clipped to the domain."""

    kind = "logdelay"

    def __init__(self, a, b, **kw):
        super().__init__(**kw)
        self.a, self.b = np.asarray(a, float), np.asarray(b, float)

    def check(self):
        super().check()
        _checked(self, "a", 0)
        _checked(self, "b", 0)
        if not _interval(self, "overdrive")[0] > 0:
            raise Damaged("domain", "overdrive interval does not start above 0")

    def arrays(self):
        return {"a": self.a, "b": self.b}

    def __call__(self, overdrive):
        lo, hi = self.domain["overdrive"]
        return self.a + self.b * np.log(1 / np.clip(np.abs(np.asarray(overdrive, float)), lo, hi))


class Constant(Model):
    """A measured scalar (energy, time), with its spread."""

    kind = "constant"

    def __init__(self, value, spread=0.0, **kw):
        super().__init__(**kw)
        self.value, self.spread = np.asarray(value, float), np.asarray(spread, float)

    def check(self):
        super().check()
        _checked(self, "value", 0)
        _checked(self, "spread", 0)

    def arrays(self):
        return {"value": self.value, "spread": self.spread}

    def __call__(self):
        return float(self.value)


KINDS = {c.kind: c for c in (Poly2D, Table2D, Table1D, Decay, ColumnModel, Probit, LogDelay, Constant)}

# The kinds each named model may have (what its users call); other names take any kind.
EXPECTED_KINDS = {
    "gaincell.read_surface": ("poly2d", "table2d"), "gaincell.read_surface_poly": ("poly2d",),
    "gaincell.read_surface_table": ("table2d",), "gaincell.write": ("table1d",), "gaincell.retention": ("decay",),
    "gaincell.variation": ("table2d",), "gaincell.energy_read": ("constant",), "gaincell.energy_write": ("constant",),
    "gaincell.t_read": ("constant",), "reram.column": ("column",), "reram.energy": ("constant",),
    "reram.time": ("constant",), "comparator.probit": ("probit",), "comparator.delay": ("logdelay",),
    "comparator.energy": ("constant",),
}
