"""Netlist of a gain-cell tile as the kernel uses it (``tile`` analysis).

``rows`` cells on each bit line (one key per column, rows = head dimensions), ``cols`` key
columns. Every cell is the family's cell (devices through the technology layer). The absolute
column charges are simulated; the kernel's differential read subtracts a reference column's
charge (cells at V_eq, which do not decay), a constant per query.

- Storage, two modes:

  * ``written`` (the default of the ``tile`` analysis): every cell written through its own write
    transistor. The write bit lines are shared along a row (WBL_r), each key column has its word
    line (WWL_c): column c is written in its slot (WBL_r at the column's value, WWL_c boosted to
    wwl_high for t_write with edges t_edge, as the write-transfer analysis writes), the columns
    one after another (a slot is t_write + 2 t_edge + 1 ns; column 0 then holds a slot longer than
    the last one: ~10 ns, against hold times of 0 to 66 us). No initial conditions: the storage
    nodes start from the operating point with the word lines at wwl_hold, as in the
    write-transfer analysis. The stored voltage is sampled ``WRITE_SETTLE`` after the last word
    line falls (the write-transfer surrogate's sampling point), and the hold counts from there.
  * ``initial``: each storage node starts at its voltage (``.ic``: initial conditions, no write).

  Then the tile holds for ``t_hold`` (word lines at wwl_hold, write bit lines at v_bl, RWL = RWLB =
  v_bl): the cells leak as they do in the retention analysis.
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
WRITE_SETTLE = 5e-9  # after the last word line falls: the write-transfer analysis's sampling point


def write_slot(p: GainCellParams) -> float:
    return p.t_write + 2 * p.t_edge + 1e-9


def tile_times(p: GainCellParams, t_hold: float, t_max: float, written_cols: int = 0) -> dict:
    """Time line; ``written_cols`` > 0: that many column write slots first, the hold counted from
    ``write_end`` (WRITE_SETTLE after the last word line falls)."""
    e = p.t_edge
    t_w = 0.0
    if written_cols:
        t_w = (written_cols - 1) * write_slot(p) + 0.5e-9 + 2 * e + p.t_write + WRITE_SETTLE
        t_hold = t_w + t_hold
    t1 = t_hold + 1e-9                      # phase 1 starts
    t1e = t1 + t_max + 2 * e + 0.5e-9         # phase 1 sampled
    t2 = t1e + 0.5e-9                         # phase 2 starts
    t2e = t2 + t_max + 2 * e + 0.5e-9
    out = {"hold_end": t_hold, "p1": t1, "p1_end": t1e, "p2": t2, "p2_end": t2e, "stop": t2e + 0.5e-9}
    if written_cols:
        out["write_end"] = t_w
    return out


def _pulse(p, t0, width, hi, lo_rest):
    """PWL of a pulse from lo_rest to hi starting at t0 whose width between edge midpoints is width."""
    e = p.t_edge
    if width <= 0:
        return f"{lo_rest:.9g}"
    return (f"pwl(0 {lo_rest:.9g} {t0:.9g} {lo_rest:.9g} {t0 + e:.9g} {hi:.9g} "
            f"{t0 + width:.9g} {hi:.9g} {t0 + width + e:.9g} {lo_rest:.9g})")


def _write_sources(p: GainCellParams, v_store, rows: int, cols: int) -> str:
    """WWL_c (one slot per column) and WBL_r (the column's value during its slot, then v_bl)."""
    e, vb, slot = p.t_edge, p.v_bl, write_slot(p)
    out = []
    for c in range(cols):
        s0 = c * slot + 0.5e-9  # word line starts rising
        out.append(f"vwwl{c} wwl{c} 0 pwl(0 {p.wwl_hold} {s0:.9g} {p.wwl_hold} {s0 + e:.9g} {p.wwl_high} "
                   f"{s0 + e + p.t_write:.9g} {p.wwl_high} {s0 + 2 * e + p.t_write:.9g} {p.wwl_hold})\n")
    for r in range(rows):
        pts = [(0.0, float(v_store[r][0]))]
        for c in range(1, cols):  # change in the gap after column c-1's word line is down
            t = (c - 1) * slot + 0.5e-9 + 2 * e + p.t_write + 0.25e-9
            pts += [(t, float(v_store[r][c - 1])), (t + min(e, 0.5e-9), float(v_store[r][c]))]
        t = (cols - 1) * slot + 0.5e-9 + 2 * e + p.t_write + 0.5e-9  # as the write-transfer analysis
        pts += [(t, float(v_store[r][cols - 1])), (t + e, vb)]
        out.append(f"vwbl{r} wbl{r} 0 pwl(" + " ".join(f"{a:.9g} {b:.9g}" for a, b in pts) + ")\n")
    return "".join(out)


def tile_netlist(p: GainCellParams, v_store, u, t_max: float, t_hold: float, written: bool = False) -> str:
    """v_store (rows, cols) voltages of the key columns (``written``: driven on the write bit
    lines through the write transistors; else the storage nodes' initial conditions); u (rows,)
    signed pulse fractions; t_hold the hold before the read (after the write's settling)."""
    rows, cols = len(v_store), len(v_store[0])
    tm = tile_times(p, t_hold, t_max, cols if written else 0)
    vb = p.v_bl
    if written:
        out = [p.header(f"{p.name} tile {rows}x{cols} written through the write transistors"),
               _write_sources(p, v_store, rows, cols), f"vref vref 0 {vb}\n"]
    else:
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
            if written:
                out.append(p.cell(tag, f"wbl{r}", f"wwl{c}", f"rwl{r}", f"rwlb{r}", f"bl{c}", f"sn{tag}"))
                continue
            out.append(p.cell(tag, "wbl", "wwl", f"rwl{r}", f"rwlb{r}", f"bl{c}", f"sn{tag}"))
            ics.append(f"v(sn{tag})={float(v_store[r][c]):.9g}")
    for k in range(0, len(ics), 8):
        out.append(".ic " + " ".join(ics[k:k + 8]) + "\n")
    out.append(".end\n")
    return p.technology.finish("".join(out))
