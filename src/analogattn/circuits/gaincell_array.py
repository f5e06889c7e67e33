"""Netlist of a gain-cell tile as the kernel uses it (``tile`` analysis).

``rows`` cells on each bit line (one key per column, rows = head dimensions), ``cols`` key
columns. Every cell is the family's cell (devices through the technology layer). The absolute
column charges are simulated; the kernel's differential read subtracts a reference column's
charge (cells at V_eq, which do not decay), a constant per query.

- Storage: each storage node starts at its written voltage (``.ic``: the cells are set as initial
  conditions, not written through their write transistors), then the tile holds for ``t_hold``
  (write word line at wwl_hold, write bit lines at v_bl, RWL = RWLB = v_bl): the cells leak as
  they do in the retention analysis.
- Read: the query as the kernel's two-phase signed pulses: in phase 1 the rows with a positive
  query element pulse RWL to v_in and RWLB to vdd - v_in for u t_max, in phase 2 the negative
  ones (the integration sign inverted digitally); edges t_edge, the width counted between the
  edges' midpoints.
- Bit lines: each held at v_bl by an ideal op-amp (VCVS of gain ``a_ol``) integrating on a
  feedback capacitor ``c_f`` (with a 1 GOhm DC path for the operating point): the charge the
  column sinks in a phase is c_f times the rise of the integrator output over that phase.
"""
from __future__ import annotations

from .gaincell import GainCellParams

C_F, A_OL, R_DC = 1e-12, 1e6, 1e9


def tile_times(p: GainCellParams, t_hold: float, t_max: float) -> dict:
    e = p.t_edge
    t1 = t_hold + 1e-9                      # phase 1 starts
    t1e = t1 + t_max + 2 * e + 0.5e-9         # phase 1 sampled
    t2 = t1e + 0.5e-9                         # phase 2 starts
    t2e = t2 + t_max + 2 * e + 0.5e-9
    return {"hold_end": t_hold, "p1": t1, "p1_end": t1e, "p2": t2, "p2_end": t2e, "stop": t2e + 0.5e-9}


def _pulse(p, t0, width, hi, lo_rest):
    """PWL of a pulse from lo_rest to hi starting at t0 whose width between edge midpoints is width."""
    e = p.t_edge
    if width <= 0:
        return f"{lo_rest:.9g}"
    return (f"pwl(0 {lo_rest:.9g} {t0:.9g} {lo_rest:.9g} {t0 + e:.9g} {hi:.9g} "
            f"{t0 + width:.9g} {hi:.9g} {t0 + width + e:.9g} {lo_rest:.9g})")


def tile_netlist(p: GainCellParams, v_store, u, t_max: float, t_hold: float) -> str:
    """v_store (rows, cols) initial storage voltages of the key columns; u (rows,) signed pulse
    fractions; t_hold the hold before the read."""
    rows, cols = len(v_store), len(v_store[0])
    tm = tile_times(p, t_hold, t_max)
    vb = p.v_bl
    out = [p.header(f"{p.name} tile {rows}x{cols}"),
           f"vwwl wwl 0 {p.wwl_hold}\nvwbl wbl 0 {vb}\nvref vref 0 {vb}\n"]
    for r in range(rows):
        x = float(u[r])
        t0 = tm["p1"] if x > 0 else tm["p2"]
        w = abs(x) * t_max
        out.append(f"vrwl{r} rwl{r} 0 {_pulse(p, t0, w, p.v_in, vb)}\n"
                   f"vrwlb{r} rwlb{r} 0 {_pulse(p, t0, w, p.vdd - p.v_in, vb)}\n")
    ics = []
    for c in range(cols):
        out.append(f"eamp{c} int{c} 0 vref bl{c} {A_OL:g}\ncf{c} bl{c} int{c} {C_F:g}\nrdc{c} bl{c} int{c} {R_DC:g}\n")
        for r in range(rows):
            tag = f"{r}_{c}"
            out.append(p.cell(tag, "wbl", "wwl", f"rwl{r}", f"rwlb{r}", f"bl{c}", f"sn{tag}"))
            ics.append(f"v(sn{tag})={float(v_store[r][c]):.9g}")
    for k in range(0, len(ics), 8):
        out.append(".ic " + " ".join(ics[k:k + 8]) + "\n")
    out.append(".end\n")
    return "".join(out)
