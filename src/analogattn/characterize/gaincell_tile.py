"""Gain-cell ``tile`` analysis: transient of a whole 64-row tile as the kernel reads it.

Random draws of (query, stored keys, age): per draw one query (signed pulse fractions on the
kernel's 16-level pulse grid) read against ``COLS`` key columns of ``rows`` cells that are written
with random voltages in [0.05, 0.8] vdd (``tile_write = "transistors"``, the default: driven on
the write bit lines through each cell's write transistor, so the comparison covers the write
transfer too; ``"initial"``: the storage nodes start at them as initial conditions), hold for the
draw's age
(0 .. ``MAX_AGE`` tokens of ``TOKEN_PERIOD``, the kernel's default) before the two-phase read
(circuits/gaincell_array.py: ideal op-amp integrators hold the bit lines at v_bl). Stored: each
column's charge per phase (sunk from the bit line), the storage-node voltages just before the
read and after it (read disturb: the read pulses couple into the node through the read
transistors' gate capacitance), in the written mode the stored voltage after the write
(``v_stored``, sampled where the write-transfer analysis samples it), and a ``held_out`` flag (True for every draw: nothing is fitted
to them; the fit compares the kernel's prediction through its own code path).
"""
from __future__ import annotations

import numpy as np

from ..circuits.gaincell_array import C_F, tile_netlist, tile_times
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, Analysis, Dataset, make_task, worker

FAMILY = "gaincell"
DRAWS, COLS, ROWS, LEVELS = 100, 2, 64, 16
MAX_AGE, TOKEN_PERIOD, SEED = 1024, 65e-9, 16
TMAX_READ = 0.5e-9  # largest time step (edges and pulse ends are breakpoints of the PWL sources)


@worker
def gaincell_tile(sim, task):
    a = task.args
    sim.load(task.netlist)
    for name, value in a.get("options", {}).items():
        sim.command(f"option {name}={value}")
    tm, cols, rows = a["times"], a["cols"], a["rows"]
    written = "write_end" in tm
    try:
        sim.command(f"tran {a['tstep']:.6g} {tm['stop']:.6g} 0 {a['tmax']:.6g}")
        sn = [f"sn{r}_{c}" for r in range(rows) for c in range(cols)]
        vec = sim.vectors(["time"] + [f"int{c}" for c in range(cols)] + sn)
        t = vec["time"]

        def at(name, when):
            return float(np.interp(when, t, vec[name]))
        q1 = np.array([C_F * (at(f"int{c}", tm["p1_end"]) - at(f"int{c}", tm["p1"])) for c in range(cols)])
        q2 = np.array([C_F * (at(f"int{c}", tm["p2_end"]) - at(f"int{c}", tm["p2"])) for c in range(cols)])
        before = np.array([at(n, tm["p1"]) for n in sn]).reshape(rows, cols)
        after = np.array([at(n, tm["stop"]) for n in sn]).reshape(rows, cols)
        stored = np.array([at(n, tm["write_end"]) for n in sn]).reshape(rows, cols) if written else None
        st = np.zeros(1, np.int8)
    except SimulationFailed:
        q1 = q2 = np.full(cols, np.nan)
        before = after = np.full((rows, cols), np.nan)
        stored = np.full((rows, cols), np.nan) if written else None
        st = np.full(1, NO_CONVERGENCE, np.int8)
    out = {"q1": q1, "q2": q2, "v_before": before, "v_after": after, "status": st}
    if written:
        out["v_stored"] = stored
    return out


def draws(p, n=DRAWS, seed=SEED):
    rng = np.random.default_rng(seed)
    u = rng.integers(-(LEVELS - 1), LEVELS, (n, ROWS)) / (LEVELS - 1)
    v = rng.uniform(0.05 * p.vdd, 0.8 * p.vdd, (n, ROWS, COLS))
    age = rng.integers(0, MAX_AGE + 1, n)
    age[:4] = (0, MAX_AGE, MAX_AGE // 2, 1)  # the ends of the range always in
    return u, v.round(6), age


def analysis(p, s, opts: dict, pj: str, md: str) -> Analysis:
    u, v, age = draws(p)
    t_max = p.t_read
    written = s.tile_write == "transistors"
    tasks = []
    for i in range(u.shape[0]):
        hold = float(age[i]) * TOKEN_PERIOD
        tm = tile_times(p, hold, t_max, COLS if written else 0)
        tasks.append(make_task(FAMILY, "tile", i, __name__ + ":gaincell_tile",
                               tile_netlist(p, v[i], u[i], t_max, hold, written), md,
                               times=tm, cols=COLS, rows=ROWS, tstep=p.t_edge,
                               tmax=TMAX_READ if hold <= 0 else max(TMAX_READ, min(hold / 50, 1e-6)),
                               options=opts))

    def merge(res):
        cat = lambda k: np.array([r[k] for r in res])  # noqa: E731
        vb, va = cat("v_before"), cat("v_after")
        out = {"u": Dataset(u, "", "signed pulse fraction per row (query), [draw, row]"),
               "v_written": Dataset(v, "V", "write bit-line voltage driven through each write transistor, "
                                    "[draw, row, col]" if written else
                                    "storage voltage at the start of the hold (initial condition), [draw, row, col]"),
               "through_write_transistor": Dataset(np.asarray(int(written)), "",
                                                   "1: cells written through their write transistors, "
                                                   "0: storage nodes set as initial conditions"),
               "age_tokens": Dataset(age, "", "tokens between write and read"),
               "token_period": Dataset(np.asarray(TOKEN_PERIOD), "s", ""),
               "t_max": Dataset(np.asarray(t_max), "s", "pulse width of a full query element"),
               "q_phase1": Dataset(cat("q1"), "C", "charge sunk per column, positive pulses [draw, col]"),
               "q_phase2": Dataset(cat("q2"), "C", "charge sunk per column, negative-element pulses"),
               "charge": Dataset(cat("q1") - cat("q2"), "C", "signed column charge (phase 1 - phase 2)"),
               "v_before": Dataset(vb, "V", "storage voltage just before the read"),
               "v_after": Dataset(va, "V", "storage voltage after the read"),
               "held_out": Dataset(np.ones(u.shape[0], bool), "", "True: not used for fitting"),
               "status": Dataset(cat("status").ravel(), "", "")}
        if written:
            out["v_stored"] = Dataset(cat("v_stored"), "V", "storage voltage 5 ns after the last write word line "
                                      "falls (the write-transfer sampling point), [draw, row, col]")
        return out
    how = ("cells written through their write transistors (write bit line per row, word line per column, "
           "columns written one after another)" if written else "cells set as initial conditions")
    return Analysis(FAMILY, "tile", tasks, merge, pj,
                    method=f"transient of {ROWS} rows x {COLS} key columns: {how}, "
                           "hold of the draw's age, two-phase pulse-width read, bit lines on ideal op-amp "
                           "integrators (VCVS, C_f)", attrs={"seed": SEED, "draws": DRAWS, "tile_write": s.tile_write})
