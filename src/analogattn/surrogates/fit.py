"""Fit surrogates to a characterization file and score them on held-out SPICE points.

Held-out rules:
- gain-cell read surface: the table and the polynomial are fitted on the grid points with even
  (V_store, V_in) indices (plus the last row and column) and scored on all the others (about
  3/4 of the grid);
- write transfer: every third written voltage is held out;
- ReRAM column: the patterns flagged ``held_out`` in the file;
- comparator: the probit is fitted on the even-numbered Monte Carlo samples and scored against
  the keep-probability of the odd-numbered ones (estimated with control variates, see
  :func:`fit_probit`).
NRMSE = rms error / (max - min) of the held-out SPICE values.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..errors import AnalogAttnError
from ..atomic import open_hdf5
from ..characterize import families
from ..characterize.families import FitSpec
from . import models as M


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def nrmse(pred, true) -> float:
    true = np.asarray(true, float)
    ok = np.isfinite(true) & np.isfinite(pred)
    return float(np.sqrt(np.mean((pred[ok] - true[ok]) ** 2)) / (true[ok].max() - true[ok].min()))


def _poly_fit(x, y, z, deg):
    from sklearn.linear_model import LinearRegression
    terms = [(i, j) for i in range(deg + 1) for j in range(deg + 1 - i)]
    X = np.stack([x ** i * y ** j for i, j in terms], axis=1)
    r = LinearRegression(fit_intercept=False).fit(X, z)
    c = np.zeros((deg + 1, deg + 1))
    for (i, j), v in zip(terms, r.coef_):
        c[i, j] = v
    return c


def fit_read_surface(g, v_bl, degree=3, refine=4):
    I, vs, vi = g["current"][()], g["v_store"][()], g["v_in"][()]
    ix = np.unique(np.r_[np.arange(0, len(vs), 2), len(vs) - 1])  # even indices and both ends
    iy = np.unique(np.r_[np.arange(0, len(vi), 2), len(vi) - 1])
    train = np.zeros(I.shape, bool)
    train[np.ix_(ix, iy)] = True
    ok = np.isfinite(I)
    VS, VI = np.meshgrid(vs, vi, indexing="ij")
    dom = {"x": [float(vs[0]), float(vs[-1])], "y": [float(vi[0]), float(vi[-1])]}
    units = {"x": "V (V_store)", "y": "V (V_in)", "out": "A"}
    held = ~train & ok
    # polynomial of total degree `degree` in (V_store - v_bl, V_in - v_bl)
    m = train & ok
    c = _poly_fit(VS[m] - v_bl, VI[m] - v_bl, I[m], degree)
    poly = M.Poly2D(c, v_bl, v_bl, domain=dom, units=units, meta={"degree": degree})
    poly.scores = {"nrmse": nrmse(poly(VS[held], VI[held]), I[held]), "held_out_points": int(held.sum())}
    # smooth table: bicubic spline through the training sub-grid, tabulated `refine` x finer
    from scipy.interpolate import RectBivariateSpline
    sub = I[np.ix_(ix, iy)]
    if not np.isfinite(sub).all():
        sub = np.where(np.isfinite(sub), sub, np.nanmean(sub))
    # cubic where the training sub-grid allows it (a spline of degree k needs k + 1 points)
    sp = RectBivariateSpline(vs[ix], vi[iy], sub, kx=min(3, len(ix) - 1), ky=min(3, len(iy) - 1))
    fx = np.linspace(vs[0], vs[-1], (len(vs) - 1) * refine + 1)
    fy = np.linspace(vi[0], vi[-1], (len(vi) - 1) * refine + 1)
    table = M.Table2D(sp(fx, fy), fx, fy, domain=dom, units=units, meta={"refine": refine, "spline": "bicubic"})
    table.scores = {"nrmse": nrmse(table(VS[held], VI[held]), I[held]), "held_out_points": int(held.sum())}
    return poly, table


def fit_variation(g):
    """Per-cell current spread from Monte Carlo: sigma(V_store, V_in) table; score: agreement
    of the sigma estimated from even vs odd samples (sampling consistency)."""
    cur, vs, vi = g["current"][()], g["v_store"][()], g["v_in"][()]
    std = np.nanstd(cur, axis=0)
    a, b = np.nanstd(cur[0::2], axis=0), np.nanstd(cur[1::2], axis=0)
    m = M.Table2D(std, vs, vi, domain={"x": [float(vs[0]), float(vs[-1])], "y": [float(vi[0]), float(vi[-1])]},
                  units={"x": "V", "y": "V", "out": "A (sigma)"}, meta={"samples": int(cur.shape[0])})
    m.scores = {"split_half_rel_diff": float(np.nanmean(np.abs(a - b)) / max(np.nanmean(std), 1e-30))}
    return m


def fit_write(g):
    vw, vs = g["v_written"][()], g["v_stored"][()]
    ok = np.isfinite(vs)
    held = np.zeros(vw.size, bool)
    held[1::3] = True
    tr = ok & ~held
    m = M.Table1D(vw[tr], vs[tr], domain={"x": [float(vw[0]), float(vw[-1])]}, units={"x": "V", "out": "V"})
    m.scores = {"nrmse": nrmse(m(vw[held & ok]), vs[held & ok])}
    return m


RETENTION_RESOLVED = 0.01  # a decay is resolved when some curve moved >= 1 % of its distance to V_eq


def retention_bound(v, t_span: float) -> tuple[bool, float, float]:
    """(bounded, tau lower bound s, largest drift V) of one temperature's curves v (starts, times).

    With V_eq anywhere between the lowest and highest start (the fit keeps it within the rails;
    the starts span the range), the start farthest from V_eq is at least d = half the starts'
    spread away, and no curve moved more than D (the largest |V(end) - V(0)|), so
    1 - exp(-T / tau) <= D / d, i.e. tau >= T / -ln(1 - D / d). When D < RETENTION_RESOLVED x d
    the curves are straight lines over the simulated time T: tau and V_eq are not separately
    determined (only their ratio), and D itself is near the transient's tolerance (reltol 1e-3 of
    the node voltage), so the fitted tau is ill-conditioned and only this bound is reported."""
    v = np.asarray(v, float)
    v = v[np.all(np.isfinite(v), axis=1)]
    if v.shape[0] < 2 or not t_span > 0:
        return False, float("nan"), float("nan")
    d = 0.5 * float(np.ptp(v[:, 0]))
    drift = float(np.max(np.abs(v[:, -1] - v[:, 0])))
    if not d > 0 or drift >= RETENTION_RESOLVED * d:
        return False, float("nan"), drift
    return True, float(t_span / -np.log1p(-max(drift, 1e-12 * d) / d)), drift


def fit_retention(g):
    """Decay model per temperature. A temperature whose curves barely move over the simulated
    time (:func:`retention_bound`) keeps its fitted V_eq but gets the lower bound as its tau (the
    model then decays no slower than measured: conservative); ``meta['tau_lower_bound']`` marks
    it and the scores name it ``tau_<T>C_lower_bound_s`` (else ``tau_<T>C_s``)."""
    temps, tau, veq, rms = (g[k][()] for k in ("temperature", "tau", "v_eq", "fit_rms"))
    v = g["v_store"][()]
    ok = np.isfinite(temps) & np.isfinite(tau) & (tau > 0) & np.isfinite(veq)
    if not ok.all():  # a temperature whose simulation or decay fit failed is left out
        temps, tau, veq, rms, v = temps[ok], tau[ok], veq[ok], rms[ok], v[ok]
    t = g["time"][()] if "time" in g else None
    t_span = float(t[-1] - t[0]) if t is not None and np.size(t) > 1 else float("nan")
    tau = np.array(tau, float)
    bounded, drifts = [], []
    for i in range(temps.size):
        b, lb, drift = retention_bound(v[i], t_span)
        bounded.append(b)
        drifts.append(drift)
        if b:
            tau[i] = lb
    m = M.Decay(temps, tau, veq, domain={"temperature": [float(temps.min()), float(temps.max())]},
                units={"t": "s", "tau": "s", "v": "V", "temperature": "degC"},
                meta={"tau_lower_bound": [bool(b) for b in bounded], "simulated_time_s": t_span,
                      "largest_drift_V": [float(x) for x in drifts]})
    m.scores = {"rms_residual_V": float(np.max(rms)),
                "nrmse": float(np.max(rms) / (np.nanmax(v) - np.nanmin(v)))}
    for T, tt, b, drift in zip(temps, tau, bounded, drifts):
        m.scores[f"tau_{T:g}C_lower_bound_s" if b else f"tau_{T:g}C_s"] = float(tt)
        m.scores[f"drift_{T:g}C_V"] = float(drift)
    return m


def fit_column(iv, pt, tr, mc, sigma_g):
    from sklearn.linear_model import LinearRegression
    ivv, ivc = iv["v"][()], iv["current"][()]
    col = M.ColumnModel(ivv, ivc, np.ones(pt["q_levels"].shape[1]), 0.0, sigma_g, 0.0,
                        domain={"v": [float(ivv[0]), float(ivv[-1])], "level": [0, int(ivc.shape[0] - 1)]},
                        units={"v": "V", "out": "A"})
    k, v, cur = pt["k_levels"][()], pt["v_in"][()], pt["current"][()]
    held = pt["held_out"][()] & np.isfinite(cur)
    train = ~pt["held_out"][()] & np.isfinite(cur)
    x = col.cell_current(k, v)
    X = np.concatenate([x, x.sum(axis=1, keepdims=True) ** 2], axis=1)
    r = LinearRegression(fit_intercept=False, positive=False).fit(X[train], cur[train])
    col.weights, col.c2 = r.coef_[:-1].copy(), np.asarray(r.coef_[-1])
    col.noise_rel = np.asarray(float(tr["noise_rel"][()])) if tr is not None else np.asarray(0.0)
    pred = col(k[held], v[held])
    col.scores = {"nrmse": nrmse(pred, cur[held]), "held_out_patterns": int(held.sum()),
                  "nrmse_ideal_dot": nrmse(pt["ideal"][()][held], cur[held])}
    if mc is not None:
        col.scores["mc_rel_std_spice"] = float(np.mean(mc["std"][()] / mc["mean"][()]))
    return col


def fit_probit(dec, noise):
    """Probit of the keep probability versus differential input, from the Monte Carlo offsets
    (keep iff dv > offset): fitted on the even-numbered samples, scored on the odd-numbered.

    Control variates (when the file has them): each sample's offset predicted linearly from its
    threshold shifts (slopes measured on probe latches) is exactly Gaussian with a known mean and
    sigma, and tracks the SPICE offset to ~2% of its spread. The fit estimates only how the SPICE
    offsets differ from it, and the held-out SPICE probability is estimated as
    mean(off < dv) - mean(lin < dv) + Phi((dv - off0) / sigma_lin): unbiased for the SPICE
    probability (lin's distribution is exact) with far less sampling noise than mean(off < dv)."""
    off = dec["offset"][()]
    dv = dec["dv"][()]
    has_cv = "offset_linear" in dec
    lin = dec["offset_linear"][()] if has_cv else np.zeros_like(off)
    ok = np.isfinite(off) & np.isfinite(lin)
    idx = np.arange(off.size)
    fi, hi = idx[ok & (idx % 2 == 0)], idx[ok & (idx % 2 == 1)]
    a, b = off[fi], off[hi]
    keeps = (dv[None, :] > b[:, None]).astype(float)  # held-out latch x dv: decides keep
    if has_cv:
        m_lin = float(dec["offset_nominal"][()])
        s_lin = float(np.sqrt(np.sum((dec["sensitivity"][()] * dec["dvt_sigma"][()]) ** 2)))
        mu = m_lin + float(np.mean(a - lin[fi]))
        sig = float(np.sqrt(max(s_lin ** 2 + np.var(a) - np.var(lin[fi]), 1e-30)))
        d = keeps - (dv[None, :] > lin[hi][:, None])
        anchor = M.phi((dv - m_lin) / s_lin)
    else:
        mu, sig = float(np.mean(a)), float(np.std(a))
        d = keeps
        anchor = np.zeros_like(dv)
    p_held = d.mean(axis=0) + anchor
    m = M.Probit(mu, sig, 0.0, domain={"dv": [float(dv[0]), float(dv[-1])]}, units={"dv": "V", "out": "probability"})
    pred = m(dv)
    err = float(np.max(np.abs(pred - p_held)))
    plain = float(np.max(np.abs(pred - keeps.mean(axis=0))))
    # Sampling floor of the held-out estimate: 95th percentile, over bootstrap resamples of the
    # held-out samples, of its largest deviation from the full-sample estimate.
    rng = np.random.default_rng(0)
    boot = [np.max(np.abs(d[rng.integers(0, b.size, b.size)].mean(axis=0) + anchor - p_held)) for _ in range(200)]
    m.noise_sigma = np.asarray(float(noise["noise_sigma"][()]) if noise is not None else 0.0)
    m.scores = {"max_abs_error": err, "sampling_floor_95": float(np.quantile(boot, 0.95)),
                "held_out_samples": int(b.size), "estimator": "control variates" if has_cv else "empirical",
                "max_abs_error_empirical": plain, "offset_sigma_all": float(np.std(off[ok]))}
    if has_cv:
        m.scores["linear_residual_sigma"] = float(np.std(off[ok] - lin[ok]))
    if noise is not None:
        # the noise probit against its own transient decisions
        nm = M.Probit(float(noise["noise_mean"][()]), 0.0, float(m.noise_sigma), domain={}, units={})
        m.scores["noise_max_abs_error"] = float(np.max(np.abs(nm(noise["dv"][()], include_mismatch=False)
                                                         - noise["p_keep"][()])))
    return m


def fit_delay(g):
    od, d = g["overdrive"][()], g["delay"][()]
    ok = np.isfinite(d)
    A = np.stack([np.ones(ok.sum()), np.log(1 / od[ok])], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, d[ok], rcond=None)
    m = M.LogDelay(a, b, domain={"overdrive": [float(od.min()), float(od.max())]}, units={"overdrive": "V", "out": "s"})
    m.scores = {"rms_error_s": float(np.sqrt(np.mean((m(od[ok]) - d[ok]) ** 2)))}
    return m


HINT = "re-run analogattn characterize"

class Stored(dict):
    """One analysis read into memory: dataset name -> array, and the group's ``attrs``."""

    def __init__(self, arrays, attrs):
        super().__init__(arrays)
        self.attrs = attrs


class _Checker:
    def __init__(self, path):
        self.path = path

    def fail(self, what: str):
        raise AnalogAttnError(f"{self.path} {what}: {HINT}")

    def read(self, fam: str, name: str, g, spec: FitSpec) -> Stored:
        import h5py
        where = f"{fam}/{name}"
        required, optional = spec.reads[name]
        dims: dict = {}
        arrays = {}
        for ds, shape in {**required, **optional}.items():
            if ds not in g:
                if ds in required:
                    self.fail(f"has no {where}/{ds}")
                continue
            d = g[ds]
            if not isinstance(d, h5py.Dataset):
                self.fail(f"has a group where the dataset {where}/{ds} should be")
            if d.dtype.kind not in "fiub":
                self.fail(f"has a non-numeric {where}/{ds} (dtype {d.dtype})")
            a = d[()]
            a = np.asarray(a)
            if shape == ():
                if a.size != 1:
                    self.fail(f"has {where}/{ds} of shape {a.shape}, expected one value")
                a = a.reshape(())
            else:
                if a.ndim != len(shape):
                    self.fail(f"has {where}/{ds} of shape {a.shape}, expected {len(shape)} dimension(s)")
                for sym, n in zip(shape, a.shape):
                    if dims.setdefault(sym, (n, ds))[0] != n:
                        other = dims[sym][1]
                        self.fail(f"has {where}/{ds} of shape {a.shape}, which does not match {where}/{other}")
                    if n == 0:
                        self.fail(f"has an empty {where}/{ds}")
            arrays[ds] = a
        if "offset_linear" in arrays:  # the control variates come together
            for ds in optional:
                if ds not in arrays:
                    self.fail(f"has {where}/offset_linear but no {where}/{ds}")
        attrs = {}
        for k in g.attrs:
            try:
                attrs[k] = g.attrs[k]
            except (OSError, TypeError, ValueError):  # an attribute h5py cannot decode: not one we read
                continue
        keys = spec.parameters.get(name)
        if keys:
            attrs["parameters"] = self.parameters(attrs.get("parameters"), where, keys)
        return Stored(arrays, attrs)

    def parameters(self, raw, where, keys):
        if raw is None:
            self.fail(f"has no 'parameters' attribute on {where}")
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        try:
            par = json.loads(str(raw))
        except ValueError:
            self.fail(f"has a 'parameters' attribute on {where} that is not JSON")
        circuit = par.get("circuit") if isinstance(par, dict) else None
        if not isinstance(circuit, dict):
            self.fail(f"has a 'parameters' attribute on {where} without a 'circuit' table")
        for k in keys:
            v = circuit.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                self.fail(f"has no number circuit.{k} in the 'parameters' attribute on {where}")
        return circuit

    def axis(self, a, where, min_points=2):
        if a.size < min_points or not np.all(np.isfinite(a)) or not np.all(np.diff(a) > 0):
            self.fail(f"has {where} that is not {min_points} or more finite, increasing values")

    def finite(self, a, where, at_least=1, what="converged points"):
        n = int(np.isfinite(a).sum())
        if n < at_least:
            self.fail(f"has {n} {what} in {where} (NaN: the simulations failed; needs {at_least})")


def _fit_specs() -> dict[str, FitSpec]:
    """{family: FitSpec} of every registered family that has a fit, in registration order."""
    out = {}
    for name, fam in families.families().items():
        spec = fam.fit_spec()
        if spec is not None:
            out[name] = spec
    return out


def read_characterization(f, path, degree: int = 3) -> dict:
    """Check a characterization file against what the fit reads, before fitting: every dataset
    the present analyses need, numeric, of consistent shapes, with enough converged (finite)
    points; the provenance JSON where parameters are read. Returns {family: {analysis:
    Stored}} in memory, or raises a one-line AnalogAttnError naming the file and the item."""
    import h5py
    c = _Checker(path)
    out = {}
    specs = _fit_specs()
    for fam, spec in specs.items():
        if fam not in f:
            continue
        fg = f[fam]
        if not isinstance(fg, h5py.Group):
            c.fail(f"has a dataset where the group {fam} should be")
        out[fam] = {}
        for name in spec.reads:
            if name in fg:
                g = fg[name]
                if not isinstance(g, h5py.Group):
                    c.fail(f"has a dataset where the group {fam}/{name} should be")
                out[fam][name] = c.read(fam, name, g, spec)
    for fam, spec in specs.items():
        if spec.check is not None and out.get(fam):
            families.resolve(spec.check)(c, out[fam], degree)
    return out


def check_gaincell(c: _Checker, gc: dict, degree: int) -> None:
    if "read_surface" in gc:
        g, w = gc["read_surface"], "gaincell/read_surface"
        c.axis(g["v_store"], w + "/v_store")
        c.axis(g["v_in"], w + "/v_in")
        ix = np.unique(np.r_[np.arange(0, g["v_store"].size, 2), g["v_store"].size - 1])
        iy = np.unique(np.r_[np.arange(0, g["v_in"].size, 2), g["v_in"].size - 1])
        c.finite(g["current"][np.ix_(ix, iy)], w + "/current (fitting grid)", (degree + 1) * (degree + 2) // 2)
    if "write_read" in gc:
        g, w = gc["write_read"], "gaincell/write_read"
        c.axis(g["v_written"], w + "/v_written", 3)
        held = np.zeros(g["v_written"].size, bool)
        held[1::3] = True
        c.finite(g["v_stored"][~held], w + "/v_stored (fitting points)", 2)
        c.finite(g["v_stored"][held], w + "/v_stored (held-out points)", 1)
        c.finite(g["e_read"], w + "/e_read")
        c.finite(g["e_write"], w + "/e_write")
    if "retention" in gc:
        g, w = gc["retention"], "gaincell/retention"
        ok = np.isfinite(g["temperature"]) & np.isfinite(g["tau"]) & (g["tau"] > 0) & np.isfinite(g["v_eq"])
        c.finite(np.where(ok, 0.0, np.nan), w + "/tau and v_eq", 1, "temperatures with a decay fit")
    if "monte_carlo" in gc:
        g, w = gc["monte_carlo"], "gaincell/monte_carlo"
        c.axis(g["v_store"], w + "/v_store")
        c.axis(g["v_in"], w + "/v_in")
        if g["current"].shape[0] < 2:
            c.fail(f"has {g['current'].shape[0]} sample in {w}/current (needs 2 or more)")
        if not np.isfinite(g["current"]).any(axis=0).all():
            c.fail(f"has grid points of {w}/current where every sample is NaN (the simulations failed)")


def check_reram(c: _Checker, rr: dict, degree: int) -> None:
    if {"cell_iv", "patterns"} <= set(rr):
        iv, pt = rr["cell_iv"], rr["patterns"]
        c.axis(iv["v"], "reram/cell_iv/v")
        c.finite(np.where(np.isfinite(iv["current"]).all(), 0.0, np.nan), "reram/cell_iv/current", 1,
                 "complete I-V tables")
        held = pt["held_out"]
        if held.dtype.kind != "b":
            if not np.isin(held, (0, 1)).all():
                c.fail("has reram/patterns/held_out that is not true/false")
            pt["held_out"] = held = held.astype(bool)
        for k in ("q_levels", "k_levels"):
            if not (np.all(np.isfinite(pt[k])) and np.all(pt[k] >= 0) and np.all(pt[k] == np.round(pt[k]))):
                c.fail(f"has reram/patterns/{k} that are not level numbers 0, 1, 2 ...")
        c.finite(np.where(np.isfinite(pt["v_in"]).all() and np.isfinite(pt["ideal"]).all(), 0.0, np.nan),
                 "reram/patterns/v_in and ideal", 1, "complete input tables")
        c.finite(pt["current"][~held], "reram/patterns/current (fitting patterns)", 1)
        c.finite(pt["current"][held], "reram/patterns/current (held-out patterns)", 1)
        if "transient" in rr:
            for k, a in rr["transient"].items():
                c.finite(a, f"reram/transient/{k}", 1, "values")


def check_comparator(c: _Checker, cc: dict, degree: int) -> None:
    if "decision" in cc:
        g, w = cc["decision"], "comparator/decision"
        c.axis(g["dv"], w + "/dv")
        off = g["offset"] + (g["offset_linear"] if "offset_linear" in g else 0.0)
        c.finite(off[0::2], w + "/offset (even-numbered, fitting latches)", 1, "measured offsets")
        c.finite(off[1::2], w + "/offset (odd-numbered, held-out latches)", 1, "measured offsets")
        if "offset_linear" in g:
            for k in ("offset_nominal", "sensitivity", "dvt_sigma"):
                c.finite(np.where(np.isfinite(g[k]).all(), 0.0, np.nan), f"{w}/{k}", 1, "complete values")
            if not np.sum((g["sensitivity"] * g["dvt_sigma"]) ** 2) > 0:
                c.fail(f"has {w}/sensitivity and dvt_sigma that give no offset spread")
        if "noise" in cc:
            n, w = cc["noise"], "comparator/noise"
            for k in ("noise_sigma", "noise_mean"):
                c.finite(n[k], f"{w}/{k}", 1, "values")
            c.finite(np.where(np.isfinite(n["dv"]).all() and np.isfinite(n["p_keep"]).all(), 0.0, np.nan),
                     f"{w}/dv and p_keep", 1, "complete curves")
        if "delay" in cc:
            g, w = cc["delay"], "comparator/delay"
            if not (np.all(np.isfinite(g["overdrive"])) and np.all(g["overdrive"] > 0)):
                c.fail(f"has {w}/overdrive that is not all positive")
            c.finite(g["delay"], w + "/delay", 2)
        if "energy" in cc:
            c.finite(cc["energy"]["energy"], "comparator/energy/energy")


def fit_gaincell(gc: dict, p: Path, degree: int = 3, surface: str = "auto") -> dict:
    out = {}
    if "read_surface" in gc:
        params = gc["read_surface"].attrs["parameters"]
        poly, table = fit_read_surface(gc["read_surface"], params["v_bl"], degree)
        best = table if surface == "table" or (surface == "auto" and table.scores["nrmse"] <= poly.scores["nrmse"]) else poly
        out["gaincell.read_surface"] = best
        out["gaincell.read_surface_poly"] = poly
        out["gaincell.read_surface_table"] = table
    if "write_read" in gc:
        wr = gc["write_read"]
        out["gaincell.write"] = fit_write(wr)
        for k, name in (("e_read", "gaincell.energy_read"), ("e_write", "gaincell.energy_write")):
            e = wr[k][()]
            out[name] = M.Constant(np.nanmean(e), np.nanstd(e), domain={}, units={"out": "J"})
        t_read = wr.attrs.get("t_read_s", 1e-8)
        try:
            t_read = float(t_read)
        except (TypeError, ValueError):
            t_read = float("nan")
        if not (math.isfinite(t_read) and t_read > 0):
            raise AnalogAttnError(f"{p} has a 't_read_s' attribute on gaincell/write_read that is not a "
                                  f"positive number: {HINT}")
        out["gaincell.t_read"] = M.Constant(t_read, domain={}, units={"out": "s"})
    if "retention" in gc:
        out["gaincell.retention"] = fit_retention(gc["retention"])
    if "monte_carlo" in gc:
        out["gaincell.variation"] = fit_variation(gc["monte_carlo"])
    if "read_noise" in gc:
        out["gaincell.read_noise"] = fit_read_noise(gc["read_noise"])
    if "write_mismatch" in gc:
        out["gaincell.write_sigma"] = fit_write_sigma(gc["write_mismatch"])
    if "tile" in gc and {"gaincell.read_surface", "gaincell.write", "gaincell.retention"} <= set(out):
        out["gaincell.kernel_tile"] = fit_kernel_tile(out, gc["tile"])
    return out


def fit_kernel_tile(models: dict, tile) -> "M.Constant":
    """The gain-cell kernel's score-tile charges (its tables, decay expansion and GEMM, converters
    off) against the SPICE tile draws: a ``constant`` holding the NRMSE of full scale, its scores
    the validation row (:mod:`analogattn.attention.gaincell.validation`)."""
    from ..attention.gaincell.device import CellModel
    from ..attention.gaincell.validation import validate
    from .bundle import Bundle
    b = Bundle(models)
    b.info, b.path = {}, None
    sc = validate(CellModel.from_bundle(b), tile)
    v = sc["nrmse_full_scale"]
    m = M.Constant(v if math.isfinite(v) else 1.0, domain={}, units={"out": "NRMSE of full scale"},
                   meta={"what": "gain-cell kernel score tile vs SPICE tile transient"})
    m.scores = sc
    return m


def fit_write_sigma(g):
    """Per-cell spread of the written voltage vs the nominal stored voltage (table1d, the nominal
    axis made strictly increasing); score: split-half agreement of the sigma (sampling)."""
    v = g["v_stored"][()]
    nom, mc = v[0], v[1:]
    x = np.maximum.accumulate(np.where(np.isfinite(nom), nom, -np.inf))
    x = x + 1e-9 * np.arange(x.size)
    sig = np.nanstd(mc, axis=0)
    ok = np.isfinite(x) & np.isfinite(sig)
    a, b = np.nanstd(mc[0::2], axis=0), np.nanstd(mc[1::2], axis=0)
    m = M.Table1D(x[ok], sig[ok], domain={"x": [float(x[ok][0]), float(x[ok][-1])]},
                  units={"x": "V (nominal stored)", "out": "V (sigma of the stored voltage)"},
                  meta={"samples": int(mc.shape[0])})
    m.scores = {"sigma_max_V": float(np.max(sig[ok])), "sigma_median_V": float(np.median(sig[ok])),
                "split_half_rel_diff": float(np.nanmean(np.abs(a - b)) / max(np.nanmean(sig), 1e-30))}
    return m


def fit_read_noise(g):
    """Read-noise charge of one full read pulse: table2d of sigma_Q(V_store, V_in) from ``.noise``
    (NaN points filled with the largest converged value: conservative)."""
    q, vs, vi = g["q_sigma"][()], g["v_store"][()], g["v_in"][()]
    q = np.where(np.isfinite(q), q, np.nanmax(q))
    m = M.Table2D(q, vs, vi, domain={"x": [float(vs[0]), float(vs[-1])], "y": [float(vi[0]), float(vi[-1])]},
                  units={"x": "V", "y": "V", "out": "C (sigma per read pulse)"},
                  meta={"t_read": float(g["t_read"][()])})
    m.scores = {"q_sigma_mean_C": float(np.mean(q[:, -1])), "q_sigma_max_C": float(np.max(q))}
    return m


def fit_reram(r: dict, p: Path, degree: int = 3, surface: str = "auto") -> dict:
    out = {}
    if {"cell_iv", "patterns"} <= set(r):
        rp = r["patterns"].attrs["parameters"]
        out["reram.column"] = fit_column(r["cell_iv"], r["patterns"], r.get("transient"), r.get("monte_carlo"),
                                         rp["sigma_g"])
        out["reram.column"].meta.update({k: rp[k] for k in ("rows", "levels", "input_levels", "v_read", "g_max",
                                                             "on_off", "r_f")})
        if "transient" in r:
            t = r["transient"]
            out["reram.energy"] = M.Constant(t["energy"][()], domain={}, units={"out": "J per column evaluation"})
            out["reram.time"] = M.Constant(max(float(t["eval_time"][()]), float(t["settle_time"][()])),
                                           domain={}, units={"out": "s per column evaluation"})
        out["reram.kernel_column"] = fit_kernel_column(out["reram.column"], r["patterns"], r.get("reference"))
    return out


def fit_kernel_column(col, patterns, reference=None):
    """The pruning kernel's column currents (rank-1 factors, loss term, differential reference,
    through its own code path) against the held-out SPICE patterns: a ``constant`` model holding
    the NRMSE, its scores the validation row (:mod:`analogattn.attention.sprint.validation`)."""
    from ..attention.sprint.validation import validate
    sc = validate(col, patterns, reference)
    m = M.Constant(sc["nrmse"] if math.isfinite(sc["nrmse"]) else 1.0, domain={}, units={"out": "NRMSE of the kernel's column current vs SPICE"},
                   meta={"what": "sprint kernel column path vs held-out SPICE patterns"})
    m.scores = sc
    return m


def fit_comparator(c: dict, p: Path, degree: int = 3, surface: str = "auto") -> dict:
    out = {}
    if "decision" in c:
        out["comparator.probit"] = fit_probit(c["decision"], c.get("noise"))
        if "delay" in c:
            out["comparator.delay"] = fit_delay(c["delay"])
        if "energy" in c:
            e = c["energy"]["energy"][()]
            out["comparator.energy"] = M.Constant(np.nanmean(e[1:]) if np.isfinite(e[1:]).any() else np.nanmean(e),
                                                  np.nanstd(e), domain={}, units={"out": "J per decision"})
    return out


def fit_all(char_path, degree: int = 3, surface: str = "auto") -> dict:
    """{name: model} for everything the characterization file holds (checked first, see
    :func:`read_characterization`), family by family through the registry's fit specs."""
    p = Path(char_path)
    f = open_hdf5(p, "characterization file", "run: analogattn characterize")
    try:
        with f:
            if f.attrs.get("schema") != "analogattn-characterization/1":
                raise AnalogAttnError(f"{p} is not an analogattn characterization file (no schema "
                                      f"'analogattn-characterization/1'): {HINT}")
            data = read_characterization(f, p, degree)
    except (OSError, RuntimeError, KeyError) as e:  # h5py's errors reading a damaged or truncated file
        raise AnalogAttnError(f"characterization file {p} is truncated or corrupted "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): {HINT}") from None
    out = {}
    specs = _fit_specs()
    for fam, spec in specs.items():
        if fam in data:
            out.update(families.resolve(spec.fit)(data[fam], p, degree=degree, surface=surface))
    if not out:
        needs = [s.needs or fam for fam, s in specs.items()]
        what = needs[0] if len(needs) == 1 else ", ".join(needs[:-1]) + ", or " + needs[-1]
        raise AnalogAttnError(f"{p} holds no characterization to fit (no {what} analysis): {HINT}")
    return out


def targets() -> dict:
    """{model name: (metric, limit)} of every registered family's fit."""
    out = {}
    for spec in _fit_specs().values():
        out.update(spec.targets)
    return out


def validation_rows(models: dict) -> list[tuple]:
    """(model, metric, value, target, pass) rows for the report."""
    rows = []
    tgts = targets()
    for name, m in models.items():
        for metric, value in m.scores.items():
            if not isinstance(value, float):
                continue
            tgt = tgts.get(name)
            if tgt and tgt[0] == metric:
                rows.append((name, metric, value, tgt[1], value <= tgt[1]))
            else:
                rows.append((name, metric, value, None, None))
    return rows


# -- the built-in families' fits (referenced from their registrations in characterize/) -------
# reads: per analysis {dataset: shape} required and optional, a shape as symbols that must agree
# within the analysis (() = a scalar).
GAINCELL_FIT = FitSpec(
    reads={
        "read_surface": ({"current": ("S", "I"), "v_store": ("S",), "v_in": ("I",)}, {}),
        "write_read": ({"v_written": ("W",), "v_stored": ("W",), "e_read": ("W",), "e_write": ("W",)}, {}),
        "retention": ({"temperature": ("T",), "tau": ("T",), "v_eq": ("T",), "fit_rms": ("T",),
                       "v_store": ("T", "N", "t")}, {"time": ("t",)}),
        "monte_carlo": ({"current": ("M", "S", "I"), "v_store": ("S",), "v_in": ("I",)}, {}),
        "read_noise": ({"q_sigma": ("S", "I"), "v_store": ("S",), "v_in": ("I",), "t_read": ()}, {}),
        "write_mismatch": ({"v_stored": ("N", "W"), "v_written": ("W",)}, {}),
        "tile": ({"u": ("N", "R"), "v_written": ("N", "R", "C"), "age_tokens": ("N",), "token_period": (),
                  "charge": ("N", "C"), "v_before": ("N", "R", "C"), "v_after": ("N", "R", "C")},
                 {"through_write_transistor": (), "v_stored": ("N", "R", "C")}),
    },
    parameters={"read_surface": ("v_bl",)}, check=check_gaincell, fit=fit_gaincell,
    models={"gaincell.read_surface": ("poly2d", "table2d"), "gaincell.read_surface_poly": ("poly2d",),
            "gaincell.read_surface_table": ("table2d",), "gaincell.write": ("table1d",),
            "gaincell.energy_read": ("constant",), "gaincell.energy_write": ("constant",),
            "gaincell.t_read": ("constant",), "gaincell.retention": ("decay",), "gaincell.variation": ("table2d",),
            "gaincell.read_noise": ("table2d",), "gaincell.write_sigma": ("table1d",),
            "gaincell.kernel_tile": ("constant",)},
    targets={"gaincell.read_surface": ("nrmse", 0.005), "gaincell.kernel_tile": ("nrmse_full_scale", 0.01)},
    needs="gaincell")
RERAM_FIT = FitSpec(
    reads={
        "cell_iv": ({"v": ("V",), "current": ("L", "V")}, {}),
        "patterns": ({"q_levels": ("P", "R"), "k_levels": ("P", "R"), "v_in": ("P", "R"), "current": ("P",),
                      "held_out": ("P",), "ideal": ("P",)}, {}),
        "transient": ({"energy": (), "eval_time": (), "settle_time": (), "noise_rel": ()}, {}),
        "monte_carlo": ({"mean": ("K",), "std": ("K",)}, {}),
        "reference": ({"held_index": ("R",), "current": ("R",)}, {}),
    },
    parameters={"patterns": ("sigma_g", "rows", "levels", "input_levels", "v_read", "g_max", "on_off", "r_f")},
    check=check_reram, fit=fit_reram,
    models={"reram.column": ("column",), "reram.energy": ("constant",), "reram.time": ("constant",),
            "reram.kernel_column": ("constant",)},
    targets={"reram.column": ("nrmse", 0.01), "reram.kernel_column": ("nrmse", 0.005)},
    needs="reram cell_iv + patterns")
COMPARATOR_FIT = FitSpec(
    reads={
        "decision": ({"offset": ("S",), "dv": ("D",)},
                     {"offset_linear": ("S",), "offset_nominal": (), "sensitivity": ("E",), "dvt_sigma": ("E",)}),
        "noise": ({"noise_sigma": (), "noise_mean": (), "dv": ("D",), "p_keep": ("D",)}, {}),
        "delay": ({"overdrive": ("O",), "delay": ("O",)}, {}),
        "energy": ({"energy": ("O",)}, {}),
    },
    check=check_comparator, fit=fit_comparator,
    models={"comparator.probit": ("probit",), "comparator.delay": ("logdelay",), "comparator.energy": ("constant",)},
    targets={"comparator.probit": ("max_abs_error", 0.02)}, needs="comparator decision")
TARGETS = {**GAINCELL_FIT.targets, **RERAM_FIT.targets, **COMPARATOR_FIT.targets}  # the built-ins'
SCHEMA = {"gaincell": GAINCELL_FIT.reads, "reram": RERAM_FIT.reads, "comparator": COMPARATOR_FIT.reads}
