"""Gain-cell analyses: read surface, write transfer, retention, energy, Monte Carlo."""
from __future__ import annotations

import json

import numpy as np

from ..circuits.gaincell import GainCellParams, GainCellSweep
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, OK, Analysis, Dataset, make_task, worker

FAMILY = "gaincell"


def _dc_grid(sim, vst_stop, n_store, vin_lo, vin_hi, n_in):
    """Nested DC sweep (V_store inner, V_in outer) -> current sunk from the bit line (A).

    On failure of the nested sweep, falls back to one 1-D sweep per V_in so that only the rows
    that really fail become NaN.
    """
    vstore = np.linspace(0.0, vst_stop, n_store)
    vin = np.linspace(vin_lo, vin_hi, n_in)
    step_s = vst_stop / (n_store - 1)
    step_i = (vin_hi - vin_lo) / (n_in - 1)
    current = np.full((n_store, n_in), np.nan)
    status = np.full((n_store, n_in), OK, dtype=np.int8)
    try:
        # stop a thousandth of a step past the end: ngspice's float loop may drop the last point
        sim.command(f"dc vst 0 {vst_stop + step_s * 1e-3:.10g} {step_s:.10g} "
                    f"vrwl {vin_lo:.10g} {vin_hi + step_i * 1e-3:.10g} {step_i:.10g}")
        i = -sim.vectors(["vbl#branch"])["vbl#branch"]
        if i.size != n_store * n_in:
            raise SimulationFailed(f"nested sweep returned {i.size} points, expected {n_store * n_in}")
        current[:] = i.reshape(n_in, n_store).T
        return vstore, vin, current, status
    except SimulationFailed:
        pass
    for j, v in enumerate(vin):
        try:
            sim.command(f"alter vrwl dc={v:.10g}")
            sim.command(f"dc vst 0 {vst_stop + step_s * 1e-3:.10g} {step_s:.10g}")
            i = -sim.vectors(["vbl#branch"])["vbl#branch"]
            if i.size != n_store:
                raise SimulationFailed("short sweep")
            current[:, j] = i
        except SimulationFailed:
            status[:, j] = NO_CONVERGENCE
    return vstore, vin, current, status


def _load(sim, task):
    sim.load(task.netlist)
    for name, value in task.args.get("options", {}).items():
        sim.command(f"option {name}={value}")


@worker
def gaincell_dc(sim, task):
    a = task.args
    _load(sim, task)
    vstore, vin, cur, st = _dc_grid(sim, a["vdd"], a["n_store"], a["v_bl"], a["v_in"], a["n_in"])
    return {"v_store": vstore, "v_in": vin, "current": cur, "status": st}


@worker
def gaincell_mc(sim, task):
    """Monte Carlo: re-run the DC read surface with drawn threshold shifts (alter delvto)."""
    a = task.args
    _load(sim, task)
    dvt = np.asarray(a["dvt"])  # (samples, 2): mp, mn
    surfaces, status = [], []
    for dp, dn in dvt:
        sim.command(f"alter mp0 delvto={dp:.10g}")
        sim.command(f"alter mn0 delvto={dn:.10g}")
        vstore, vin, cur, st = _dc_grid(sim, a["vdd"], a["n_store"], a["v_bl"], a["v_in"], a["n_in"])
        surfaces.append(cur)
        status.append(st)
    return {"v_store": vstore, "v_in": vin, "current": np.array(surfaces), "status": np.array(status),
            "dvt": dvt}


def _energy(t, v, i, t0, t1):
    """Energy delivered by a source between t0 and t1: -int V*I dt (ngspice's branch current
    flows into the + terminal, so delivered power is -V*I)."""
    m = (t >= t0) & (t <= t1)
    return -np.trapezoid(v[m] * i[m], t[m])


@worker
def gaincell_write_read(sim, task):
    a = task.args
    n = len(a["v_written"])
    tm = a["times"]
    _load(sim, task)
    out = {"v_written": np.asarray(a["v_written"])}
    try:
        sim.command(f"tran {a['tstep']:.6g} {tm['stop']:.6g} 0 {a['tmax']:.6g}")
    except SimulationFailed:
        for k in ("v_stored", "e_write", "e_read", "q_read"):
            out[k] = np.full(n, np.nan)
        out["status"] = np.full(n, NO_CONVERGENCE, np.int8)
        return out
    names = ["time"]
    for k in range(n):
        names += [f"sn{k}", f"wbl{k}", f"wwl{k}", f"rwl{k}", f"rwlb{k}", f"bl{k}"]
        names += [f"v{s}{k}#branch" for s in ("wbl", "wwl", "rwl", "rwlb", "bl")]
    vec = sim.vectors(names)
    t = vec["time"]
    vs, ew, er, qr = (np.zeros(n) for _ in range(4))
    for k in range(n):
        vs[k] = np.interp(tm["sample"], t, vec[f"sn{k}"])
        ew[k] = sum(_energy(t, vec[f"{s}{k}"], vec[f"v{s}{k}#branch"], 0.0, tm["write_end"] + 1e-9)
                    for s in ("wbl", "wwl"))
        er[k] = sum(_energy(t, vec[f"{s}{k}"], vec[f"v{s}{k}#branch"], tm["read_start"], tm["read_end"])
                    for s in ("rwl", "rwlb", "bl"))
        m = (t >= tm["read_start"]) & (t <= tm["read_end"])
        qr[k] = -np.trapezoid(vec[f"vbl{k}#branch"][m], t[m])
    out.update(v_stored=vs, e_write=ew, e_read=er, q_read=qr, status=np.zeros(n, np.int8))
    return out


