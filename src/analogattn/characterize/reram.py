"""ReRAM column analyses: cell I-V, IR drop, ground-truth patterns, G-variation Monte Carlo,
energy/time and read noise of one evaluation."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..circuits.reram import ReramColumnParams
from ..errors import ParameterError
from ..params import Validated, param
from . import families
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, Analysis, Dataset, make_task, worker

FAMILY = "reram"


@dataclasses.dataclass(frozen=True)
class ReramSweep(Validated):
    n_iv: int = param(41, "", 3, 1000, "points of each cell I-V over 0..v_read")
    ir_positions: tuple[int, ...] = param((0, 1, 3, 7, 15, 31, 47, 63), "", 0, 1023,
                                          "row positions of the single active cell")
    ir_counts: tuple[int, ...] = param((1, 2, 4, 8, 16, 32, 48, 64), "", 1, 1024, "numbers of active rows")
    ir_levels: tuple[int, ...] = param((3, 7, 11, 15), "", 0, 255, "conductance levels for IR drop")
    n_patterns: int = param(500, "", 1, 100000, "random (query, key) ground-truth patterns")
    held_out: float = param(0.2, "", 0.0, 0.9, "fraction of patterns flagged as held out")
    per_task: int = param(50, "", 1, 10000, "columns per simulation task")
    seed: int = param(1, "", 0, 2**31 - 1, "seed of patterns and variation draws")
    mc_patterns: int = param(8, "", 0, 10000, "fixed patterns of the G-variation Monte Carlo")
    mc_samples: int = param(32, "", 0, 100000, "variation samples per pattern")
    noise_dt: float = param(0.1e-9, "s", 1e-12, 1e-8, "sample interval of thermal-noise sources")


def _ids(n, tag="c"):
    return [f"out{tag}{k}" for k in range(n)]


def _op_columns(sim, task):
    a = task.args
    sim.load(task.netlist)
    for name, value in a.get("options", {}).items():
        sim.command(f"option {name}={value}")
    n = a["n_columns"]
    try:
        sim.command("op")
        vec = sim.vectors(_ids(n))
        v = np.array([vec[f"outc{k}"][0] for k in range(n)])
        st = np.zeros(n, np.int8)
    except SimulationFailed:
        v = np.full(n, np.nan)
        st = np.full(n, NO_CONVERGENCE, np.int8)
    return {"v_out": v, "current": -v / a["r_f"] * (1 + 1 / a["a_ol"]), "status": st}


@worker
def reram_columns(sim, task):
    return _op_columns(sim, task)


@worker
def reram_cell_iv(sim, task):
    a = task.args
    sim.load(task.netlist)
    v = np.linspace(0, a["v_read"], a["n"])
    step = v[1] - v[0]
    sim.command(f"dc vsw 0 {a['v_read'] + step * 1e-3:.10g} {step:.10g}")
    vec = sim.vectors([f"vam{k}#branch" for k in range(a["levels"])])
    cur = np.array([vec[f"vam{k}#branch"][: a["n"]] for k in range(a["levels"])])
    return {"v": v, "current": cur, "status": np.zeros(cur.shape, np.int8)}


@worker
def reram_transient(sim, task):
    """One column: DAC pulse of t_read. Energy from the DAC and select sources; settling time of
    the TIA output to 1% of its final value; with thermal-noise sources, the output's rms."""
    a = task.args
    sim.load(task.netlist)
    t_on, t_off, stop = a["t_on"], a["t_off"], a["stop"]
    try:
        sim.command(f"tran {a['tstep']:.6g} {stop:.6g} 0 {a['tmax']:.6g}")
    except SimulationFailed:
        return {"status": np.array([NO_CONVERGENCE], np.int8), "energy": np.array(np.nan),
                "settle": np.array(np.nan), "noise_rms": np.array(np.nan), "v_final": np.array(np.nan)}
    rows = a["rows"]
    names = ["time", "outc0"] + [f"dc0_{i}" for i in range(rows)] + [f"vdc0_{i}#branch" for i in range(rows)]
    vec = sim.vectors(names)
    t = vec["time"]
    e = 0.0
    for i in range(rows):
        e += -np.trapezoid(vec[f"dc0_{i}"] * vec[f"vdc0_{i}#branch"], t)
    out = vec["outc0"]
    flat = (t > t_on + 0.5 * (t_off - t_on)) & (t < t_off - a["t_edge"])
    v_final = float(np.mean(out[flat]))
    err = np.abs(out - v_final) > 0.01 * abs(v_final)
    inside = (t >= t_on) & (t <= t_off - a["t_edge"])
    late = np.nonzero(err & inside)[0]
    settle = float(t[late[-1]] - t_on) if late.size else 0.0
    noise = float(np.std(out[flat]))
    return {"status": np.array([0], np.int8), "energy": np.array(e), "settle": np.array(settle),
            "noise_rms": np.array(noise), "v_final": np.array(v_final)}


