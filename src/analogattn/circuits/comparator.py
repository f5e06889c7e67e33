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

import numpy as np

from ..errors import ParameterError
from ..params import Validated, digest, param
from .sources import white_noise_pwl
from .technology import Mosfet, Technology

DEVICES = ("mt", "m1", "m2", "m3", "m4", "m5", "m6")  # devices with Monte Carlo threshold shifts
T_RISE = 0.1e-9  # single-decision runs: reset state given as initial conditions, clock edge here
T_EVAL = 0.25e-9  # ... and the decision read this long after it (delay < 0.1 ns at 0.5 mV overdrive)


@dataclasses.dataclass(frozen=True)
class ComparatorParams(Validated):
    # Voltages and sizes: wide static ranges; the technology's supply range and minimum (or
    # binned) sizes are checked in check().
    vdd: float = param(1.0, "V", 0.3, 5.5, "supply (the 65-nm card's nominal 1.0 V; range: the process's)")
    v_cm: float = param(0.6, "V", 0.0, 5.5, "input common-mode voltage")
    w_in: float = param(4.0, "um", 0.01, 100.0, "input pair width")
    l_in: float = param(0.2, "um", 0.01, 100.0, "input pair length")
    w_tail: float = param(2.0, "um", 0.01, 100.0, "tail transistor width")
    w_latch_n: float = param(0.5, "um", 0.01, 100.0, "cross-coupled NMOS width")
    w_latch_p: float = param(1.0, "um", 0.01, 100.0, "cross-coupled PMOS width")
    w_reset: float = param(0.5, "um", 0.01, 100.0, "reset PMOS width")
    l_min: float = param(0.06, "um", 0.01, 100.0, "length of all but the input pair")
    c_load: float = param(2e-15, "F", 0.0, 1e-12, "load on each output")
    t_clk: float = param(1e-9, "s", 1e-11, 1e-6, "clock period (half reset, half evaluate)")
    t_edge: float = param(20e-12, "s", 1e-13, 1e-8, "clock edge time")
    temperature: float = param(27.0, "degC", -55.0, 150.0, "temperature")
    technology: Technology = dataclasses.field(default_factory=Technology)

    def check(self):
        proc = self.technology.as_process()
        proc.check_vdd("vdd", self.vdd)
        for f, role, w, l in (("w_in/l_in", "nmos", self.w_in, self.l_in), ("w_tail/l_min", "nmos", self.w_tail, self.l_min),
                              ("w_latch_n/l_min", "nmos", self.w_latch_n, self.l_min),
                              ("w_latch_p/l_min", "pmos", self.w_latch_p, self.l_min),
                              ("w_reset/l_min", "pmos", self.w_reset, self.l_min)):
            proc.check_size(f, role, w, l)
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

    # -- netlist pieces ---------------------------------------------------------------------
    def clock(self, kind: str = "periodic") -> str:
        """The clock source: ``periodic`` (reset for t_clk / 2, then evaluate, every t_clk),
        ``single`` (one rising edge at T_RISE, for runs from the reset state given as initial
        conditions) or ``high`` (DC at vdd: evaluation, for operating points)."""
        if kind == "periodic":
            return (f"vclk clk 0 pulse(0 {self.vdd} {self.t_clk / 2:.6g} {self.t_edge:.6g} {self.t_edge:.6g} "
                    f"{self.t_clk / 2 - self.t_edge:.6g} {self.t_clk:.6g})\n")
        if kind == "single":
            return f"vclk clk 0 pulse(0 {self.vdd} {T_RISE:.6g} {self.t_edge:.6g} {self.t_edge:.6g} 1 2)\n"
        if kind == "high":
            return f"vclk clk 0 {self.vdd}\n"
        raise ValueError(f"clock kind {kind!r}: periodic, single or high")

    def header(self, title: str, clock: str = "periodic", seed: int | None = None) -> str:
        return (f"* {title}\n{self.technology.header(seed)}.options temp={self.temperature:g} tnom=27\n"
                f"vdd vdd 0 {self.vdd}\n" + self.clock(clock))

    def mosfets(self, k: int, inp: str, inn: str, dvt: dict | None = None) -> list[Mosfet]:
        """Latch ``k``'s transistors (node and device names suffixed ``_k``); ``dvt``: Monte
        Carlo threshold shifts of some of DEVICES."""
        d = dvt or {}
        s = f"_{k}"
        li, lm = self.l_in, self.l_min

        def m(name, dr, g, src, b, role, w, l):
            return Mosfet(name + s, dr, g, src, b, role, w, l, d.get(name))
        return [
            m("mt", f"tail{s}", "clk", "0", "0", "nmos", self.w_tail, lm),
            m("m1", f"dip{s}", inp, f"tail{s}", "0", "nmos", self.w_in, li),
            m("m2", f"din{s}", inn, f"tail{s}", "0", "nmos", self.w_in, li),
            m("m3", f"outn{s}", f"outp{s}", f"dip{s}", "0", "nmos", self.w_latch_n, lm),
            m("m4", f"outp{s}", f"outn{s}", f"din{s}", "0", "nmos", self.w_latch_n, lm),
            m("m5", f"outn{s}", f"outp{s}", "vdd", "vdd", "pmos", self.w_latch_p, lm),
            m("m6", f"outp{s}", f"outn{s}", "vdd", "vdd", "pmos", self.w_latch_p, lm),
            m("m7", f"outp{s}", "clk", "vdd", "vdd", "pmos", self.w_reset, lm),
            m("m8", f"outn{s}", "clk", "vdd", "vdd", "pmos", self.w_reset, lm),
            m("m9", f"dip{s}", "clk", "vdd", "vdd", "pmos", self.w_reset, lm),
            m("m10", f"din{s}", "clk", "vdd", "vdd", "pmos", self.w_reset, lm),
        ]

    def instance(self, k: int, inp: str, inn: str, dvt: dict | None = None) -> str:
        proc = self.technology.as_process()
        s = f"_{k}"
        return ("".join(proc.mos(m) for m in self.mosfets(k, inp, inn, dvt))
                + f"cp{s} outp{s} 0 {self.c_load:.6g}\ncn{s} outn{s} 0 {self.c_load:.6g}\n")

    def input_sources(self, dv_values, reps: int = 1, inp: str = "inp", inn: str = "inn") -> str:
        """Input sources at v_cm +- dv/2: each dv held for ``reps`` clock cycles (:meth:`staircase`)."""
        dv = np.asarray(dv_values)
        return (f"v{inp} {inp} 0 pwl({self.staircase(self.v_cm + dv / 2, reps)})\n"
                f"v{inn} {inn} 0 pwl({self.staircase(self.v_cm - dv / 2, reps)})\n")

    # -- netlists of the analyses -------------------------------------------------------------
    def decision_netlist(self, draws, title: str) -> str:
        """Latches side by side, one per row of ``draws`` (threshold shifts of DEVICES), each with
        its own DC input sources ``vinp_k``/``vinn_k`` (altered between runs), starting in the
        reset state (initial conditions, simulated with ``uic``: the operating point of hundreds
        of latches costs more than the transient) and evaluating once at T_RISE."""
        body, ics = [], []
        for k, row in enumerate(np.atleast_2d(draws)):
            body.append(f"vinp_{k} inp_{k} 0 {self.v_cm}\nvinn_{k} inn_{k} 0 {self.v_cm}\n"
                        + self.instance(k, f"inp_{k}", f"inn_{k}", dict(zip(DEVICES, row))))
            ics.append(" ".join(f"v({n}_{k})={self.vdd}" for n in ("outp", "outn", "dip", "din"))
                       + f" v(tail_{k})=0")
        return self.header(title, "single") + "".join(body) + "".join(f".ic {i}\n" for i in ics) + ".end\n"

    def decision_netlist_pdk(self, n: int, seed: int, title: str) -> str:
        """:meth:`decision_netlist` for a process whose models draw their own mismatch: ``n``
        latches, each instance an independent draw of the PDK's mismatch models (``seed``)."""
        body, ics = [], []
        for k in range(n):
            body.append(f"vinp_{k} inp_{k} 0 {self.v_cm}\nvinn_{k} inn_{k} 0 {self.v_cm}\n"
                        + self.instance(k, f"inp_{k}", f"inn_{k}"))
            ics.append(" ".join(f"v({m}_{k})={self.vdd}" for m in ("outp", "outn", "dip", "din"))
                       + f" v(tail_{k})=0")
        return self.technology.finish(self.header(title, "single", seed) + "".join(body)
                                      + "".join(f".ic {i}\n" for i in ics) + ".end\n")

    def input_pair(self) -> list[Mosfet]:
        """The input pair and tail of one latch, for the operating point of the noise run."""
        return [Mosfet("m1", "dip", "inp", "tail", "0", "nmos", self.w_in, self.l_in),
                Mosfet("m2", "din", "inn", "tail", "0", "nmos", self.w_in, self.l_in),
                Mosfet("mt", "tail", "clk", "0", "0", "nmos", self.w_tail, self.l_min)]

    def input_pair_op_netlist(self) -> str:
        """Operating point of the input pair at the start of evaluation: clock high, inputs at
        v_cm, the pair's drains held at vdd. Its gm: vector :meth:`input_gm_vector`."""
        proc = self.technology.as_process()
        net = (self.header(f"{self.name} input pair operating point", "high")
                + f"vinp inp 0 {self.v_cm}\nvinn inn 0 {self.v_cm}\n"
                + "".join(proc.mos(m) for m in self.input_pair())
                + f"vdip dip 0 {self.vdd}\nvdin din 0 {self.vdd}\n.end\n")
        return self.technology.finish(net)

    def input_gm_vector(self) -> str:
        return self.technology.as_process().op_vector(self.input_pair()[0], "gm")

    def noise_netlist(self, dv_values, reps: int, sigma: float, dt: float, seed: int) -> str:
        """``reps`` identical latches sharing the input staircase of ``dv_values`` (one decision
        per cycle), each with its own seeded white-noise voltage source (``sigma``, one sample
        every ``dt``) in series with its positive input."""
        rng = np.random.default_rng(seed)
        stop = len(dv_values) * self.t_clk
        body = "".join(f"vnoise{k} inp{k} inp {white_noise_pwl(sigma, dt, stop, rng)}\n"
                       + self.instance(k, f"inp{k}", "inn") for k in range(reps))
        return self.technology.finish(self.header(f"{self.name} decision noise") + self.input_sources(dv_values)
                                      + body + ".end\n")

    def delay_energy_netlist(self, overdrives) -> str:
        """One latch clocked every t_clk, one overdrive per cycle."""
        return self.technology.finish(self.header(f"{self.name} delay and energy") + self.input_sources(overdrives)
                                      + self.instance(0, "inp", "inn") + ".end\n")

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
