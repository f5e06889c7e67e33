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
from pathlib import Path

import numpy as np

from ..errors import AnalogAttnError
from ..atomic import open_hdf5
from . import models as M

TARGETS = {"gaincell.read_surface": ("nrmse", 0.005), "reram.column": ("nrmse", 0.01),
           "comparator.probit": ("max_abs_error", 0.02)}


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


def fit_retention(g):
    temps, tau, veq, rms = (g[k][()] for k in ("temperature", "tau", "v_eq", "fit_rms"))
    v = g["v_store"][()]
    m = M.Decay(temps, tau, veq, domain={"temperature": [float(temps.min()), float(temps.max())]},
                units={"t": "s", "tau": "s", "v": "V", "temperature": "degC"})
    m.scores = {"rms_residual_V": float(np.max(rms)),
                "nrmse": float(np.max(rms) / (np.nanmax(v) - np.nanmin(v)))}
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


def fit_all(char_path, degree: int = 3, surface: str = "auto") -> dict:
    """{name: model} for everything the characterization file holds."""
    p = Path(char_path)
    f = open_hdf5(p, "characterization file", "run: analogattn characterize")
    out = {}
    with f:
        if f.attrs.get("schema") != "analogattn-characterization/1":
            raise AnalogAttnError(f"{p} is not an analogattn characterization file")
        if "gaincell" in f:
            gc = f["gaincell"]
            params = json.loads(gc["read_surface"].attrs["parameters"])["circuit"] if "read_surface" in gc else {}
            if "read_surface" in gc:
                poly, table = fit_read_surface(gc["read_surface"], params.get("v_bl", 0.45), degree)
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
                out["gaincell.t_read"] = M.Constant(wr.attrs.get("t_read_s", 1e-8), domain={}, units={"out": "s"})
            if "retention" in gc:
                out["gaincell.retention"] = fit_retention(gc["retention"])
            if "monte_carlo" in gc:
                out["gaincell.variation"] = fit_variation(gc["monte_carlo"])
        if "reram" in f and {"cell_iv", "patterns"} <= set(f["reram"]):
            r = f["reram"]
            rp = json.loads(r["patterns"].attrs["parameters"])["circuit"]
            out["reram.column"] = fit_column(r["cell_iv"], r["patterns"], r.get("transient"), r.get("monte_carlo"),
                                             rp["sigma_g"])
            out["reram.column"].meta.update({k: rp[k] for k in ("rows", "levels", "input_levels", "v_read", "g_max",
                                                                 "on_off", "r_f")})
            if "transient" in r:
                t = r["transient"]
                out["reram.energy"] = M.Constant(t["energy"][()], domain={}, units={"out": "J per column evaluation"})
                out["reram.time"] = M.Constant(max(float(t["eval_time"][()]), float(t["settle_time"][()])),
                                               domain={}, units={"out": "s per column evaluation"})
        if "comparator" in f and "decision" in f["comparator"]:
            c = f["comparator"]
            out["comparator.probit"] = fit_probit(c["decision"], c.get("noise"))
            if "delay" in c:
                out["comparator.delay"] = fit_delay(c["delay"])
            if "energy" in c:
                e = c["energy"]["energy"][()]
                out["comparator.energy"] = M.Constant(np.nanmean(e[1:]) if e.size > 1 else np.nanmean(e),
                                                      np.nanstd(e), domain={}, units={"out": "J per decision"})
    if not out:
        raise AnalogAttnError(f"{p} holds no characterization to fit")
    return out


def validation_rows(models: dict) -> list[tuple]:
    """(model, metric, value, target, pass) rows for the report."""
    rows = []
    for name, m in models.items():
        for metric, value in m.scores.items():
            if not isinstance(value, float):
                continue
            tgt = TARGETS.get(name)
            if tgt and tgt[0] == metric:
                rows.append((name, metric, value, tgt[1], value <= tgt[1]))
            else:
                rows.append((name, metric, value, None, None))
    return rows
