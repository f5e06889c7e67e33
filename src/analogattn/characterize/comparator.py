"""Comparator analyses: decision transfer (Monte Carlo mismatch + transient noise), delay versus
overdrive, energy per decision."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from ..circuits.comparator import DEVICES, T_EVAL, T_RISE, ComparatorParams  # noqa: F401 (T_EVAL: design rules)
from ..circuits.sources import K_BOLTZMANN
from ..errors import ParameterError
from ..params import Validated, param
from . import families
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, OUT_OF_RANGE, Analysis, Dataset, make_task, worker

FAMILY = "comparator"


@dataclasses.dataclass(frozen=True)
class ComparatorSweep(Validated):
    mc_samples: int = param(2000, "", 0, 100000, "Monte Carlo samples of Vt mismatch")
    per_task: int = param(10, "", 1, 10000, "comparators simulated side by side per task (small: the shared "
                                            "time step follows every latch's regeneration)")
    dv_range: float = param(0.05, "V", 1e-4, 0.5, "offsets searched over +-dv_range")
    iterations: int = param(10, "", 1, 40, "bisection steps per offset (resolution 2 dv_range / 2^n)")
    guide_shift: int = param(5, "", 0, 20, "guided search window +-dv_range / 2^n around the predicted "
                                            "offset, n fewer decisions per latch (0: full-range search)")
    dv_steps: int = param(101, "", 3, 10001, "points of the stored keep-probability curve")
    noise_dv: tuple[float, ...] = param((-2e-3, -1e-3, -0.5e-3, 0.0, 0.5e-3, 1e-3, 2e-3), "V",
                                        -0.5, 0.5, "differential inputs of the noise run")
    noise_reps: int = param(24, "", 1, 10000, "latches side by side in the noise run (decisions per input)")
    gamma: float = param(1.0, "", 0.1, 5.0, "channel thermal-noise factor of the input pair")
    overdrives: tuple[float, ...] = param((0.5e-3, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3), "V",
                                          1e-6, 1.0, "overdrives of the delay run")
    seed: int = param(1, "", 0, 2**31 - 1, "seed of the mismatch draws")
    a_vt: float = param(3.5e-3, "V*um", 0.0, 0.1, "Pelgrom threshold-mismatch coefficient")

    def check_given(self, given):
        if "per_task" in given and 0 < self.mc_samples < self.per_task:
            raise ParameterError("per_task", self.per_task,
                                 f"at most mc_samples ({self.mc_samples}): latches per task out of all samples")


def _decisions(sim, p: ComparatorParams, n_inst: int, cycles: int):
    names = ["time"] + [f"outp_{k}" for k in range(n_inst)] + [f"outn_{k}" for k in range(n_inst)]
    vec = sim.vectors(names)
    tt = p.decision_times(cycles)
    return np.array([np.interp(tt, vec["time"], vec[f"outp_{k}"]) - np.interp(tt, vec["time"], vec[f"outn_{k}"])
                     for k in range(n_inst)]) > 0, vec


def _tran(sim, p, cycles):
    sim.command(f"tran {p.t_edge / 4:.6g} {cycles * p.t_clk:.6g} 0 {p.t_edge / 2:.6g}")


PROBE_DVT = 5e-3  # V: threshold shift of the sensitivity probes


def _bisect(sim, p, lo, hi, iterations):
    """Each latch's offset within [lo, hi] by bisection: set each latch's differential input to
    the interval's middle, simulate one decision, keep the half the decision points to.
    Returns the final (lo, hi) and whether any decision went each way."""
    n = lo.size
    lo, hi = lo.copy(), hi.copy()
    saw_keep, saw_prune = np.zeros(n, bool), np.zeros(n, bool)
    t_read = T_RISE + T_EVAL - p.t_edge
    names = [f"outp_{k}" for k in range(n)] + [f"outn_{k}" for k in range(n)]
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        for k in range(n):
            sim.command(f"alter vinp_{k} dc={p.v_cm + mid[k] / 2:.9g}")
            sim.command(f"alter vinn_{k} dc={p.v_cm - mid[k] / 2:.9g}")
        sim.command(f"tran {p.t_edge / 4:.6g} {T_RISE + T_EVAL:.6g} 0 {p.t_edge / 2:.6g} uic")
        vec = sim.vectors(["time"] + names)
        keep = np.array([np.interp(t_read, vec["time"], vec[f"outp_{k}"] - vec[f"outn_{k}"]) for k in range(n)]) > 0
        hi = np.where(keep, mid, hi)  # keeps at mid: the offset is below mid
        lo = np.where(keep, lo, mid)
        saw_keep |= keep
        saw_prune |= ~keep
    return lo, hi, saw_keep, saw_prune


_SENS: dict = {}


def _sensitivities(sim, p, a):
    """Offset of the nominal latch and its slope to each device's threshold shift, by bisection
    on probe latches (nominal + one +PROBE_DVT shift per device) at 16x the sweep's resolution.
    Cached per process, keyed on all it depends on (circuit, options, range, iterations)."""
    key = json.dumps([a["params"], a.get("options", {}), a["dv_range"], a["iterations"]], sort_keys=True)
    if key not in _SENS:
        draws = np.vstack([np.zeros(len(DEVICES)), PROBE_DVT * np.eye(len(DEVICES))])
        r = a["dv_range"]
        lo, hi, *_ = _run_offsets(sim, p, a, draws, np.full(len(draws), -r), np.full(len(draws), r),
                                  a["iterations"] + 4, "comparator offset sensitivity probes")
        off = 0.5 * (lo + hi)
        _SENS[key] = (off[0], (off[1:] - off[0]) / PROBE_DVT)
    return _SENS[key]


def _options(sim, a):
    for name, value in a.get("options", {}).items():
        sim.command(f"option {name}={value}")


def _run_offsets(sim, p, a, draws, lo, hi, iterations, title=None):
    """Load the latches of ``draws`` (with the task's simulator options) and bisect their offsets."""
    sim.load(p.decision_netlist(draws, title or f"{p.name} decision MC"))
    _options(sim, a)
    return _bisect(sim, p, lo, hi, iterations)


@worker
def comparator_offsets(sim, task):
    """Input-referred offset of every Monte Carlo latch by bisection over single decisions.

    Guided (default): a latch's offset is first predicted from its threshold shifts with the
    slopes measured on probe latches (linear, residual ~2% of the offset spread), and bisected
    within +-dv_range / 2^guide_shift of that prediction, reaching the full search's resolution
    in guide_shift fewer decisions. A latch whose decisions never changed direction may lie
    outside that window and is measured again over the full +-dv_range."""
    a = task.args
    p = ComparatorParams.from_dict(a["params"])
    draws = np.asarray(a["draws"], float)
    n, r, it = len(draws), a["dv_range"], a["iterations"]
    st = np.zeros(n, np.int8)
    refit = np.zeros(n, bool)
    off0, sens = np.nan, np.full(len(DEVICES), np.nan)
    linear = np.full(n, np.nan)
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    try:
        off0, sens = _sensitivities(sim, p, a)
        linear = off0 + draws @ sens  # predicted offsets (stored: control variates for the fit)
        shift = a.get("guide_shift", 0)
        if 0 < shift < it:
            w = r * 2.0 ** -shift
            pred = np.clip(linear, -r, r)
            lo, hi, saw_keep, saw_prune = _run_offsets(sim, p, a, draws, pred - w, pred + w, it - shift)
            refit = ~(saw_keep & saw_prune)
        else:
            lo, hi, refit = np.full(n, -r), np.full(n, r), np.ones(n, bool)
        if refit.any():
            idx = np.nonzero(refit)[0]
            lo2, hi2, *_ = _run_offsets(sim, p, a, draws[idx], np.full(idx.size, -r), np.full(idx.size, r), it)
            lo[idx], hi[idx] = lo2, hi2
    except SimulationFailed:
        st[:] = NO_CONVERGENCE
    off = 0.5 * (lo + hi)
    off[st != 0] = np.nan
    # an offset pinned at the range edge is outside the searched range
    edge = (np.abs(off) > r * (1 - 2.0 ** (1 - it)))
    st[edge & (st == 0)] = OUT_OF_RANGE
    return {"offset": off, "status": st, "full_search": refit, "linear": linear, "sens": sens,
            "off0": np.asarray(off0)}


@worker
def comparator_offsets_pdk(sim, task):
    """Offsets of latches whose mismatch the PDK's models draw (no per-device shifts to predict
    from): plain bisection of every latch over +-dv_range, ``iterations`` decisions each, all
    latches of the netlist side by side (``alter`` of the input sources keeps the draws)."""
    a = task.args
    p = ComparatorParams.from_dict(a["params"])
    n, r, it = a["n"], a["dv_range"], a["iterations"]
    st = np.zeros(n, np.int8)
    sim.load(task.netlist)
    _options(sim, a)
    try:
        lo, hi, *_ = _bisect(sim, p, np.full(n, -r), np.full(n, r), it)
        off = 0.5 * (lo + hi)
    except SimulationFailed:
        off = np.full(n, np.nan)
        st[:] = NO_CONVERGENCE
    edge = (np.abs(off) > r * (1 - 2.0 ** (1 - it)))
    st[edge & (st == 0)] = OUT_OF_RANGE
    return {"offset": off, "status": st}


@worker
def comparator_noise(sim, task):
    """Input-pair gm from an operating point at the start of evaluation, then a transient with
    the pair's channel noise (4kT gamma / gm per device, referred to the input) as a seeded
    white-noise source in series with each latch's input."""
    a = task.args
    p = ComparatorParams.from_dict(a["params"])
    sim.load(task.netlist)  # the input pair's operating point
    _options(sim, a)
    sim.command("op")
    sim.command(f"let gm_in = {p.input_gm_vector()}")
    gm = float(sim.vectors(["gm_in"])["gm_in"][0])
    kt = K_BOLTZMANN * (p.temperature + 273.15)
    density = 2 * 4 * kt * a["gamma"] / gm  # V^2/Hz, both devices referred to the input
    dt = 2 * p.t_edge  # noise bandwidth 1/(2 dt) = 12.5 GHz at 20 ps edges: well above the latch's
    sigma = math.sqrt(density / (2 * dt))
    cycles, n = a["cycles"], a["n_inst"]
    sim.load(p.noise_netlist(a["dv"], n, sigma, dt, a["seed"]))
    _options(sim, a)
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
    _options(sim, a)
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

    proc = p.technology.as_process()
    if want("decision") and s.mc_samples > 0 and not proc.mismatch.explicit_shifts:
        # the PDK's mismatch models draw per instance: no shifts to predict offsets from, so every
        # latch is bisected over the full range (the built-in card's guided search needs shifts)
        dv = np.linspace(-s.dv_range, s.dv_range, s.dv_steps)
        tasks, seeds = [], []
        for i, k0 in enumerate(range(0, s.mc_samples, s.per_task)):
            n = min(s.per_task, s.mc_samples - k0)
            seeds.append((s.seed * 100003 + i + 1) % (2**31 - 1))
            net = p.decision_netlist_pdk(n, seeds[-1], f"{p.name} decision MC (PDK mismatch, seed {seeds[-1]})")
            tasks.append(make_task(FAMILY, "decision", i, mod + ":comparator_offsets_pdk", net, md,
                                   params=p.to_dict(), n=n, dv_range=s.dv_range, iterations=s.iterations,
                                   options=opts))

        def merge_dec_pdk(res):
            off = np.concatenate([r["offset"] for r in res])
            ok = np.isfinite(off)
            pk = (dv[None, :] > off[ok][:, None]).mean(axis=0)
            return {"dv": Dataset(dv, "V", "differential input (inp - inn)"),
                    "p_keep": Dataset(pk, "", "fraction of samples deciding keep at dv"),
                    "offset": Dataset(off, "V", "input-referred offset of each sample (bisection)"),
                    "offset_mean": Dataset(np.asarray(float(np.mean(off[ok]))), "V", "mean offset"),
                    "offset_sigma": Dataset(np.asarray(float(np.std(off[ok]))), "V",
                                            "standard deviation of the offsets (mismatch)"),
                    "seeds": Dataset(np.asarray(seeds), "", "ngspice seed (.option seed) of each task's netlist"),
                    "status": Dataset(np.concatenate([r["status"] for r in res]), "", "")}
        out.append(Analysis(FAMILY, "decision", tasks, merge_dec_pdk, pj,
                            method=f"side-by-side latches with the process's own mismatch models ({proc.name}: "
                                   "every instance an independent draw, .option seed per task), each evaluating "
                                   "once from the reset state; offset of each by plain bisection over +-dv_range "
                                   "(iterations decisions); status 3 = offset outside +-dv_range",
                            attrs={"seed": s.seed, "iterations": s.iterations, "mismatch": proc.mismatch.name,
                                   "task_seeds": np.asarray(seeds)}))
    elif want("decision") and s.mc_samples > 0:
        dv = np.linspace(-s.dv_range, s.dv_range, s.dv_steps)
        rng = np.random.default_rng(s.seed)
        areas = p.areas_um2()
        sig = np.array([s.a_vt / math.sqrt(areas[d]) for d in DEVICES])
        draws = rng.standard_normal((s.mc_samples, len(DEVICES))) * sig
        tasks = []
        for i, k0 in enumerate(range(0, s.mc_samples, s.per_task)):
            chunk = draws[k0:k0 + s.per_task]
            net = p.decision_netlist(chunk, f"{p.name} decision MC")
            tasks.append(make_task(FAMILY, "decision", i, mod + ":comparator_offsets", net, md,
                                   params=p.to_dict(), draws=chunk.tolist(), dv_range=s.dv_range,
                                   iterations=s.iterations, guide_shift=s.guide_shift, options=opts))

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
                    "offset_linear": Dataset(np.concatenate([r["linear"] for r in res]), "V",
                                             "offset predicted from the threshold shifts with the probe slopes"),
                    "sensitivity": Dataset(res[0]["sens"], "V/V", f"d offset / d Vt of {', '.join(DEVICES)} "
                                           "(probe latches, +5 mV each)"),
                    "offset_nominal": Dataset(res[0]["off0"], "V", "offset of the latch without mismatch"),
                    "dvt_sigma": Dataset(sig, "V", f"Pelgrom sigma of the threshold shift of {', '.join(DEVICES)}"),
                    "full_search": Dataset(np.concatenate([r["full_search"] for r in res]), "",
                                           "offset measured by the full-range search (not guided)"),
                    "status": Dataset(np.concatenate([r["status"] for r in res]), "", "")}
        out.append(Analysis(FAMILY, "decision", tasks, merge_dec, pj,
                            method="side-by-side latches with Pelgrom delvto per device, each evaluating once from the "
                                   "reset state; offset of each by bisection over single decisions, guided by the "
                                   "offset predicted from probe-measured slopes (window +-dv_range/2^guide_shift, "
                                   "full range where the decisions never changed direction); status 3 = offset "
                                   "outside +-dv_range",
                            attrs={"seed": s.seed, "iterations": s.iterations, "guide_shift": s.guide_shift}))

    if want("noise"):
        dvn = np.asarray(s.noise_dv)
        # the noise netlist needs the input pair's gm: the worker measures it on this operating
        # point, then simulates p.noise_netlist(...) (all its inputs are in the task's arguments)
        net = p.input_pair_op_netlist()
        t = make_task(FAMILY, "noise", 0, mod + ":comparator_noise", net, md, params=p.to_dict(),
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
        net = p.delay_energy_netlist(od)
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


def check_design(p: ComparatorParams, s: ComparatorSweep, given: set, given_sweep: set) -> None:
    """Rules across [comparator] and [comparator.sweep]: inputs within the rails at the largest
    swept dv; a clock edge shorter than the decision's read time."""
    swing = max([s.dv_range] + [abs(v) for v in s.noise_dv] + list(s.overdrives))
    if p.v_cm - swing / 2 < 0 or p.v_cm + swing / 2 > p.vdd:
        raise ParameterError("comparator.v_cm", p.v_cm,
                             f"{swing / 2:g} to comparator.vdd - {swing / 2:g} V: the inputs v_cm +- dv/2 "
                             f"(largest dv {swing:g} V of sweep.dv_range, noise_dv, overdrives) must stay "
                             f"within 0 to vdd ({p.vdd:g} V)")
    if p.t_edge >= T_EVAL / 2:
        raise ParameterError("comparator.t_edge", p.t_edge,
                             f"below {T_EVAL / 2:g} s: a decision is read {T_EVAL:g} s after the clock edge "
                             "starts, less one edge")


_DELAY_ENERGY = (__name__ + ":comparator_delay_energy",)
FAMILY_SPEC = families.register(families.Family(
    name=FAMILY, params=ComparatorParams, sweep=ComparatorSweep, build=analyses, check_design=check_design,
    analyses=(
        families.AnalysisSpec("decision", (__name__ + ":comparator_offsets", __name__ + ":comparator_offsets_pdk"), 5,
                              "Monte Carlo offsets by bisection over single decisions"),
        families.AnalysisSpec("noise", (__name__ + ":comparator_noise",), 1, "decisions with input-pair noise"),
        families.AnalysisSpec("delay", _DELAY_ENERGY, 1, "delay versus overdrive"),
        families.AnalysisSpec("energy", _DELAY_ENERGY, 1, "energy per decision"),
    ),
    fit="analogattn.surrogates.fit:COMPARATOR_FIT", plot="analogattn.surrogates.plots:plot_comparator",
    cost_terms=(families.CostTerm("comparator.energy", "J", "energy per decision"),
                families.CostTerm("comparator.delay", "s", "decision delay versus overdrive")),
    doc="clocked StrongARM latch (circuits/comparator.py)"))
ANALYSES = FAMILY_SPEC.analysis_names