def analyses(p: ReramColumnParams, s: ReramSweep, only=None, sim_options=None) -> list[Analysis]:
    md = p.technology.digest()
    opts = dict(sim_options or {})
    pj = json.dumps({"circuit": p.to_dict(), "sweep": s.to_dict(), "simulator_options": opts}, sort_keys=True)
    g_levels, v_levels = p.conductances(), p.input_voltages()
    out = []
    mod = __name__

    def want(n):
        return only is None or n in only

    pdk_mismatch = not p.technology.as_process().mismatch.explicit_shifts

    def column_tasks(name, inputs, conds, seeds=None):
        tasks = []
        for i, k0 in enumerate(range(0, len(inputs), s.per_task)):
            vi, gi = inputs[k0:k0 + s.per_task], conds[k0:k0 + s.per_task]
            seed = None
            if seeds is not None:
                seed = (seeds * 100003 + i + 1) % (2**31 - 1)
            tasks.append(make_task(FAMILY, name, i, mod + ":reram_columns",
                                   p.columns_netlist(name, vi, gi, seed=seed), md,
                                   n_columns=len(vi), r_f=p.r_f, a_ol=p.a_ol, options=opts))
        return tasks

    def cat(res, k):
        return np.concatenate([r[k] for r in res])

    if want("cell_iv"):
        t = make_task(FAMILY, "cell_iv", 0, mod + ":reram_cell_iv", p.cell_iv_netlist(), md, v_read=p.v_read,
                      n=s.n_iv, levels=p.levels, options=opts)
        out.append(Analysis(FAMILY, "cell_iv", [t], lambda res: {
            "v": Dataset(res[0]["v"], "V", "voltage applied across access device + cell"),
            "current": Dataset(res[0]["current"], "A", "[level, v]"),
            "g": Dataset(g_levels, "S", "programmed conductance of each level"),
            "status": Dataset(res[0]["status"], "", "")}, pj, method="DC sweep, one cell per level"))

    if want("ir_drop"):
        rows = p.rows
        pos = [r for r in s.ir_positions if r < rows]
        cnt = [c for c in s.ir_counts if c <= rows]
        lv = [l for l in s.ir_levels if l < p.levels]
        inputs, conds = [], []
        for l in lv:
            for r in pos:
                v = np.zeros(rows)
                v[r] = p.v_read
                inputs.append(v)
                conds.append(np.full(rows, g_levels[l]))
            for c in cnt:
                v = np.zeros(rows)
                v[:c] = p.v_read
                inputs.append(v)
                conds.append(np.full(rows, g_levels[l]))
        tasks = column_tasks("ir_drop", np.array(inputs), np.array(conds))

        def merge_ir(res):
            cur = cat(res, "current").reshape(len(lv), len(pos) + len(cnt))
            ideal_one = np.array([p.v_read * g_levels[l] for l in lv])
            return {"levels": Dataset(np.array(lv), "", "conductance level indices"),
                    "positions": Dataset(np.array(pos), "", "row of the single active cell (0 = next to the sense stage)"),
                    "counts": Dataset(np.array(cnt), "", "active rows (rows 0..n-1)"),
                    "current_vs_position": Dataset(cur[:, :len(pos)], "A", "[level, position]"),
                    "current_vs_count": Dataset(cur[:, len(pos):], "A", "[level, count]"),
                    "ideal_single": Dataset(ideal_one, "A", "G * v_read per level"),
                    "status": Dataset(cat(res, "status"), "", "")}
        out.append(Analysis(FAMILY, "ir_drop", tasks, merge_ir, pj,
                            method="DC operating point, one column per case, all cells at the level"))

    if want("patterns"):
        rng = np.random.default_rng(s.seed)
        q = rng.integers(0, p.input_levels, (s.n_patterns, p.rows))
        k = rng.integers(0, p.levels, (s.n_patterns, p.rows))
        held = rng.random(s.n_patterns) < s.held_out
        V, G = v_levels[q], g_levels[k]
        tasks = column_tasks("patterns", V, G)
        out.append(Analysis(FAMILY, "patterns", tasks, lambda res, q=q, k=k, V=V, G=G, held=held: {
            "q_levels": Dataset(q, "", "DAC level per row"), "k_levels": Dataset(k, "", "conductance level per row"),
            "v_in": Dataset(V, "V", ""), "g": Dataset(G, "S", ""),
            "current": Dataset(cat(res, "current"), "A", "column current into the sense stage"),
            "v_out": Dataset(cat(res, "v_out"), "V", "TIA output (-R_f I)"),
            "ideal": Dataset((V * G).sum(axis=1), "A", "ideal dot product sum G V"),
            "held_out": Dataset(held, "", "True: not for fitting, for validation"),
            "status": Dataset(cat(res, "status"), "", "")}, pj,
            method="DC operating point of the full column (nominal G), random uniform levels",
            attrs={"seed": s.seed}))

    if want("reference") and s.n_patterns:
        from .reram_reference import analysis as reference_analysis
        out.append(reference_analysis(p, s, opts, pj, md, mod + ":reram_columns"))

    if want("monte_carlo") and s.mc_patterns and s.mc_samples:
        rng = np.random.default_rng(s.seed + 1)
        q = rng.integers(0, p.input_levels, (s.mc_patterns, p.rows))
        k = rng.integers(0, p.levels, (s.mc_patterns, p.rows))
        V = np.repeat(v_levels[q], s.mc_samples, axis=0)
        G0 = np.repeat(g_levels[k], s.mc_samples, axis=0)
        G = G0 * np.exp(p.sigma_g * rng.standard_normal(G0.shape))  # lognormal variation
        # a PDK with its own mismatch models: the access transistors draw theirs too (every
        # instance independently, seeded per task); the built-in card: G variation only
        tasks = column_tasks("monte_carlo", V, G, seeds=s.seed + 1 if pdk_mismatch else None)

        def merge_mc(res, q=q, k=k):
            cur = cat(res, "current").reshape(s.mc_patterns, s.mc_samples)
            return {"q_levels": Dataset(q, "", ""), "k_levels": Dataset(k, "", ""),
                    "current": Dataset(cur, "A", "[pattern, sample]"),
                    "mean": Dataset(cur.mean(axis=1), "A", ""), "std": Dataset(cur.std(axis=1), "A", ""),
                    "status": Dataset(cat(res, "status"), "", "")}
        out.append(Analysis(FAMILY, "monte_carlo", tasks, merge_mc, pj,
                            method="G drawn lognormal(sigma_g) per cell and sample; DC operating point"
                                   + ("; access transistors with the process's own mismatch models (every "
                                      "instance an independent draw, .option seed per task)" if pdk_mismatch else ""),
                            attrs={"sigma_g": p.sigma_g, "seed": s.seed + 1,
                                   "access_mismatch": "pdk" if pdk_mismatch else "none"}))

    if want("transient"):
        rng = np.random.default_rng(s.seed + 2)
        V = v_levels[rng.integers(0, p.input_levels, p.rows)]
        G = g_levels[rng.integers(0, p.levels, p.rows)]
        e = p.t_edge
        t_on, t_off = 1e-9, 1e-9 + e + p.t_read
        stop = t_off + e + 1e-9
        tasks = []
        for i, noise in enumerate((0.0, s.noise_dt)):
            net = p.transient_netlist(V, G, t_on, t_off, stop, noise_dt=noise, seed=s.seed + 3)
            tasks.append(make_task(FAMILY, "transient", i, mod + ":reram_transient", net, md, rows=p.rows,
                                   t_on=t_on, t_off=t_off, stop=stop, t_edge=e, tstep=e / 5,
                                   tmax=(noise or e) , options=opts))

        def merge_tr(res):
            clean, noisy = res
            return {"energy": Dataset(np.asarray(clean["energy"]), "J", "energy from the DAC drivers per evaluation"),
                    "settle_time": Dataset(np.asarray(clean["settle"]), "s", "TIA output within 1% after the DAC edge"),
                    "eval_time": Dataset(np.asarray(p.t_read), "s", "read pulse width (time per column evaluation)"),
                    "v_final": Dataset(np.asarray(clean["v_final"]), "V", ""),
                    "noise_rms": Dataset(np.asarray(noisy["noise_rms"]), "V", "TIA output rms with thermal noise"),
                    "noise_rms_clean": Dataset(np.asarray(clean["noise_rms"]), "V", "same without noise sources"),
                    "noise_rel": Dataset(np.asarray(noisy["noise_rms"] / abs(clean["v_final"])), "",
                                         "read noise relative to the output"),
                    "status": Dataset(np.concatenate([clean["status"], noisy["status"]]), "", "")}
        out.append(Analysis(FAMILY, "transient", tasks, merge_tr, pj,
                            method="transient of one random column; thermal noise of each cell as ngspice "
                                   "seeded white-noise PWL current (4kTG); TIA modelled as an ideal op-amp (its power is not counted)"))
    return out


