"""Gain-cell ``write_mismatch`` analysis: Monte Carlo of the write path.

Each sample draws the write transistor's threshold shift (Pelgrom, sigma = a_vt / sqrt(W L) of the
write transistor, the sweep's a_vt) and every sample writes the same voltages (``WRITE_POINTS``
over 0..vdd) in one transient (circuits/gaincell_write_mc.py); the stored voltage 5 ns after the
write word line falls holds the transistor's drive and its charge injection and feedthrough. The
spread over samples at each written voltage is the per-cell write deviation the kernel's mismatch
draws. Sample 0 is the nominal cell (no shift).

Processes whose models draw their own mismatch (SKY130: ``mc_mm_switch``, no per-device shifts):
``mc_samples`` cells per written voltage, ``SAMPLES_PER_TASK`` samples per netlist, every
instance an independent draw of the PDK's statistical models with the task's ``.option seed``
(``task_seed(mc_seed + 7, task)``, stored in ``seeds``); sample 0 comes from a netlist with the
mismatch switched off (the nominal cell). What varies is then whatever the PDK's mismatch models
vary (for SKY130's thick-oxide PMOS: toxe, voff, nfactor; its vth0 slope is 0), not a Pelgrom
threshold shift we choose.
"""
from __future__ import annotations

import numpy as np

from ..circuits.gaincell_write_mc import write_mc_netlist
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, Analysis, Dataset, make_task, worker

FAMILY = "gaincell"
WRITE_POINTS = 10
SAMPLES_PER_TASK = 25


@worker
def gaincell_write_mc(sim, task):
    a = task.args
    sim.load(task.netlist)
    for name, value in a.get("options", {}).items():
        sim.command(f"option {name}={value}")
    ns, nv = a["n_samples"], a["n_written"]
    try:
        sim.command(f"tran {a['tstep']:.6g} {a['stop']:.6g} 0 {a['tmax']:.6g}")
        names = [f"sn{s}_{j}" for s in range(ns) for j in range(nv)]
        vec = sim.vectors(["time"] + names)
        v = np.array([np.interp(a["sample"], vec["time"], vec[n]) for n in names]).reshape(ns, nv)
        st = np.zeros(ns, np.int8)
    except SimulationFailed:
        v = np.full((ns, nv), np.nan)
        st = np.full(ns, NO_CONVERGENCE, np.int8)
    return {"v_stored": v, "status": st}


def analysis(p, s, opts: dict, pj: str, md: str):
    proc = p.technology.as_process()
    if s.mc_samples < 2:
        return None
    if not proc.mismatch.explicit_shifts:
        return _analysis_pdk(p, s, opts, pj, md, proc)
    vw = np.linspace(0.0, p.vdd, WRITE_POINTS).round(9)
    rng = np.random.default_rng(s.mc_seed + 7)
    sig = s.a_vt / np.sqrt(p.w_write * p.l_write)
    dvt = np.concatenate([[0.0], rng.standard_normal(s.mc_samples) * sig]).round(12)
    tm = p.write_read_times()
    tasks = []
    for i, k0 in enumerate(range(0, dvt.size, SAMPLES_PER_TASK)):
        chunk = dvt[k0:k0 + SAMPLES_PER_TASK]
        tasks.append(make_task(FAMILY, "write_mismatch", i, __name__ + ":gaincell_write_mc",
                               write_mc_netlist(p, vw.tolist(), chunk.tolist()), md, n_samples=int(chunk.size),
                               n_written=int(vw.size), sample=tm["sample"], stop=tm["sample"] + 1e-10,
                               tstep=p.t_edge / 5, tmax=p.t_edge / 2, options=opts))

    def merge(res):
        v = np.concatenate([r["v_stored"] for r in res])
        mc = v[1:]
        return {"v_written": Dataset(vw, "V", "bit-line voltage written"),
                "v_stored": Dataset(v, "V", "[sample, written voltage]; sample 0 nominal"),
                "dvt": Dataset(dvt, "V", "write transistor threshold shift per sample (0: nominal)"),
                "v_nominal": Dataset(v[0], "V", "stored voltage of the nominal cell"),
                "sigma": Dataset(np.nanstd(mc, axis=0), "V", "spread of the stored voltage over samples"),
                "sigma_vt": Dataset(np.asarray(sig), "V", "Pelgrom sigma of the write transistor"),
                "status": Dataset(np.concatenate([r["status"] for r in res]), "", "")}
    return Analysis(FAMILY, "write_mismatch", tasks, merge, pj,
                    method="transient write of every (sample, voltage) cell with the write transistor's "
                           "threshold shifted through the process's mismatch hook; V(SN) 5 ns after WWL falls",
                    attrs={"seed": s.mc_seed + 7, "a_vt_V_um": s.a_vt})


def _analysis_pdk(p, s, opts, pj, md, proc):
    """The write Monte Carlo through the process's own mismatch models (see the module doc)."""
    from .gaincell import task_seed
    vw = np.linspace(0.0, p.vdd, WRITE_POINTS).round(9)
    tm = p.write_read_times()
    base = s.mc_seed + 7
    kw = dict(n_written=int(vw.size), sample=tm["sample"], stop=tm["sample"] + 1e-10,
              tstep=p.t_edge / 5, tmax=p.t_edge / 2, options=opts)
    tasks = [make_task(FAMILY, "write_mismatch", 0, __name__ + ":gaincell_write_mc",
                       write_mc_netlist(p, vw.tolist(), [None]), md, n_samples=1, **kw)]  # nominal
    seeds = []
    for i, k0 in enumerate(range(0, s.mc_samples, SAMPLES_PER_TASK)):
        n = min(SAMPLES_PER_TASK, s.mc_samples - k0)
        seeds.append(task_seed(base, i))
        tasks.append(make_task(FAMILY, "write_mismatch", i + 1, __name__ + ":gaincell_write_mc",
                               write_mc_netlist(p, vw.tolist(), [None] * n, seed=seeds[-1]), md, n_samples=n, **kw))

    def merge(res):
        v = np.concatenate([r["v_stored"] for r in res])
        return {"v_written": Dataset(vw, "V", "bit-line voltage written"),
                "v_stored": Dataset(v, "V", "[sample, written voltage]; sample 0 nominal (mismatch off)"),
                "v_nominal": Dataset(v[0], "V", "stored voltage of the nominal cell"),
                "sigma": Dataset(np.nanstd(v[1:], axis=0), "V", "spread of the stored voltage over samples"),
                "seeds": Dataset(np.asarray(seeds), "", "ngspice seed (.option seed) of each Monte Carlo "
                                 "netlist (task 1, 2 ...; task 0 nominal)"),
                "status": Dataset(np.concatenate([r["status"] for r in res]), "", "")}
    return Analysis(FAMILY, "write_mismatch", tasks, merge, pj,
                    method=f"transient write of every (sample, voltage) cell, each instance an independent draw of "
                           f"the process's own mismatch models ({proc.name}: {proc.mismatch.name}), "
                           f"{SAMPLES_PER_TASK} samples per netlist with its own seed; nominal cell from a netlist "
                           "with the mismatch off; V(SN) 5 ns after WWL falls",
                    attrs={"seed": base, "mismatch": proc.mismatch.name, "task_seeds": np.asarray(seeds)})
