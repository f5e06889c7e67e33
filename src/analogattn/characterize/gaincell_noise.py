"""Gain-cell ``read_noise`` analysis: ngspice ``.noise`` of the read stack over stored voltage and
read amplitude, integrated over the read's bandwidth.

A read integrates the bit-line current over the pulse width T (the charge-to-pulse front end), so
the read's noise charge is sigma_Q^2 = int S_I(f) |H(f)|^2 df with |H(f)|^2 = (sin(pi f T) /
(pi f))^2, the integrator's transfer, S_I the one-sided current noise density from ``.noise``
(channel thermal and flicker noise of the read PMOS and NMOS at their operating point), f from
``f_low`` = 1 Hz (flicker below it is a slow drift, not read noise) to 100 GHz. Stored per
(V_store, V_in) on the Monte Carlo grid (``mc_store`` x ``mc_in`` of the sweep), with the white
level (the density at 1/T) and the charge of the same read for scale.
"""
from __future__ import annotations

import numpy as np

from ..circuits.gaincell_noise import read_noise_netlist
from .engine import SimulationFailed
from .tasks import NO_CONVERGENCE, Analysis, Dataset, make_task, worker

FAMILY = "gaincell"
F_LOW, F_HIGH, PER_DECADE = 1.0, 1e11, 20


def _vec(sim, name):
    from PySpice.Spice.NgSpice.Shared import ffi
    info = sim.ng._ngspice_shared.ngGet_Vec_Info(name.encode())
    if info == ffi.NULL:
        raise SimulationFailed(f"no vector {name}")
    return np.frombuffer(ffi.buffer(info.v_realdata, info.v_length * 8), dtype=np.float64).copy()


def integrated_charge_var(f, s_i, t):
    """sigma_Q^2 (C^2) of the current noise density s_i (A^2/Hz, one-sided, over f) integrated
    over a window of t seconds."""
    h2 = (np.sin(np.pi * f * t) / (np.pi * f)) ** 2
    return float(np.trapezoid(s_i * h2, f))


@worker
def gaincell_noise(sim, task):
    a = task.args
    sim.load(task.netlist)
    for name, value in a.get("options", {}).items():
        sim.command(f"option {name}={value}")
    vs, vi, t = np.asarray(a["v_store"]), np.asarray(a["v_in"]), a["t_read"]
    q = np.full((vs.size, vi.size), np.nan)
    white = np.full_like(q, np.nan)
    st = np.zeros(q.shape, np.int8)
    for j, v_in in enumerate(vi):
        sim.command(f"alter vrwl dc={v_in:.9g}")
        sim.command(f"alter vrwlb dc={a['vdd'] - v_in:.9g}")
        for i, v in enumerate(vs):
            try:
                sim.command(f"alter vst dc={v:.9g}")
                sim.command(f"noise v(out) vst dec {PER_DECADE} {F_LOW:g} {F_HIGH:g}")
                last = sim.ng.last_plot  # noiseN (integrated); the spectrum is noise(N-1)
                spec = f"noise{int(last[5:]) - 1}"
                f, s = _vec(sim, spec + ".frequency"), _vec(sim, spec + ".onoise_spectrum") ** 2
                q[i, j] = np.sqrt(integrated_charge_var(f, s, t))
                white[i, j] = np.sqrt(np.interp(1.0 / t, f, s))
            except (SimulationFailed, ValueError):
                st[i, j] = NO_CONVERGENCE
    return {"q_sigma": q, "white": white, "status": st}


def analysis(p, s, opts: dict, pj: str, md: str) -> Analysis:
    vs = np.linspace(0.0, p.vdd, s.mc_store)
    vi = np.linspace(p.v_bl, p.v_in, s.mc_in)
    vi[0] = vi[0] + 0.25 * (vi[1] - vi[0]) if vi.size > 1 else vi[0]  # V_in = v_bl carries no current
    task = make_task(FAMILY, "read_noise", 0, __name__ + ":gaincell_noise", read_noise_netlist(p), md,
                     v_store=vs.round(9).tolist(), v_in=vi.round(9).tolist(), vdd=p.vdd, t_read=p.t_read,
                     options=opts)

    def merge(res):
        r = res[0]
        return {"q_sigma": Dataset(r["q_sigma"], "C", "rms noise charge of one read pulse of t_read, "
                                   "[V_store, V_in]"),
                "white": Dataset(r["white"], "A/sqrt(Hz)", "bit-line current noise density at 1/t_read"),
                "v_store": Dataset(vs, "V", ""), "v_in": Dataset(vi, "V", ""),
                "t_read": Dataset(np.asarray(p.t_read), "s", "integration window"),
                "status": Dataset(r["status"], "", "")}
    return Analysis(FAMILY, "read_noise", [task], merge, pj,
                    method=f".noise of the read stack (bit line held by a source, current sensed by a "
                           f"noiseless CCVS), {F_LOW:g} Hz - {F_HIGH:g} Hz, integrated with the |H|^2 of a "
                           "t_read integrator", attrs={"f_low_hz": F_LOW, "f_high_hz": F_HIGH})