@worker
def gaincell_retention(sim, task):
    a = task.args
    n = len(a["v_start"])
    _load(sim, task)
    t_out = np.asarray(a["t_out"])
    try:
        sim.command(f"tran {a['tstep']:.6g} {a['stop']:.6g} 0 {a['tmax']:.6g}")
        vec = sim.vectors(["time"] + [f"sn{k}" for k in range(n)])
        v = np.array([np.interp(t_out, vec["time"], vec[f"sn{k}"]) for k in range(n)])
        status = np.zeros(n, np.int8)
    except SimulationFailed:
        v = np.full((n, t_out.size), np.nan)
        status = np.full(n, NO_CONVERGENCE, np.int8)
    tau, veq, rms = fit_decay(t_out - t_out[0], v)  # fitted here: keeps scipy out of warm runs
    return {"time": t_out, "v_store": v, "status": status, "fit": np.array([tau, veq, rms])}


def fit_decay(t, v):
    """Fit V(t) = V_eq + (V0 - V_eq) exp(-t / tau) jointly to curves sharing V_eq and tau.

    t: (T,), v: (curves, T). Returns (tau_s, v_eq_V, rms_residual_V).
    """
    from scipy.optimize import least_squares

    t = np.asarray(t)
    v = np.asarray(v)
    ok = np.all(np.isfinite(v), axis=1)
    v = v[ok]
    if v.size == 0:
        return np.nan, np.nan, np.nan
    v0 = v[:, 0]
    veq0 = float(np.mean(v[:, -1]))
    # initial tau: time for the widest curve to cover 63% of its way
    k = int(np.argmax(np.abs(v0 - veq0)))
    frac = np.abs(v[k] - veq0) / max(abs(v0[k] - veq0), 1e-12)
    tau0 = float(t[np.argmax(frac < np.exp(-1))]) if np.any(frac < np.exp(-1)) else float(t[-1])
    tau0 = max(tau0, t[1] if t.size > 1 else 1e-9)

    def resid(p):
        log_tau, veq = p[0], p[1]
        return (veq + (v0[:, None] - veq) * np.exp(-t[None, :] / np.exp(log_tau)) - v).ravel()

    r = least_squares(resid, x0=[np.log(tau0), veq0])
    rms = float(np.sqrt(np.mean(r.fun ** 2)))
    return float(np.exp(r.x[0])), float(r.x[1]), rms


