"""Gain cell: a write transistor and storage capacitor holding K or V, and a complementary read
stack that turns a pulse on the read word line into a signed current on a bit line held at
mid-rail.

Topology (one cell, our design after the cell described in Leroux et al., arXiv 2409.19315)::

    WBL --[Mw]-- SN --||-- gnd        Mw gate: WWL (boosted high to write, ``wwl_hold`` to hold)
                  |        Cs
        RWL --[Mp]+--- BL (held at v_bl)   Mp: PMOS, gate SN, source and n-well at RWL
        RWLB--[Mn]+                        Mn: NMOS, gate SN, source and body at RWLB
                                            (deep n-well, so its body follows its source)

At rest RWL = RWLB = v_bl, so no current flows. A read applies RWL = V_in and, from the
complementary driver, RWLB = VDD - V_in for the pulse width: the stack then sources current
into the bit line when V_store is below mid-rail (PMOS stronger) and sinks it when above, zero
at V_in = mid-rail. The read current is reported as the current the cell *sinks* from the bit
line (positive for V_store > mid-rail), the sign convention of the reference's cubic fit.
"""
from __future__ import annotations

import dataclasses

from ..errors import ParameterError
from ..params import Validated, digest, param
from .technology import Mosfet, Technology


@dataclasses.dataclass(frozen=True)
class GainCellParams(Validated):
    # Voltage and size ranges here are wide; the technology's own limits (supply range, gate
    # voltages per device, minimum or binned sizes) are checked in check().
    vdd: float = param(0.9, "V", 0.3, 5.5, "supply; signals live in [0, vdd] (range: the process's supply range)")
    v_bl: float = param(0.45, "V", 0.0, 5.5, "bit-line bias (mid-rail zero of stored values)")
    v_in: float = param(0.9, "V", 0.0, 5.5, "read pulse amplitude on RWL (largest V_in swept)")
    c_store: float = param(20e-15, "F", 1e-17, 1e-11, "storage capacitance (20 fF: retention tau ~0.7 ms, so a "
                           "1024-token window at 65 ns per token decays by ~9%, the paper's regime)")
    write_device: str = param("nmos", doc="device role of the write transistor (nmos, nmos_io, pmos_io ...; "
                              "a PMOS writes with its word line low and holds with it high)",
                              choices=("nmos", "pmos", "nmos_lvt", "pmos_lvt", "nmos_hvt", "pmos_hvt",
                                       "nmos_io", "pmos_io"))
    w_write: float = param(0.12, "um", 0.01, 100.0, "write transistor width")
    l_write: float = param(0.12, "um", 0.01, 100.0, "write transistor length")
    w_read_p: float = param(0.6, "um", 0.01, 100.0, "read PMOS width")
    w_read_n: float = param(0.12, "um", 0.01, 100.0, "read NMOS width")
    l_read: float = param(0.3, "um", 0.01, 100.0, "read transistors' length")
    wwl_high: float = param(1.2, "V", -5.5, 5.5, "write word line when writing (boosted; below wwl_hold for a PMOS "
                            "write device); range: the write device's gate range in the process")
    wwl_hold: float = param(0.0, "V", -5.5, 5.5, "write word line while holding")
    t_write: float = param(5e-9, "s", 1e-10, 1e-6, "write pulse width")
    t_read: float = param(10e-9, "s", 1e-10, 1e-6, "read pulse width used for charge and energy")
    t_edge: float = param(1e-10, "s", 1e-12, 1e-8, "rise/fall time of word-line edges")
    temperature: float = param(27.0, "degC", -55.0, 150.0, "simulation temperature")
    technology: Technology = dataclasses.field(default_factory=Technology)

    @property
    def write_pmos(self) -> bool:
        return self.write_device.startswith("pmos")

    def check(self):
        proc = self.technology.as_process()
        proc.check_vdd("vdd", self.vdd)
        for f in ("wwl_high", "wwl_hold"):
            proc.check_gate(f, self.write_device, getattr(self, f))
        proc.check_size("w_write/l_write", self.write_device, self.w_write, self.l_write)
        proc.check_size("w_read_p/l_read", "pmos", self.w_read_p, self.l_read)
        proc.check_size("w_read_n/l_read", "nmos", self.w_read_n, self.l_read)
        if not 0.0 < self.v_bl < self.vdd:
            raise ParameterError("v_bl", self.v_bl, f"between 0 and vdd ({self.vdd:g} V)")
        if not self.v_bl <= self.v_in <= self.vdd:
            raise ParameterError("v_in", self.v_in, f"v_bl to vdd ({self.v_bl:g} to {self.vdd:g} V)")
        if self.v_in == self.v_bl:  # the V_in sweep would have no span (a zero DC step)
            raise ParameterError("v_in", self.v_in, f"above v_bl ({self.v_bl:g} V), at most vdd ({self.vdd:g} V)")
        if self.write_pmos and self.wwl_high >= self.wwl_hold:
            raise ParameterError("wwl_high", self.wwl_high, f"below wwl_hold ({self.wwl_hold:g} V): the word line "
                                 f"of a PMOS write device ({self.write_device}) falls to write")
        if not self.write_pmos and self.wwl_high <= self.wwl_hold:
            raise ParameterError("wwl_high", self.wwl_high,
                                 f"above wwl_hold ({self.wwl_hold:g} V): the write word line rises to write")
        if self.t_edge > self.t_write:
            raise ParameterError("t_edge", self.t_edge,
                                 f"at most t_write ({self.t_write:g} s): an edge longer than the write pulse")
        if self.t_edge > self.t_read:
            raise ParameterError("t_edge", self.t_edge,
                                 f"at most t_read ({self.t_read:g} s): an edge longer than the read pulse")

    @property
    def name(self) -> str:
        """Cell name derived from the parameters and the model file content."""
        return "gaincell_" + digest(self.to_json(), self.technology.digest(), n=10)

    # -- netlist pieces ---------------------------------------------------------------------
    def mosfets(self, i: int, wbl: str, wwl: str, rwl: str, rwlb: str, bl: str, sn: str) -> dict:
        """Cell ``i``'s transistors: write (``mw``), read PMOS (``mp``) and read NMOS (``mn``)."""
        body = "wnw" if self.write_pmos else "0"  # a PMOS write device's n-well: vwnw (header)
        return {"mw": Mosfet(f"mw{i}", wbl, wwl, sn, body, self.write_device, self.w_write, self.l_write),
                "mp": Mosfet(f"mp{i}", bl, sn, rwl, rwl, "pmos", self.w_read_p, self.l_read),
                "mn": Mosfet(f"mn{i}", bl, sn, rwlb, rwlb, "nmos", self.w_read_n, self.l_read)}

    def cell(self, i: int, wbl: str, wwl: str, rwl: str, rwlb: str, bl: str, sn: str) -> str:
        proc = self.technology.as_process()
        m = self.mosfets(i, wbl, wwl, rwl, rwlb, bl, sn)
        return proc.mos(m["mw"]) + f"cs{i} {sn} 0 {self.c_store:.6g}\n" + proc.mos(m["mp"]) + proc.mos(m["mn"])

    def read_mismatch_commands(self, dvt_p: float, dvt_n: float) -> list[str]:
        """ngspice commands that give the read stack of cell 0 (the read-surface netlist) the
        threshold shifts of one Monte Carlo sample, through the process's mismatch hook."""
        proc = self.technology.as_process()
        return proc.alter_dvt("mp0", dvt_p) + proc.alter_dvt("mn0", dvt_n)

    def header(self, title: str, temperature: float | None = None, seed: int | None = None) -> str:
        temp = self.temperature if temperature is None else temperature
        nwell = f"vwnw wnw 0 {self.vdd:g}\n" if self.write_pmos else ""
        return f"* {title}\n{self.technology.header(seed)}.options temp={temp:g} tnom=27\n" + nwell

    def read_mc_netlist(self, n: int, seed: int) -> str:
        """Monte Carlo through a PDK's own mismatch models: ``n`` read stacks sharing SN (``vst``),
        RWL (``vrwl``) and RWLB, each on its own bit-line source ``vbl<k>``; every instance draws
        its own mismatch (seeded with ``seed``), so one nested DC sweep gives ``n`` samples."""
        proc = self.technology.as_process()
        lines = [self.header(f"{self.name} read surface Monte Carlo (PDK mismatch, seed {seed})", seed=seed),
                 f"vst sn 0 {self.v_bl}\nvrwl rwl 0 {self.v_bl}\nerwlb rwlb 0 vol='{self.vdd} - v(rwl)'\n"]
        for k in range(n):
            m = self.mosfets(k, "wbl", "wwl", "rwl", "rwlb", f"bl{k}", "sn")
            lines.append(f"vbl{k} bl{k} 0 {self.v_bl}\n" + proc.mos(m["mp"]) + proc.mos(m["mn"]))
        lines.append(".end\n")
        return self.technology.finish("".join(lines))

    def read_surface_netlist(self, temperature: float | None = None) -> str:
        """DC read: SN forced by ``vst``; RWL by ``vrwl``; RWLB follows as vdd - V(rwl)."""
        return self.technology.finish(
            self.header(f"{self.name} read surface (DC)", temperature)
            + f"vst sn 0 {self.v_bl}\n"
            f"vrwl rwl 0 {self.v_bl}\n"
            f"erwlb rwlb 0 vol='{self.vdd} - v(rwl)'\n"
            f"vbl bl 0 {self.v_bl}\n"
            f"vwwl wwl 0 {self.wwl_hold}\n"
            f"vwbl wbl 0 {self.v_bl}\n"
            + self.cell(0, "wbl", "wwl", "rwl", "rwlb", "bl", "sn")
            + ".end\n"
        )


    # Time line of the write-then-read transient (s).
    def write_read_times(self) -> dict:
        e = self.t_edge
        t_fall = e + self.t_write
        t_settle = t_fall + e + 5e-9  # after WWL is down and feedthrough has settled
        t_read0 = t_settle + 1e-9
        t_read1 = t_read0 + e + self.t_read + e
        return {"write_end": t_fall + e, "sample": t_settle, "read_start": t_read0,
                "read_end": t_read1, "stop": t_read1 + 2e-9}

    def write_read_netlist(self, v_written: list[float]) -> str:
        """One cell per written voltage, each with its own sources: write, settle, read pulse.

        Cell k: WBL_k at v_written[k] during the write, back to v_bl after it; WWL boosted for
        t_write; then one read pulse of width t_read at amplitude v_in.
        """
        tm, e, vb = self.write_read_times(), self.t_edge, self.v_bl
        lines = [self.header(f"{self.name} write transfer, write and read energy")]
        w_end, r0, r1 = tm["write_end"], tm["read_start"], tm["read_end"]
        for k, v in enumerate(v_written):
            lines.append(
                f"vwbl{k} wbl{k} 0 pwl(0 {v:.6g} {w_end + 0.5e-9:.6g} {v:.6g} {w_end + 0.5e-9 + e:.6g} {vb})\n"
                f"vwwl{k} wwl{k} 0 pwl(0 {self.wwl_hold} {e:.6g} {self.wwl_high} {e + self.t_write:.6g} "
                f"{self.wwl_high} {w_end:.6g} {self.wwl_hold})\n"
                f"vrwl{k} rwl{k} 0 pwl(0 {vb} {r0:.6g} {vb} {r0 + e:.6g} {self.v_in} "
                f"{r1 - e:.6g} {self.v_in} {r1:.6g} {vb})\n"
                f"vrwlb{k} rwlb{k} 0 pwl(0 {vb} {r0:.6g} {vb} {r0 + e:.6g} {self.vdd - self.v_in:.6g} "
                f"{r1 - e:.6g} {self.vdd - self.v_in:.6g} {r1:.6g} {vb})\n"
                f"vbl{k} bl{k} 0 {vb}\n"
            )
            lines.append(self.cell(k, f"wbl{k}", f"wwl{k}", f"rwl{k}", f"rwlb{k}", f"bl{k}", f"sn{k}"))
        lines.append(".end\n")
        return self.technology.finish("".join(lines))

    def retention_netlist(self, v_start: list[float], temperature: float) -> str:
        """One cell per start voltage: written at t=0, then held (WBL at v_bl, WWL at hold)."""
        e, vb = self.t_edge, self.v_bl
        w_end = e + self.t_write + e
        lines = [self.header(f"{self.name} retention", temperature)]
        gmin = self.technology.as_process().leakage_gmin
        if gmin is not None:  # leakage below ngspice's default gmin floor (1e-12 S: ~1 pA at 1 V)
            lines.append(f".option gmin={gmin:g}\n")
        lines.append(f"vwwl wwl 0 pwl(0 {self.wwl_hold} {e:.6g} {self.wwl_high} "
                     f"{e + self.t_write:.6g} {self.wwl_high} {w_end:.6g} {self.wwl_hold})\n"
                     f"vidle idle 0 {vb}\nvrwlb rwlb 0 {vb}\n")
        for k, v in enumerate(v_start):
            lines.append(f"vwbl{k} wbl{k} 0 pwl(0 {v:.6g} {w_end + 0.5e-9:.6g} {v:.6g} "
                         f"{w_end + 0.5e-9 + e:.6g} {vb})\n")
            lines.append(self.cell(k, f"wbl{k}", "wwl", "idle", "rwlb", "idle", f"sn{k}"))
        lines.append(".end\n")
        return self.technology.finish("".join(lines))

    def read_area_um2(self) -> dict:
        return {"mw": self.w_write * self.l_write, "mp": self.w_read_p * self.l_read,
                "mn": self.w_read_n * self.l_read}


