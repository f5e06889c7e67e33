"""Comparator analyses: decision transfer (Monte Carlo mismatch + transient noise), delay versus
overdrive, energy per decision."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from ..circuits.comparator import DEVICES, ComparatorParams
from ..circuits.reram import K_BOLTZMANN, white_noise_pwl
from ..params import Validated, param
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, Analysis, Dataset, make_task, worker

FAMILY = "comparator"
ANALYSES = ("decision", "noise", "delay", "energy")


@dataclasses.dataclass(frozen=True)
class ComparatorSweep(Validated):
    mc_samples: int = param(500, "", 0, 100000, "Monte Carlo samples of Vt mismatch")
    per_task: int = param(50, "", 1, 10000, "comparators simulated side by side per task")
    dv_range: float = param(0.05, "V", 1e-4, 0.5, "offsets searched over +-dv_range")
    iterations: int = param(10, "", 1, 40, "bisection steps per offset (resolution 2 dv_range / 2^n)")
    dv_steps: int = param(101, "", 3, 10001, "points of the stored keep-probability curve")
    noise_dv: tuple[float, ...] = param((-2e-3, -1e-3, -0.5e-3, 0.0, 0.5e-3, 1e-3, 2e-3), "V",
                                        -0.5, 0.5, "differential inputs of the noise run")
    noise_reps: int = param(24, "", 1, 10000, "latches side by side in the noise run (decisions per input)")
    gamma: float = param(1.0, "", 0.1, 5.0, "channel thermal-noise factor of the input pair")
    overdrives: tuple[float, ...] = param((0.5e-3, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3), "V",
                                          1e-6, 1.0, "overdrives of the delay run")
    seed: int = param(1, "", 0, 2**31 - 1, "seed of the mismatch draws")
    a_vt: float = param(3.5e-3, "V*um", 0.0, 0.1, "Pelgrom threshold-mismatch coefficient")


def _decisions(sim, p: ComparatorParams, n_inst: int, cycles: int):
    names = ["time"] + [f"outp_{k}" for k in range(n_inst)] + [f"outn_{k}" for k in range(n_inst)]
    vec = sim.vectors(names)
    tt = p.decision_times(cycles)
    return np.array([np.interp(tt, vec["time"], vec[f"outp_{k}"]) - np.interp(tt, vec["time"], vec[f"outn_{k}"])
                     for k in range(n_inst)]) > 0, vec


def _tran(sim, p, cycles):
    sim.command(f"tran {p.t_edge / 4:.6g} {cycles * p.t_clk:.6g} 0 {p.t_edge / 2:.6g}")


@worker
def comparator_offsets(sim, task):
    """Input-referred offset of every latch by bisection: each iteration sets each latch's own
    differential input (alter), simulates one reset + evaluate cycle, and halves the interval
    on the side the decision points to."""
    a = task.args
    p = ComparatorParams.from_dict(a["params"])
    sim.load(task.netlist)
    for name, value in a.get("options", {}).items():
        sim.command(f"option {name}={value}")
    n = a["n_inst"]
    lo, hi = np.full(n, -a["dv_range"]), np.full(n, a["dv_range"])
    st = np.zeros(n, np.int8)
    try:
        for _ in range(a["iterations"]):
            mid = 0.5 * (lo + hi)
            for k in range(n):
                sim.command(f"alter vinp_{k} dc={p.v_cm + mid[k] / 2:.9g}")
                sim.command(f"alter vinn_{k} dc={p.v_cm - mid[k] / 2:.9g}")
            _tran(sim, p, 1)
            keep, _ = _decisions(sim, p, n, 1)
            keep = keep[:, 0]
            hi = np.where(keep, mid, hi)  # keeps at mid: the offset is below mid
            lo = np.where(keep, lo, mid)
    except SimulationFailed:
        st[:] = NO_CONVERGENCE
    off = 0.5 * (lo + hi)
    off[st != 0] = np.nan
    # an offset pinned at the range edge is outside the searched range
    edge = (np.abs(off) > a["dv_range"] * (1 - 2.0 ** (1 - a["iterations"])))
    st[edge & (st == 0)] = 3
    return {"offset": off, "status": st}


@worker
def comparator_noise(sim, task):
    """Input-pair gm from an operating point at the start of evaluation, then a transient with
    the pair's channel noise (4kT gamma / gm per device, referred to the input) as a seeded
    white-noise source in series with each latch's input."""
    a = task.args
    p = ComparatorParams.from_dict(a["params"])
    sim.load(a["op_netlist"])
    sim.command("op")
    sim.command("let gm_in = @m1[gm]")
    gm = float(sim.vectors(["gm_in"])["gm_in"][0])
    kt = K_BOLTZMANN * (p.temperature + 273.15)
    density = 2 * 4 * kt * a["gamma"] / gm  # V^2/Hz, both devices referred to the input
    dt = 2 * p.t_edge  # noise bandwidth 1/(2 dt) = 12.5 GHz at 20 ps edges: well above the latch's
    sigma = math.sqrt(density / (2 * dt))
    cycles, n = a["cycles"], a["n_inst"]
    rng = np.random.default_rng(a["seed"])
    net = task.netlist
    for k in range(n):
        net = net.replace(f"NOISE_{k}\n", white_noise_pwl(sigma, dt, cycles * p.t_clk, rng) + "\n", 1)
    sim.load(net)
    try:
        _tran(sim, p, cycles)
        d, _ = _decisions(sim, p, n, cycles)  # (instance, dv)
        st = 0
    except SimulationFailed:
        d, st = np.zeros((n, cycles), bool), NO_CONVERGENCE
    mu, sigma = probit_fit(a["dv"], d.mean(axis=0), n)  # fitted here: keeps scipy out of warm runs
    return {"keep": d.T, "fit": np.array([mu, sigma]), "gm": np.array(gm), "noise_density": np.array(density), "status": np.array([st], np.int8)}


