"""Clocked StrongARM latch comparator: the 1-bit keep/prune decision of a crossbar column.

Topology (our netlist of the textbook StrongARM latch)::

    clk high = evaluate, low = reset
    Mt:  tail  <- clk        (NMOS to ground)
    M1:  dip   <- inp  (tail) M2: din <- inn (tail)       input pair
    M3:  outn  <- outp (dip)  M4: outp <- outn (din)      cross-coupled NMOS
    M5:  outn  <- outp (vdd)  M6: outp <- outn (vdd)      cross-coupled PMOS
    M7..M10: PMOS reset of outp, outn, dip, din to VDD while clk is low

inp > inn discharges dip faster, so outn falls and outp stays high: "keep" = outp high.
"""
from __future__ import annotations

import dataclasses

from ..errors import ParameterError
from ..params import Validated, digest, param
from .technology import Technology

DEVICES = ("mt", "m1", "m2", "m3", "m4", "m5", "m6")


@dataclasses.dataclass(frozen=True)
class ComparatorParams(Validated):
    vdd: float = param(1.0, "V", 0.5, 1.5, "supply (the 65-nm card's nominal 1.0 V)")
    v_cm: float = param(0.6, "V", 0.0, 1.5, "input common-mode voltage")
    w_in: float = param(4.0, "um", 0.06, 100.0, "input pair width")
    l_in: float = param(0.2, "um", 0.06, 10.0, "input pair length")
    w_tail: float = param(2.0, "um", 0.06, 100.0, "tail transistor width")
    w_latch_n: float = param(0.5, "um", 0.06, 100.0, "cross-coupled NMOS width")
    w_latch_p: float = param(1.0, "um", 0.06, 100.0, "cross-coupled PMOS width")
    w_reset: float = param(0.5, "um", 0.06, 100.0, "reset PMOS width")
    l_min: float = param(0.06, "um", 0.06, 10.0, "length of all but the input pair")
    c_load: float = param(2e-15, "F", 0.0, 1e-12, "load on each output")
    t_clk: float = param(1e-9, "s", 1e-11, 1e-6, "clock period (half reset, half evaluate)")
    t_edge: float = param(20e-12, "s", 1e-13, 1e-8, "clock edge time")
    temperature: float = param(27.0, "degC", -55.0, 150.0, "temperature")
    technology: Technology = dataclasses.field(default_factory=Technology)

    def check(self):
        if self.v_cm > self.vdd:
            raise ParameterError("v_cm", self.v_cm, f"0 to vdd ({self.vdd:g} V): inputs live between the rails")
        if self.t_edge >= self.t_clk / 2:
            raise ParameterError("t_edge", self.t_edge, f"below t_clk / 2 ({self.t_clk / 2:g} s): each clock "
                                                       "phase must be longer than its edge")

    @property
    def name(self) -> str:
        return "comparator_" + digest(self.to_json(), self.technology.digest(), n=10)

    def areas_um2(self) -> dict:
        return {"mt": self.w_tail * self.l_min, "m1": self.w_in * self.l_in, "m2": self.w_in * self.l_in,
                "m3": self.w_latch_n * self.l_min, "m4": self.w_latch_n * self.l_min,
                "m5": self.w_latch_p * self.l_min, "m6": self.w_latch_p * self.l_min}

    def header(self, title: str) -> str:
        return (f"* {title}\n{self.technology.header()}.options temp={self.temperature:g} tnom=27\n"
                f"vdd vdd 0 {self.vdd}\n"
                f"vclk clk 0 pulse(0 {self.vdd} {self.t_clk / 2:.6g} {self.t_edge:.6g} {self.t_edge:.6g} "
                f"{self.t_clk / 2 - self.t_edge:.6g} {self.t_clk:.6g})\n")

    def instance(self, k: int, inp: str, inn: str, dvt: dict | None = None) -> str:
        n, p, um = self.technology.nmos, self.technology.pmos, 1e-6
        d = dvt or {}

        def dv(name):
            return f" delvto={d[name]:.6g}" if name in d else ""

        s = f"_{k}"
        lm, li = self.l_min * um, self.l_in * um
        return (
            f"mt{s} tail{s} clk 0 0 {n} W={self.w_tail * um:.6g} L={lm:.6g}{dv('mt')}\n"
            f"m1{s} dip{s} {inp} tail{s} 0 {n} W={self.w_in * um:.6g} L={li:.6g}{dv('m1')}\n"
            f"m2{s} din{s} {inn} tail{s} 0 {n} W={self.w_in * um:.6g} L={li:.6g}{dv('m2')}\n"
            f"m3{s} outn{s} outp{s} dip{s} 0 {n} W={self.w_latch_n * um:.6g} L={lm:.6g}{dv('m3')}\n"
            f"m4{s} outp{s} outn{s} din{s} 0 {n} W={self.w_latch_n * um:.6g} L={lm:.6g}{dv('m4')}\n"
            f"m5{s} outn{s} outp{s} vdd vdd {p} W={self.w_latch_p * um:.6g} L={lm:.6g}{dv('m5')}\n"
            f"m6{s} outp{s} outn{s} vdd vdd {p} W={self.w_latch_p * um:.6g} L={lm:.6g}{dv('m6')}\n"
            f"m7{s} outp{s} clk vdd vdd {p} W={self.w_reset * um:.6g} L={lm:.6g}\n"
            f"m8{s} outn{s} clk vdd vdd {p} W={self.w_reset * um:.6g} L={lm:.6g}\n"
            f"m9{s} dip{s} clk vdd vdd {p} W={self.w_reset * um:.6g} L={lm:.6g}\n"
            f"m10{s} din{s} clk vdd vdd {p} W={self.w_reset * um:.6g} L={lm:.6g}\n"
            f"cp{s} outp{s} 0 {self.c_load:.6g}\ncn{s} outn{s} 0 {self.c_load:.6g}\n"
        )

    def staircase(self, dv_values, reps: int = 1) -> str:
        """PWL of the differential input: each value held for ``reps`` clock cycles, changing
        in the middle of the reset phase."""
        pts = []
        T, e = self.t_clk, self.t_edge
        for j, v in enumerate(dv_values):
            t0 = j * reps * T
            pts.append((t0 + (T / 4 if j else 0.0), v))
            pts.append((t0 + reps * T + T / 4 - e, v))
        return " ".join(f"{a:.9g} {b:.9g}" for a, b in pts)

    def decision_times(self, cycles: int):
        """Where each cycle's decision is read: just before the end of its evaluate phase."""
        return [(j + 1) * self.t_clk - 2 * self.t_edge for j in range(cycles)]