@dataclasses.dataclass(frozen=True)
class GainCellSweep(Validated):
    """What the gain-cell characterization sweeps (grids, times, Monte Carlo)."""

    n_store: int = param(50, "", 3, 1000, "V_store grid points over 0..vdd")
    n_in: int = param(51, "", 2, 1000, "V_in grid points over v_bl..v_in")
    n_write: int = param(46, "", 3, 400, "written voltages over 0..vdd")
    retention_time: float = param(10e-3, "s", 1e-9, 10.0, "retention transient length")
    retention_temps: tuple[float, ...] = param((27.0, 85.0), "degC", -55.0, 150.0,
                                               "retention temperatures")
    retention_starts: tuple[float, ...] = param((0.85, 0.65, 0.25, 0.05), "V", 0.0, 5.5,
                                                "voltages written before holding")
    mc_samples: int = param(200, "", 0, 100000, "Monte Carlo samples of Vt mismatch")
    mc_store: int = param(11, "", 3, 200, "V_store grid points of each Monte Carlo surface")
    mc_in: int = param(4, "", 2, 200, "V_in grid points of each Monte Carlo surface")
    mc_per_task: int = param(50, "", 1, 100000, "Monte Carlo samples per worker task")
    mc_seed: int = param(1, "", 0, 2**31 - 1, "seed of the Monte Carlo draws")
    # Pelgrom: sigma(dVt) = A_VT / sqrt(W L). A_VT ~ 3.5 mV*um is a typical 65-nm value
    # (Pelgrom et al., IEEE JSSC 1989 for the law; Kinget, JSSC 2005 for 65/90-nm magnitudes).
    a_vt: float = param(3.5e-3, "V*um", 0.0, 0.1, "Pelgrom threshold-mismatch coefficient")
    tile_write: str = param("transistors", doc="how the opt-in tile analysis stores its keys: written through "
                            "the write transistors (the kernel then predicts through the write-transfer surrogate) "
                            "or set as initial conditions", choices=("transistors", "initial"))

    def check_given(self, given):
        if "mc_per_task" in given and 0 < self.mc_samples < self.mc_per_task:
            raise ParameterError("mc_per_task", self.mc_per_task,
                                 f"at most mc_samples ({self.mc_samples}): samples per task out of all samples")