def analyses(p: GainCellParams, s: GainCellSweep, only: set[str] | None = None,
             sim_options: dict | None = None) -> list[Analysis]:
    md = p.technology.digest()
    out = []
    opts = dict(sim_options or {})
    pj = json.dumps({"circuit": p.to_dict(), "sweep": s.to_dict(), "simulator_options": opts},
                    sort_keys=True)

    def want(name):
        return only is None or name in only

    if want("read_surface"):
        net = p.read_surface_netlist()
        task = make_task(FAMILY, "read_surface", 0, __name__ + ":gaincell_dc", net, md, vdd=p.vdd,
                         n_store=s.n_store, v_bl=p.v_bl, v_in=p.v_in, n_in=s.n_in, options=opts)

        def merge_rs(res):
            r = res[0]
            return {"current": Dataset(r["current"], "A", "current sunk from the bit line, "
                                       "[V_store, V_in]"),
                    "v_store": Dataset(r["v_store"], "V", "stored voltage axis"),
                    "v_in": Dataset(r["v_in"], "V", "read word line voltage axis"),
                    "status": Dataset(r["status"], "", "0 ok, 1 no convergence, 2 simulator error")}
        out.append(Analysis(FAMILY, "read_surface", [task], merge_rs, pj,
                            method="DC current at the bit line held at v_bl (not charge over a pulse)"))

    if want("write_read"):
        vw = np.linspace(0.0, p.vdd, s.n_write).round(9).tolist()
        tm = p.write_read_times()
        net = p.write_read_netlist(vw)
        task = make_task(FAMILY, "write_read", 0, __name__ + ":gaincell_write_read", net, md, v_written=vw,
                         times=tm, tstep=p.t_edge / 5, tmax=p.t_edge / 2, options=opts)

        def merge_wr(res):
            r = res[0]
            return {"v_written": Dataset(r["v_written"], "V", "bit-line voltage written"),
                    "v_stored": Dataset(r["v_stored"], "V", "storage node 5 ns after WWL falls "
                                        "(charge injection and feedthrough included)"),
                    "e_write": Dataset(r["e_write"], "J", "energy from WBL and WWL drivers per write"),
                    "e_read": Dataset(r["e_read"], "J", "energy dissipated per read pulse "
                                      "(RWL, RWLB and BL sources)"),
                    "q_read": Dataset(r["q_read"], "C", "charge sunk from the bit line over one read pulse"),
                    "status": Dataset(r["status"], "", "0 ok, 1 no convergence")}
        out.append(Analysis(FAMILY, "write_read", [task], merge_wr, pj,
                            method="transient: write pulse, WWL falls, settle, one read pulse of t_read at v_in",
                            attrs={"t_read_s": p.t_read, "t_write_s": p.t_write}))

    if want("retention"):
        starts = [min(v, p.vdd) for v in s.retention_starts]
        t_out = np.concatenate([[0.0], np.geomspace(1e-9, s.retention_time, 200)])
        t_out = (t_out + p.t_write + 3 * p.t_edge + 1e-9).tolist()  # measured from write end
        tasks = []
        for i, temp in enumerate(s.retention_temps):
            net = p.retention_netlist(starts, temp)
            tasks.append(make_task(FAMILY, "retention", i, __name__ + ":gaincell_retention", net, md, v_start=starts,
                                   t_out=t_out, stop=t_out[-1], tstep=p.t_edge,
                                   tmax=s.retention_time / 500, options=opts))

        def merge_ret(res):
            t0 = res[0]["time"][0]
            v = np.array([r["v_store"] for r in res])
            tau, veq, rms = np.array([r["fit"] for r in res]).T
            return {"time": Dataset(res[0]["time"] - t0, "s", "time since the end of the write"),
                    "temperature": Dataset(np.asarray(s.retention_temps), "degC", ""),
                    "v_start": Dataset(np.asarray(starts), "V", "written bit-line voltage"),
                    "v_store": Dataset(v, "V", "[temperature, start, time]"),
                    "tau": Dataset(np.asarray(tau), "s", "fitted decay time constant per temperature"),
                    "v_eq": Dataset(np.asarray(veq), "V", "fitted voltage the node decays to"),
                    "fit_rms": Dataset(np.asarray(rms), "V", "rms residual of the decay fit"),
                    "status": Dataset(np.array([r["status"] for r in res]), "", "0 ok, 1 no convergence")}
        out.append(Analysis(FAMILY, "retention", tasks, merge_ret, pj,
                            method="transient hold with WBL at v_bl and WWL at wwl_hold; leakage of the "
                                   "BSIM4 devices (subthreshold, gate tunnelling, junction); "
                                   "fit V_eq + (V0 - V_eq) exp(-t/tau)"))

    if want("monte_carlo") and s.mc_samples > 0:
        rng = np.random.default_rng(s.mc_seed)
        area = p.read_area_um2()
        sig = np.array([s.a_vt / np.sqrt(area["mp"]), s.a_vt / np.sqrt(area["mn"])])
        dvt = rng.standard_normal((s.mc_samples, 2)) * sig
        net = p.read_surface_netlist()
        tasks = []
        for i, start in enumerate(range(0, s.mc_samples, s.mc_per_task)):
            chunk = dvt[start:start + s.mc_per_task]
            tasks.append(make_task(FAMILY, "monte_carlo", i, __name__ + ":gaincell_mc", net, md,
                                   dvt=chunk.round(12).tolist(), vdd=p.vdd, n_store=s.mc_store,
                                   v_bl=p.v_bl, v_in=p.v_in, n_in=s.mc_in, options=opts))

        def merge_mc(res):
            cur = np.concatenate([r["current"] for r in res])
            return {"current": Dataset(cur, "A", "[sample, V_store, V_in]"),
                    "v_store": Dataset(res[0]["v_store"], "V", ""),
                    "v_in": Dataset(res[0]["v_in"], "V", ""),
                    "dvt": Dataset(np.concatenate([r["dvt"] for r in res]), "V",
                                   "threshold shifts drawn [sample, (mp, mn)]"),
                    "sigma_vt": Dataset(sig, "V", "Pelgrom sigma of (mp, mn): a_vt / sqrt(W L)"),
                    "mean": Dataset(np.nanmean(cur, axis=0), "A", "mean surface"),
                    "std": Dataset(np.nanstd(cur, axis=0), "A", "standard deviation of the surface"),
                    "status": Dataset(np.concatenate([r["status"] for r in res]), "", "")}
        out.append(Analysis(FAMILY, "monte_carlo", tasks, merge_mc, pj,
                            method="DC read surface re-simulated per sample with alter delvto on the read "
                                   "devices; sigma = a_vt/sqrt(W L) (Pelgrom); write transistor mismatch "
                                   "affects the write only and is not sampled here",
                            attrs={"seed": s.mc_seed, "a_vt_V_um": s.a_vt}))
    return out


ANALYSES = ("read_surface", "write_read", "retention", "monte_carlo")
