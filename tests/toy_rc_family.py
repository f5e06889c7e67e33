"""A toy circuit family, written as a fourth family would be: an RC low-pass driven by a voltage
step, one transient analysis through real ngspice, a fit of its time constant. Everything the
pipeline needs is in this module; :func:`register_toy` is the one registration.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from analogattn.characterize import families
from analogattn.characterize.engine import SimulationFailed
from analogattn.characterize.tasks import NO_CONVERGENCE, Analysis, Dataset, make_task, worker
from analogattn.circuits.technology import Technology
from analogattn.params import Validated, digest, param

FAMILY = "rc"


# -- circuit (would live in circuits/rc.py) -----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RcParams(Validated):
    r: float = param(10e3, "Ohm", 1.0, 1e9, "series resistance")
    c: float = param(100e-15, "F", 1e-18, 1e-6, "load capacitance")
    v_step: float = param(1.0, "V", 0.01, 5.0, "step amplitude")
    temperature: float = param(27.0, "degC", -55.0, 150.0, "temperature")
    technology: Technology = dataclasses.field(default_factory=Technology)

    @property
    def name(self) -> str:
        return "rc_" + digest(self.to_json(), n=10)

    def step_netlist(self) -> str:
        tau = self.r * self.c
        return (f"* {self.name} step response\n.options temp={self.temperature:g}\n"
                f"vin in 0 pwl(0 0 {tau / 1000:.6g} {self.v_step})\n"
                f"r1 in out {self.r:.6g}\nc1 out 0 {self.c:.6g}\n.end\n")


@dataclasses.dataclass(frozen=True)
class RcSweep(Validated):
    points: int = param(101, "", 10, 10000, "stored time points over 5 tau")


# -- characterization (would live in characterize/rc.py) ---------------------------------------
@worker
def rc_step(sim, task):
    a = task.args
    sim.load(task.netlist)
    t_out = np.asarray(a["t_out"])
    try:
        sim.command(f"tran {a['tstep']:.6g} {t_out[-1]:.6g}")
        vec = sim.vectors(["time", "out"])
        v = np.interp(t_out, vec["time"], vec["out"])
        st = np.zeros(1, np.int8)
    except SimulationFailed:
        v, st = np.full(t_out.size, np.nan), np.full(1, NO_CONVERGENCE, np.int8)
    return {"time": t_out, "v_out": v, "status": st}


def analyses(p: RcParams, s: RcSweep, only=None, sim_options=None) -> list[Analysis]:
    tau = p.r * p.c
    pj = json.dumps({"circuit": p.to_dict(), "sweep": s.to_dict()}, sort_keys=True)
    out = []
    if only is None or "step" in only:
        t_out = np.linspace(0.0, 5 * tau, s.points).tolist()
        t = make_task(FAMILY, "step", 0, __name__ + ":rc_step", p.step_netlist(), "", t_out=t_out,
                      tstep=tau / 200)
        out.append(Analysis(FAMILY, "step", [t], lambda res: {
            "time": Dataset(res[0]["time"], "s", "time after the step"),
            "v_out": Dataset(res[0]["v_out"], "V", "capacitor voltage"),
            "status": Dataset(res[0]["status"], "", "")}, pj, method="transient step response"))
    return out


# -- fit (would live beside surrogates/fit.py's) ------------------------------------------------
def fit_rc(data: dict, path, degree=3, surface="auto") -> dict:
    from analogattn.surrogates import models as M
    g = data["step"]
    t, v = g["time"], g["v_out"]
    circuit = g.attrs["parameters"]
    v_end = circuit["v_step"]
    m = (t > 0.2 * t[-1]) & (t < 0.8 * t[-1])
    slope = np.polyfit(t[m], np.log(v_end - v[m]), 1)[0]  # ln(V - v) = ln V - t / tau
    tau = -1.0 / slope
    model = M.Constant(tau, domain={}, units={"out": "s"})
    model.scores = {"rel_error_vs_rc": abs(tau / (circuit["r"] * circuit["c"]) - 1)}
    return {"rc.tau": model}


def check_rc(c, data: dict, degree: int) -> None:
    if "step" in data:
        c.axis(data["step"]["time"], "rc/step/time")
        c.finite(data["step"]["v_out"], "rc/step/v_out", 10)


FIT = families.FitSpec(reads={"step": ({"time": ("T",), "v_out": ("T",)}, {})}, fit=fit_rc, check=check_rc,
                       parameters={"step": ("r", "c", "v_step")}, models={"rc.tau": ("constant",)},
                       targets={"rc.tau": ("rel_error_vs_rc", 0.02)}, needs="rc step")


def plot_rc(f, models, out, plt):
    if "rc.tau" not in models or "rc/step" not in f:
        return []
    g = f["rc/step"]
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(g["time"][()], g["v_out"][()], ".")
    path = out / "rc_step.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


FAMILY_SPEC = families.Family(
    name=FAMILY, params=RcParams, sweep=RcSweep, build=analyses,
    analyses=(families.AnalysisSpec("step", (__name__ + ":rc_step",), 2, "step response"),),
    fit=FIT, plot=plot_rc, cost_terms=(families.CostTerm("rc.tau", "s", "settling time constant"),),
    doc="toy RC low-pass")


def register_toy():
    """The one registration."""
    return families.register(FAMILY_SPEC, replace=True)
