"""Power of the ReRAM column's transimpedance amplifier: a stated model (the characterization's
TIA is an ideal op-amp, so its power is not simulated).

The TIA is taken as a two-stage Miller-compensated op-amp with feedback R_f, powered for each
column evaluation. Design relations (Sansen, *Analog Design Essentials*, Springer 2006, ch. 6:
GBW = gm1 / (2 pi C_c); gm2 >= 2.2 gm1 C_L / C_c for about 60 degrees of phase margin; the gm/I_D
sizing of Jespers, *The gm/ID Methodology*, Springer 2010, gm/I_D ~ 15 /V in moderate inversion):

- the closed loop must settle to ``settle_error`` (1 %, the characterization's settling
  criterion) within ``settle_fraction`` of the read pulse: f_cl = ln(1/err) / (2 pi t_settle);
- feedback factor beta = R_col / (R_col + R_f), R_col the column seen from the virtual ground
  (``rows`` cells at the mean programmed conductance in parallel): GBW = f_cl / beta;
- first stage: gm1 = 2 pi GBW C_c, I_1 = gm1 / (gm/I_D), drawn twice (the differential pair's two
  branches); second stage: gm2 = 2.2 gm1 C_L / C_c, I_2 = gm2 / (gm/I_D);
- energy per evaluation: vdd (2 I_1 + I_2) t_read (biased only while the column is read).

Defaults: C_c = 50 fF, C_L = 20 fF (comparator input and wiring), vdd = 1.0 V. With the
default column (64 rows, 1-10 uS, R_f = 5 kOhm, 10 ns read) about 25 uW, 0.25 pJ per evaluation.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class TiaPower:
    c_c: float = 50e-15
    c_l: float = 20e-15
    gm_id: float = 15.0
    vdd: float = 1.0
    settle_error: float = 0.01
    settle_fraction: float = 0.5

    def currents(self, r_f: float, g_mean: float, rows: int, t_read: float) -> dict:
        r_col = 1.0 / max(g_mean * rows, 1e-30)
        beta = r_col / (r_col + r_f)
        f_cl = math.log(1.0 / self.settle_error) / (2 * math.pi * self.settle_fraction * t_read)
        gbw = f_cl / beta
        gm1 = 2 * math.pi * gbw * self.c_c
        gm2 = 2.2 * gm1 * self.c_l / self.c_c
        i1, i2 = gm1 / self.gm_id, gm2 / self.gm_id
        return {"beta": beta, "gbw_hz": gbw, "i_stage1_A": 2 * i1, "i_stage2_A": i2,
                "power_W": self.vdd * (2 * i1 + i2)}

    def energy(self, r_f: float, g_mean: float, rows: int, t_read: float) -> float:
        """Energy (J) of one column evaluation."""
        return self.currents(r_f, g_mean, rows, t_read)["power_W"] * t_read


def tia_energy_from_bundle(bundle, default_t=10e-9) -> float:
    """The TIA energy per column evaluation for the bundle's column (defaults without one)."""
    meta = bundle["reram.column"].meta if bundle is not None and "reram.column" in bundle else {}
    g_max = float(meta.get("g_max", 10e-6))
    on_off = float(meta.get("on_off", 10.0))
    t = float(bundle["reram.time"]()) if bundle is not None and "reram.time" in bundle else default_t
    return TiaPower().energy(float(meta.get("r_f", 5e3)), 0.5 * (g_max + g_max / on_off), int(meta.get("rows", 64)), t)