def check_design(p: ReramColumnParams, s: ReramSweep, given: set, given_sweep: set) -> None:
    """Rules across [reram] and [reram.sweep]: sweep lists the user wrote within the array."""
    for field, limit, what in (("ir_positions", p.rows - 1, f"0 to reram.rows - 1 ({p.rows - 1})"),
                               ("ir_counts", p.rows, f"1 to reram.rows ({p.rows})"),
                               ("ir_levels", p.levels - 1, f"0 to reram.levels - 1 ({p.levels - 1})")):
        if field in given_sweep:
            for i, v in enumerate(getattr(s, field)):
                if v > limit:
                    raise ParameterError(f"reram.sweep.{field}[{i}]", v, what)
    if not any(lv < p.levels for lv in s.ir_levels):
        raise ParameterError("reram.sweep.ir_levels", list(s.ir_levels),
                             f"at least one level below reram.levels ({p.levels})")


_COLUMNS = (__name__ + ":reram_columns",)
FAMILY_SPEC = families.register(families.Family(
    name=FAMILY, params=ReramColumnParams, sweep=ReramSweep, build=analyses, check_design=check_design,
    analyses=(
        families.AnalysisSpec("cell_iv", (__name__ + ":reram_cell_iv",), 1, "I-V of one cell per level"),
        families.AnalysisSpec("ir_drop", _COLUMNS, 3, "single active cell vs position, active rows"),
        families.AnalysisSpec("patterns", _COLUMNS, 3, "random query/key patterns through the column"),
        families.AnalysisSpec("reference", _COLUMNS, 3, "held-out queries through a reference-level column"),
        families.AnalysisSpec("monte_carlo", _COLUMNS, 3, "lognormal conductance variation"),
        families.AnalysisSpec("transient", (__name__ + ":reram_transient",), 1, "energy, settling, read noise"),
    ),
    fit="analogattn.surrogates.fit:RERAM_FIT", plot="analogattn.surrogates.plots:plot_reram",
    cost_terms=(families.CostTerm("reram.energy", "J", "energy per column evaluation"),
                families.CostTerm("reram.time", "s", "time per column evaluation")),
    doc="1T1R ReRAM column into a virtual-ground TIA (circuits/reram.py)"))
ANALYSES = FAMILY_SPEC.analysis_names
