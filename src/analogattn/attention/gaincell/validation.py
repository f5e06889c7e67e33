"""The gain-cell kernel's score-tile charges against SPICE of a whole tile (``gaincell/tile``).

For every draw of the characterization (a query's signed pulses on 64 rows, key columns whose
cells are written and hold for the draw's age) the kernel computes the column's charge through its
own code path: the cache holds the stored voltages at the key's position (cells written through
their write transistors in SPICE, ``through_write_transistor`` = 1: the kernel's own store path,
the write-transfer surrogate applied to the write bit-line voltage; cells set as initial
conditions: the voltages themselves), the
query reads at position + age, :meth:`GainCellAttention.attend` expands the decay in its
separable terms read from the 65537-point tables and forms the tile's charge with its GEMM; a
recorder takes that charge before the clamp and ADC (converters off, read noise and mismatch off,
pulses already on the 16-level grid so the DAC is exact). The kernel reads the absolute cell
current (``predistort`` off: the differential read subtracts a reference column's constant charge
per query, cells at V_eq that do not decay; the decay expansion is the same code).

Scores: NRMSE = rms(kernel - SPICE) / full scale, full scale = rows x t_max x the largest |cell
current| at the read amplitude; the same with the kernel fed the storage voltages SPICE had just
before the read and no decay (the read path alone); the read disturb (storage voltage after the
read minus before), mean and rms over every cell; for written tiles, the write-transfer
surrogate against the stored voltage SPICE had after the write (rms, V).
"""
from __future__ import annotations

import numpy as np

from ..base import Mask
from ..recorders import Recorder
from .config import GainCellConfig
from .device import CellModel
from .kernel import GainCellAttention
from .scalers import Scalers

TARGET = 0.01


class _Charges(Recorder):
    wants_score_tiles = True

    def __init__(self):
        self.x = []

    def score_tile(self, layer, kv_head, b0, k0, x):
        self.x.append(np.array(x, np.float64))


def kernel_charges(cell: CellModel, u, v_cols, ages, token_period: float, levels: int = 16, readout=None,
                   written: bool = False, **options):
    """Kernel charges (draws, cols) for pulses u (draws, rows), cells v_cols (draws, rows, cols)
    written at position 0 and read at position ``ages`` (draws,); ``written``: v_cols are the
    write bit-line voltages, stored through the kernel's store path (the write transfer), else
    the stored voltages themselves; ``options``: more config leaves."""
    n, rows = u.shape
    cfg = GainCellConfig(input_levels=levels, storage_levels=0, output_levels=0, adc_bits=0, window=0,
                         token_period=token_period, predistort=False, query_scale=False, rows=rows,
                         circuit_read_noise=False, mismatch=False, **options)
    sc = Scalers.identity(1, 1, 1, cell)
    out = np.full(v_cols.shape[::2], np.nan)
    for i in range(n):
        for c in range(v_cols.shape[2]):
            rec = _Charges()
            ker = GainCellAttention(cell, cfg, sc, recorder=rec, readout=readout)
            readout = ker.readout
            cache = ker.new_cache(0, 1, rows)
            vk = v_cols[i, :, c][None, None, :]
            if written:
                vk = ker.readout.store(vk, np.ones(1), np.zeros(1))
            cache.append(vk, vk, np.array([0]))
            ker.attend(u[i][None, None, :].astype(np.float32), np.array([int(ages[i])]), Mask(), cache, 0)
            out[i, c] = sum(float(x[0, 0]) for x in rec.x)
    return out


def validate(cell: CellModel, tile: dict) -> dict:
    u, v, age = tile["u"], tile["v_written"], tile["age_tokens"]
    tp, spice = float(tile["token_period"]), tile["charge"]
    vgrid = np.linspace(0.0, cell.vdd, 401)
    fs = u.shape[1] * cell.t_max * float(np.max(np.abs(cell.current(vgrid))))
    written = bool(np.asarray(tile.get("through_write_transistor", 0)))
    k = kernel_charges(cell, u, v, age, tp, written=written)
    ok = np.isfinite(spice) & np.isfinite(k)
    out = {"nrmse_full_scale": float(np.sqrt(np.mean((k[ok] - spice[ok]) ** 2)) / fs),
           "max_abs_error_full_scale": float(np.max(np.abs(k[ok] - spice[ok])) / fs),
           "draws": int(u.shape[0]), "columns": int(ok.sum()), "full_scale_C": fs,
           "through_write_transistor": int(written)}
    if written and "v_stored" in tile:
        d = np.asarray(cell.write(np.asarray(v, float)), float) - tile["v_stored"]
        d = d[np.isfinite(d)]
        out["write_transfer_rms_V"] = float(np.sqrt(np.mean(d ** 2))) if d.size else float("nan")
    if "v_before" in tile:
        k0 = kernel_charges(cell, u, tile["v_before"], np.zeros_like(age), 0.0)
        ok0 = np.isfinite(spice) & np.isfinite(k0)
        out["nrmse_read_path"] = float(np.sqrt(np.mean((k0[ok0] - spice[ok0]) ** 2)) / fs)
        d = tile["v_after"] - tile["v_before"]
        d = d[np.isfinite(d)]
        out["read_disturb_mean_V"] = float(d.mean()) if d.size else float("nan")
        out["read_disturb_rms_V"] = float(np.sqrt(np.mean(d ** 2))) if d.size else float("nan")
    return out
