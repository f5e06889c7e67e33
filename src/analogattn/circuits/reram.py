"""ReRAM crossbar column: N rows of 1T1R cells summing current into a virtual-ground
transimpedance sense stage.

Row i (i = 0 nearest the sense stage)::

    DAC_i --R_wl-- WL_i --[access NMOS, gate = V_sel]-- M_i --[ReRAM]-- BL_i
    BL_i --R_bl-- BL_{i-1} ... BL_0 --R_bl-- SUM (virtual ground of the TIA)
    TIA: ideal op-amp (open-loop gain a_ol) with feedback R_f: V_out = -R_f * I_col

ReRAM element: behavioural B-source ``I = G * V0 * sinh(V / V0)`` (a common compact form of the
non-linear read current; V0 -> infinity is a linear conductance). G comes from ``levels``
programmed levels, evenly spaced in conductance between G_min = G_max / on_off and G_max.
Defaults: G_max = 10 uS (R_on = 100 kOhm) and on/off = 10, as in DNN+NeuroSim's accuracy
model; read voltage and 10 ns read pulse after NeuroSim; wire segment 1 Ohm (between aihwkit's
0.35 Ohm and PytorX's 28 Ohm); lognormal G variation sigma 0.05 (MNSIM's 5%). Sources:
../shared/reference/sprint-pruning.md.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ParameterError
from ..params import Validated, digest, param
from .sources import K_BOLTZMANN, white_noise_pwl  # noqa: F401 (re-exported)
from .technology import Mosfet, Technology

@dataclasses.dataclass(frozen=True)
class ReramColumnParams(Validated):
    rows: int = param(64, "", 1, 1024, "cells in the column")
    levels: int = param(16, "", 2, 256, "programmed conductance levels")
    g_max: float = param(10e-6, "S", 1e-9, 1e-2, "highest programmed conductance")
    on_off: float = param(10.0, "", 1.01, 1e5, "G_max / G_min")
    v0: float = param(0.25, "V", 1e-3, 1e6, "non-linearity voltage of I = G V0 sinh(V/V0)")
    v_read: float = param(0.2, "V", 1e-3, 1.0, "DAC full-scale read voltage")
    input_levels: int = param(16, "", 2, 65536, "DAC levels from 0 to v_read")
    r_wire: float = param(1.0, "Ohm", 0.0, 1e5, "wire resistance per segment (word and bit line)")
    c_wire: float = param(0.2e-15, "F", 0.0, 1e-12, "wire capacitance per bit-line segment")
    w_access: float = param(0.5, "um", 0.01, 1000.0, "access transistor width (minimum: the process's)")
    l_access: float = param(0.06, "um", 0.01, 100.0, "access transistor length (minimum: the process's)")
    v_sel: float = param(1.0, "V", 0.0, 5.5, "gate voltage of selected access transistors (at most the "
                         "process's gate limit)")
    r_f: float = param(5e3, "Ohm", 1.0, 1e9, "TIA feedback resistance")
    a_ol: float = param(1e5, "", 10.0, 1e9, "TIA open-loop gain")
    sigma_g: float = param(0.05, "", 0.0, 2.0, "lognormal sigma of programmed G")
    t_read: float = param(10e-9, "s", 1e-11, 1e-5, "read pulse width")
    t_edge: float = param(0.1e-9, "s", 1e-12, 1e-8, "DAC edge time")
    temperature: float = param(27.0, "degC", -55.0, 150.0, "temperature (also thermal noise)")
    technology: Technology = dataclasses.field(default_factory=Technology)

    def check(self):
        proc = self.technology.as_process()
        proc.check_size("w_access/l_access", "nmos", self.w_access, self.l_access)
        proc.check_gate("v_sel", "nmos", self.v_sel)
        if self.t_edge > self.t_read:
            raise ParameterError("t_edge", self.t_edge,
                                 f"at most t_read ({self.t_read:g} s): a DAC edge longer than the read pulse")

    @property
    def g_min(self) -> float:
        return self.g_max / self.on_off

    def conductances(self) -> np.ndarray:
        return np.linspace(self.g_min, self.g_max, self.levels)

    def input_voltages(self) -> np.ndarray:
        return np.linspace(0.0, self.v_read, self.input_levels)

    @property
    def name(self) -> str:
        return "reram_" + digest(self.to_json(), self.technology.digest(), n=10)

    def header(self, title: str, seed: int | None = None) -> str:
        return f"* {title}\n{self.technology.header(seed)}.options temp={self.temperature:g} tnom=27\n"

    def access(self, name: str, d: str, g: str, s: str) -> Mosfet:
        """The access transistor of a cell (body at ground)."""
        return Mosfet(name, d, g, s, "0", "nmos", self.w_access, self.l_access)

    def dac(self, name: str, node: str, v: float, pulse: tuple | None = None) -> str:
        """A row's DAC source: DC ``v``, or with ``pulse = (t_on, t_off)`` 0 V rising to ``v`` at
        t_on and back at t_off (edges t_edge)."""
        if pulse is None:
            return f"{name} {node} 0 {v:.9g}\n"
        t_on, t_off, e = pulse[0], pulse[1], self.t_edge
        return (f"{name} {node} 0 pwl(0 0 {t_on:.6g} 0 {t_on + e:.6g} {v:.9g} "
                f"{t_off:.6g} {v:.9g} {t_off + e:.6g} 0)\n")

    def column(self, tag: str, v_in, g, noise_dt: float = 0.0, noise_stop: float = 0.0, seed: int = 0,
               pulse: tuple | None = None) -> str:
        """One column with DAC voltages v_in[i] (DC, or pulses with ``pulse = (t_on, t_off)``)
        and conductances g[i] (S).

        noise_dt > 0 adds a thermal-noise current source across every cell until noise_stop
        (white, sigma = sqrt(4 k T G / (2 dt)) for samples every dt; seeded PWL)."""
        rng = np.random.default_rng(seed)
        proc = self.technology.as_process()
        r = max(self.r_wire, 1e-6)  # SPICE needs a resistor > 0: 1 uOhm stands for none
        out = [f"vsel{tag} sel{tag} 0 {self.v_sel}\n"]
        for i, (v, gi) in enumerate(zip(v_in, g)):
            n = f"{tag}_{i}"
            out.append(self.dac(f"vd{n}", f"d{n}", v, pulse)
                       + f"rw{n} d{n} wl{n} {r:.9g}\n"
                       + proc.mos(self.access(f"ma{n}", f"wl{n}", f"sel{tag}", f"m{n}"))
                       + f"bc{n} m{n} bl{n} i={gi:.9g}*{self.v0:.9g}*sinh(v(m{n},bl{n})/{self.v0:.9g})\n")
            nxt = f"bl{tag}_{i - 1}" if i > 0 else f"sum{tag}"
            out.append(f"rb{n} bl{n} {nxt} {r:.9g}\n")
            if self.c_wire > 0:
                out.append(f"cb{n} bl{n} 0 {self.c_wire:.6g}\n")
            if noise_dt > 0:
                kt = K_BOLTZMANN * (self.temperature + 273.15)
                sig = np.sqrt(4 * kt * gi / (2 * noise_dt))
                out.append(f"in{n} m{n} bl{n} {white_noise_pwl(sig, noise_dt, noise_stop, rng)}\n")
        out.append(f"eamp{tag} out{tag} 0 0 sum{tag} {self.a_ol:.6g}\n"
                   f"rf{tag} sum{tag} out{tag} {self.r_f:.6g}\n")
        return "".join(out)

    def columns_netlist(self, title: str, inputs, conductances, seed: int | None = None) -> str:
        """Independent columns (one per row of ``inputs``/``conductances``) in one netlist.
        ``seed``: access-transistor mismatch drawn by the process's own models (a PDK; every
        instance draws its own), reproducibly."""
        body = "".join(self.column(f"c{k}", v, g) for k, (v, g) in enumerate(zip(inputs, conductances)))
        return self.technology.finish(self.header(f"{self.name} {title}", seed) + body + ".end\n")

    def transient_netlist(self, v_in, g, t_on: float, t_off: float, stop: float, noise_dt: float = 0.0,
                          seed: int = 0) -> str:
        """One column driven by DAC pulses (0 -> v_in[i] from t_on to t_off), with per-cell
        thermal-noise sources when ``noise_dt`` > 0."""
        col = self.column("c0", v_in, g, noise_dt=noise_dt, noise_stop=stop, seed=seed, pulse=(t_on, t_off))
        return self.technology.finish(self.header(f"{self.name} transient{' noise' if noise_dt else ''}")
                                      + col + ".end\n")

    def cell_iv_netlist(self) -> str:
        """One cell per level, all word lines on one swept source ``vsw``; each cell has its own
        0-V ammeter ``vam<k>`` at its bit-line end."""
        proc = self.technology.as_process()
        lines = [self.header(f"{self.name} cell I-V"), f"vsw d 0 0\nvsel sel 0 {self.v_sel}\n"]
        for k, g in enumerate(self.conductances()):
            lines.append(proc.mos(self.access(f"ma{k}", "d", "sel", f"m{k}"))
                         + f"bc{k} m{k} b{k} i={g:.9g}*{self.v0:.9g}*sinh(v(m{k},b{k})/{self.v0:.9g})\n"
                         f"vam{k} b{k} 0 0\n")
        lines.append(".end\n")
        return self.technology.finish("".join(lines))
