"""Silicon area of the attention arrays: a stated model per circuit family.

Every number is either taken from the design (transistor W and L, storage capacitance, array rows,
converter resolutions) or a constant below with its source or, where none is precise, marked as
our estimate. Areas in um^2.

- Transistor footprint: (W + DW) x (L + DL) x ``layout_factor``. DW = 0.2 um: active-region spacing
  shared with the neighbour (about 0.1 um each side at 65 nm); DL = 0.26 um: one contacted
  source/drain region per device (contacted gate pitch 0.22-0.26 um at 65 nm: Bai et al., "A 65nm
  logic technology...", IEDM 2004, 220 nm pitch). Check: six minimum devices (W 0.12, L 0.06 um)
  give 6 x 0.32 x 0.32 = 0.61 um^2, against the 0.57 um^2 6T SRAM cell of the same paper.
- Storage capacitor: MIM at 2 fF/um^2 (ITRS 2007, RF and analog/mixed-signal technologies table:
  MIM density 2 fF/um^2 at the 65-nm node), in the top metals, so it stacks over the cell's
  transistors (cell area = the larger of the two); or a MOS capacitor at 18 fF/um^2 (gate oxide of
  1.9 nm equivalent thickness: eps_ox / t_ox = 3.45e-11 F/m / 1.9e-9 m), beside the transistors.
- SAR ADC: 2^b unit capacitors of 2 um^2 (a 1 fF metal-oxide-metal unit at ~0.5 fF/um^2) plus
  400 um^2 of comparator, SAR logic and switches (our estimate; an 8-bit converter comes to
  ~900 um^2, within the 65-nm column ADCs of compute-in-memory macros, 500-5000 um^2).
- Pulse-width DAC / row driver: b flip-flops of 5 um^2 (a 65-nm standard-cell DFF), 2 b gates of
  1 um^2 (NAND2) and a 5 um^2 word-line driver (our estimate from standard-cell sizes).
- Comparator (StrongARM): its ten transistors from the comparator design, by the transistor rule.
- TIA (ReRAM columns): 200 um^2 per op-amp (our estimate, a two-stage op-amp with ~0.5 pF
  compensation at 2 fF/um^2 MIM is 250 um^2; we take the lower bound without compensation routing).
- ReRAM 1T1R cell: the access transistor by the transistor rule (the ReRAM device sits above it
  between metal layers).
"""
from __future__ import annotations

import dataclasses
import math

from ..params import Validated, param


@dataclasses.dataclass(frozen=True)
class AreaModel(Validated):
    dw_um: float = param(0.2, "um", 0.0, 10.0, "width overhead of a transistor footprint (active spacing)")
    dl_um: float = param(0.26, "um", 0.0, 10.0, "length overhead (one contacted source/drain region)")
    layout_factor: float = param(1.0, "", 0.1, 100.0, "routing/well overhead multiplying every footprint")
    mim_ff_per_um2: float = param(2.0, "fF/um^2", 0.01, 100.0, "MIM capacitor density")
    mos_ff_per_um2: float = param(18.0, "fF/um^2", 0.01, 100.0, "MOS capacitor density")
    capacitor: str = param("mim", choices=("mim", "mos"), doc="storage capacitor kind")
    adc_unit_um2: float = param(2.0, "um^2", 0.0, 1e4, "SAR ADC unit capacitor (x 2^bits)")
    adc_fixed_um2: float = param(400.0, "um^2", 0.0, 1e6, "SAR ADC comparator, logic and switches")
    dff_um2: float = param(5.0, "um^2", 0.0, 1e3, "flip-flop (pulse-width DAC counter bit)")
    gate_um2: float = param(1.0, "um^2", 0.0, 1e3, "logic gate (NAND2)")
    driver_um2: float = param(5.0, "um^2", 0.0, 1e4, "word-line driver")
    tia_um2: float = param(200.0, "um^2", 0.0, 1e6, "transimpedance amplifier per ReRAM column")

    def transistor(self, w_um: float, l_um: float) -> float:
        return (w_um + self.dw_um) * (l_um + self.dl_um) * self.layout_factor

    def capacitor_area(self, farad: float) -> float:
        dens = self.mim_ff_per_um2 if self.capacitor == "mim" else self.mos_ff_per_um2
        return farad * 1e15 / dens

    def adc(self, bits: int) -> float:
        return 0.0 if bits <= 0 else self.adc_fixed_um2 + (2 ** bits) * self.adc_unit_um2

    def dac(self, bits: int) -> float:
        bits = max(int(bits), 1)
        return bits * self.dff_um2 + 2 * bits * self.gate_um2 + self.driver_um2


