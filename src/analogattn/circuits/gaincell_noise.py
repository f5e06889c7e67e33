"""Netlist of the gain cell's read-noise analysis (ngspice ``.noise``).

One cell (the read-surface cell, devices through the technology layer) with its storage node
forced by ``vst`` (the noise analysis' input source, AC 1), RWL at ``vrwl``, RWLB at ``vrwlb``
(= vdd - V_in, set by the worker with ``alter``), and the bit line held at v_bl by ``vbl``, whose
current a noiseless current-controlled voltage source ``hout`` (1 V/A) turns into the output
voltage: the output noise spectral density in V^2/Hz is the bit-line current noise in A^2/Hz
(channel thermal and flicker noise of the read stack; the write transistor's noise reaches the
bit line through the storage node, which vst holds, so it is not included).
"""
from __future__ import annotations

from .gaincell import GainCellParams


def read_noise_netlist(p: GainCellParams) -> str:
    return (p.header(f"{p.name} read noise (.noise)")
            + f"vst sn 0 DC {p.v_bl} AC 1\n"
            f"vrwl rwl 0 {p.v_in}\n"
            f"vrwlb rwlb 0 {p.vdd - p.v_in:.9g}\n"
            f"vbl bl 0 {p.v_bl}\n"
            "hout out 0 vbl 1\n"
            f"vwwl wwl 0 {p.wwl_hold}\n"
            f"vwbl wbl 0 {p.v_bl}\n"
            + p.cell(0, "wbl", "wwl", "rwl", "rwlb", "bl", "sn")
            + ".end\n")