@worker
def comparator_delay_energy(sim, task):
    a = task.args
    p = ComparatorParams.from_dict(a["params"])
    sim.load(task.netlist)
    cycles = a["cycles"]
    try:
        _tran(sim, p, cycles)
    except SimulationFailed:
        return {"delay": np.full(cycles, np.nan), "energy": np.full(cycles, np.nan),
                "status": np.full(cycles, NO_CONVERGENCE, np.int8)}
    vec = sim.vectors(["time", "outp_0", "outn_0", "clk", "vdd#branch", "vclk#branch"])
    t = vec["time"]
    diff = np.abs(vec["outp_0"] - vec["outn_0"])
    T = p.t_clk
    delay, energy = np.full(cycles, np.nan), np.zeros(cycles)
    for j in range(cycles):
        t_clk = j * T + T / 2 + p.t_edge / 2  # clock edge at 50 %
        m = (t >= t_clk) & (t <= (j + 1) * T)
        hit = np.nonzero(diff[m] > p.vdd / 2)[0]
        if hit.size:
            delay[j] = t[m][hit[0]] - t_clk
        c = (t >= j * T) & (t <= (j + 1) * T)
        energy[j] = -np.trapezoid(p.vdd * vec["vdd#branch"][c], t[c]) - np.trapezoid(vec["clk"][c] * vec["vclk#branch"][c], t[c])
    return {"delay": delay, "energy": energy, "status": np.zeros(cycles, np.int8)}


def probit_fit(x, p_keep, n):
    """Fit P(keep) = Phi((x - mu) / sigma) by maximum likelihood; returns (mu, sigma)."""
    from scipy.optimize import minimize
    from scipy.stats import norm
    x, p_keep = np.asarray(x, float), np.asarray(p_keep, float)
    k = p_keep * n

    def nll(th):
        mu, ls = th
        pr = np.clip(norm.cdf((x - mu) / np.exp(ls)), 1e-12, 1 - 1e-12)
        return -np.sum(k * np.log(pr) + (n - k) * np.log(1 - pr))

    span = max(np.ptp(x), 1e-9)
    r = minimize(nll, [float(np.interp(0.5, p_keep, x)) if np.all(np.diff(p_keep) >= 0) else 0.0,
                       math.log(span / 10)], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-9})
    return float(r.x[0]), float(np.exp(r.x[1]))