def _bits(levels: int) -> int:
    return 0 if levels <= 0 else max(1, math.ceil(math.log2(levels)))


def gaincell_cell_um2(g, m: AreaModel = AreaModel()) -> float:
    """One gain cell: write NMOS, read PMOS and NMOS, storage capacitor (MIM over the devices, or a
    MOS capacitor beside them)."""
    dev = (m.transistor(g.w_write, g.l_write) + m.transistor(g.w_read_p, g.l_read)
           + m.transistor(g.w_read_n, g.l_read))
    cap = m.capacitor_area(g.c_store)
    return max(dev, cap) if m.capacitor == "mim" else dev + cap


def comparator_um2(c, m: AreaModel = AreaModel()) -> float:
    ws = [(c.w_tail, c.l_min), (c.w_in, c.l_in), (c.w_in, c.l_in), (c.w_latch_n, c.l_min), (c.w_latch_n, c.l_min),
          (c.w_latch_p, c.l_min), (c.w_latch_p, c.l_min)] + [(c.w_reset, c.l_min)] * 4
    return sum(m.transistor(w, l) for w, l in ws)


def gaincell_area(design, cfg, head_dim: int, m: AreaModel = AreaModel()) -> dict:
    """K and V arrays of ``rows`` x ``head_dim`` cells. K array: a query pulse DAC per column, one
    score ADC per row (``adc_bits``; hardsigmoid: a comparator-class converter per row). V array:
    a weight-pulse DAC per row and one ADC per column of ``output_levels``; one reference column
    per array (the differential read and the ratiometric reference)."""
    rows, d = cfg.rows, head_dim
    cell = gaincell_cell_um2(design.gaincell, m)
    in_bits = _bits(cfg.input_levels) or 8
    score_adc = m.adc(cfg.adc_bits) if cfg.activation == "softmax" else m.adc(1)
    k_arr = rows * (d + 1) * cell + d * m.dac(in_bits) + rows * score_adc
    v_arr = rows * (d + 1) * cell + rows * m.dac(in_bits) + d * m.adc(_bits(cfg.output_levels))
    per_array = (k_arr + v_arr) / 2
    return {"area_cell_um2": cell, "area_per_array_um2": per_array,
            "area_per_element_um2": (k_arr + v_arr) / (2 * rows * d)}


def sprint_area(design, cfg, head_dim: int, m: AreaModel = AreaModel()) -> dict:
    """Key crossbar of ``reram.rows`` x ``head_dim`` 1T1R cells (one key element per cell, its
    ``key_bits`` MSBs as a level) plus a reference column; a DAC per row (``dac_bits``), a TIA and
    a comparator per column (one key's score each)."""
    r = design.reram
    rows, d = r.rows, head_dim
    cell = m.transistor(r.w_access, r.l_access)
    arr = rows * (d + 1) * cell + rows * m.dac(cfg.dac_bits) + (d + 1) * m.tia_um2 + d * comparator_um2(design.comparator, m)
    return {"area_cell_um2": cell, "area_per_array_um2": arr, "area_per_element_um2": arr / (rows * d)}


def area_for(kernel_name: str, design, cfg, head_dim: int, m: AreaModel = AreaModel()) -> dict:
    """Area per stored K/V element and per array of a registered kernel; NaN for kernels without
    an area model (the ideal kernel's digital SRAM/DRAM is not modelled)."""
    if kernel_name == "gaincell":
        return gaincell_area(design, cfg, head_dim, m)
    if kernel_name == "sprint":
        return sprint_area(design, cfg, head_dim, m)
    nan = float("nan")
    return {"area_cell_um2": nan, "area_per_array_um2": nan, "area_per_element_um2": nan}
