"""Netlist of the gain cell's write Monte Carlo (``write_mismatch`` analysis).

Cells written at once through their own write transistors, one cell per (sample, written
voltage): WBL_j at the written voltage j during the write (shared by the samples), one WWL pulse
(boosted to wwl_high for t_write) for every cell, then WBL back to v_bl, the read stack idle
(RWL = RWLB = BL = v_bl). Each sample's write transistor carries its own threshold shift through
the process's mismatch hook (``Mosfet.dvt``), so the stored voltage after WWL falls differs by
the transistor's drive at the end of the write and by its channel charge injected and gate
feedthrough as WWL falls. The time line is the write-read transient's (``write_read_times``).

A process whose models draw their own mismatch (SKY130's ``mc_mm_switch``) takes no shifts:
the samples' shifts are ``None`` and ``seed`` switches the PDK's mismatch on for the netlist, so
every instance (write transistor and read stack) is an independent draw of the PDK's statistical
models (vth0, toxe, voff, nfactor ... as the PDK defines them); ``seed`` None: mismatch off.
"""
from __future__ import annotations

import dataclasses

from .gaincell import GainCellParams


def write_mc_netlist(p: GainCellParams, v_written, dvt_write, seed: int | None = None) -> str:
    """Cells ``c<s>_<j>`` for sample s (threshold shift dvt_write[s] on the write transistor, V;
    None: no shift) and written voltage j; storage nodes ``sn<s>_<j>``. ``seed``: the netlist
    draws the process's own mismatch models with that simulator seed."""
    proc = p.technology.as_process()
    tm, e, vb = p.write_read_times(), p.t_edge, p.v_bl
    w_end = tm["write_end"]
    title = f"{p.name} write Monte Carlo" + (f" (process mismatch, seed {seed})" if seed is not None else "")
    lines = [p.header(title, seed=seed),
             f"vwwl wwl 0 pwl(0 {p.wwl_hold} {e:.6g} {p.wwl_high} {e + p.t_write:.6g} {p.wwl_high} "
             f"{w_end:.6g} {p.wwl_hold})\n",
             f"vidle idle 0 {vb}\n"]
    for j, v in enumerate(v_written):
        lines.append(f"vwbl{j} wbl{j} 0 pwl(0 {v:.6g} {w_end + 0.5e-9:.6g} {v:.6g} {w_end + 0.5e-9 + e:.6g} {vb})\n")
    for s, dv in enumerate(dvt_write):
        for j in range(len(v_written)):
            tag = f"{s}_{j}"
            m = p.mosfets(tag, f"wbl{j}", "wwl", "idle", "idle", "idle", f"sn{tag}")
            mw = dataclasses.replace(m["mw"], dvt=float(dv)) if dv is not None else m["mw"]
            lines.append(proc.mos(mw) + f"cs{tag} sn{tag} 0 {p.c_store:.6g}\n" + proc.mos(m["mp"]) + proc.mos(m["mn"]))
    lines.append(".end\n")
    return p.technology.finish("".join(lines))