def analyses(p: ComparatorParams, s: ComparatorSweep, only=None, sim_options=None) -> list[Analysis]:
    md = p.technology.digest()
    opts = dict(sim_options or {})
    pj = json.dumps({"circuit": p.to_dict(), "sweep": s.to_dict(), "simulator_options": opts}, sort_keys=True)
    mod = __name__
    out = []

    def want(n):
        return only is None or n in only

    def inputs(dv, reps=1):
        return (f"vinp inp 0 pwl({p.staircase(p.v_cm + np.asarray(dv) / 2, reps)})\n"
                f"vinn inn 0 pwl({p.staircase(p.v_cm - np.asarray(dv) / 2, reps)})\n")

    if want("decision") and s.mc_samples > 0:
        dv = np.linspace(-s.dv_range, s.dv_range, s.dv_steps)
        rng = np.random.default_rng(s.seed)
        areas = p.areas_um2()
        sig = np.array([s.a_vt / math.sqrt(areas[d]) for d in DEVICES])
        draws = rng.standard_normal((s.mc_samples, len(DEVICES))) * sig
        tasks = []
        for i, k0 in enumerate(range(0, s.mc_samples, s.per_task)):
            chunk = draws[k0:k0 + s.per_task]
            body = "".join(f"vinp_{k} inp_{k} 0 {p.v_cm}\nvinn_{k} inn_{k} 0 {p.v_cm}\n"
                           + p.instance(k, f"inp_{k}", f"inn_{k}", dict(zip(DEVICES, row)))
                           for k, row in enumerate(chunk))
            net = p.header(f"{p.name} decision MC") + body + ".end\n"
            tasks.append(make_task(FAMILY, "decision", i, mod + ":comparator_offsets", net, md,
                                   params=p.to_dict(), n_inst=len(chunk), dv_range=s.dv_range,
                                   iterations=s.iterations, options=opts))

        def merge_dec(res):
            off = np.concatenate([r["offset"] for r in res])
            ok = np.isfinite(off)
            # decision of sample k at input dv: keep iff dv > offset_k (to the bisection's resolution)
            keep = dv[None, :] > off[ok][:, None]
            pk = keep.mean(axis=0)
            mu, sigma = float(np.mean(off[ok])), float(np.std(off[ok]))
            return {"dv": Dataset(dv, "V", "differential input (inp - inn)"),
                    "p_keep": Dataset(pk, "", "fraction of samples deciding keep at dv"),
                    "offset": Dataset(off, "V", "input-referred offset of each sample (bisection)"),
                    "offset_mean": Dataset(np.asarray(mu), "V", "mean offset"),
                    "offset_sigma": Dataset(np.asarray(sigma), "V", "standard deviation of the offsets (mismatch)"),
                    "dvt": Dataset(draws, "V", f"threshold shifts of {', '.join(DEVICES)}"),
                    "status": Dataset(np.concatenate([r["status"] for r in res]), "", "")}
        out.append(Analysis(FAMILY, "decision", tasks, merge_dec, pj,
                            method="side-by-side latches with Pelgrom delvto per device; offset of each by "
                                   "bisection over one-cycle transients; status 3 = offset outside +-dv_range",
                            attrs={"seed": s.seed, "iterations": s.iterations}))

    if want("noise"):
        dvn = np.asarray(s.noise_dv)
        op = (p.header(f"{p.name} input pair operating point").split("vclk")[0]
              + f"vclk clk 0 {p.vdd}\nvinp inp 0 {p.v_cm}\nvinn inn 0 {p.v_cm}\n"
              + f"m1 dip inp tail 0 {p.technology.nmos} W={p.w_in * 1e-6:.6g} L={p.l_in * 1e-6:.6g}\n"
              + f"m2 din inn tail 0 {p.technology.nmos} W={p.w_in * 1e-6:.6g} L={p.l_in * 1e-6:.6g}\n"
              + f"mt tail clk 0 0 {p.technology.nmos} W={p.w_tail * 1e-6:.6g} L={p.l_min * 1e-6:.6g}\n"
              + f"vdip dip 0 {p.vdd}\nvdin din 0 {p.vdd}\n.end\n")
        body = "".join(f"vnoise{k} inp{k} inp NOISE_{k}\n"
                       + p.instance(k, f"inp{k}", "inn") for k in range(s.noise_reps))
        net = p.header(f"{p.name} decision noise") + inputs(dvn) + body + ".end\n"
        t = make_task(FAMILY, "noise", 0, mod + ":comparator_noise", net, md, params=p.to_dict(), op_netlist=op,
                      gamma=s.gamma, cycles=len(dvn), n_inst=s.noise_reps, dv=dvn.tolist(), seed=s.seed + 1,
                      options=opts)

        def merge_noise(res):
            r = res[0]
            keep = r["keep"]  # (dv, instance)
            pk = keep.mean(axis=1)
            mu, sigma = r["fit"]
            return {"dv": Dataset(dvn, "V", ""), "keep": Dataset(keep, "", "[dv, latch]"),
                    "p_keep": Dataset(pk, "", ""), "noise_sigma": Dataset(np.asarray(sigma), "V",
                                                                           "probit sigma from transient noise"),
                    "noise_mean": Dataset(np.asarray(mu), "V", "systematic offset of the nominal latch"),
                    "gm_in": Dataset(r["gm"], "S", "input device gm at the start of evaluation"),
                    "noise_density": Dataset(r["noise_density"], "V^2/Hz", "input-referred density applied"),
                    "status": Dataset(r["status"], "", "")}
        out.append(Analysis(FAMILY, "noise", [t], merge_noise, pj,
                            method="identical nominal latches side by side, each with its own input-pair channel "
                                   "noise 2*4kT*gamma/gm as a seeded white-noise source in series with inp; one decision per "
                                   "latch and differential input"))

    if want("delay") or want("energy"):
        od = np.asarray(s.overdrives)
        net = p.header(f"{p.name} delay and energy") + inputs(od) + p.instance(0, "inp", "inn") + ".end\n"
        t = make_task(FAMILY, "delay_energy", 0, mod + ":comparator_delay_energy", net, md, params=p.to_dict(),
                      cycles=len(od), options=opts)
        if want("delay"):
            out.append(Analysis(FAMILY, "delay", [t], lambda res: {
                "overdrive": Dataset(od, "V", ""), "delay": Dataset(res[0]["delay"], "s",
                                                                     "clock edge (50%) to |outp - outn| > VDD/2"),
                "status": Dataset(res[0]["status"], "", "")}, pj, method="transient, one decision per overdrive"))
        if want("energy"):
            out.append(Analysis(FAMILY, "energy", [t], lambda res: {
                "overdrive": Dataset(od, "V", ""), "energy": Dataset(res[0]["energy"], "J",
                                                                      "VDD and clock energy per decision cycle"),
                "mean": Dataset(np.asarray(np.nanmean(res[0]["energy"])), "J", ""),
                "status": Dataset(res[0]["status"], "", "")}, pj, method="transient, supply + clock source energy"))
    return out
