"""The gain-cell kernel's calibrated per-layer, per-head scalers and their calibration file."""
from __future__ import annotations

import dataclasses

import numpy as np

from .device import CellModel


@dataclasses.dataclass
class Scalers:
    """Per-layer, per-head affine maps (arrays of shape (layers, heads))."""

    a_q: np.ndarray
    b_q: np.ndarray
    a_k: np.ndarray
    b_k: np.ndarray
    a_v: np.ndarray
    b_v: np.ndarray
    a_o: np.ndarray
    b_o: np.ndarray
    s_sat: np.ndarray        # hardsigmoid saturation (charge, C)
    score_scale: np.ndarray  # full scale of a score tile's digitised output (charge, C)
    out_scale: np.ndarray    # full scale of a value tile's digitised output (charge, C)
    # per-channel equalisation (layers, kv_heads, head_dim), exact in ideal arithmetic:
    # k / k_chan is stored and q x k_chan applied (digital, before the DAC); v / v_chan is stored
    # and the output multiplied by v_chan (digital, after the ADC). None = off.
    k_chan: np.ndarray | None = None
    v_chan: np.ndarray | None = None

    def save(self, path, meta: dict | None = None):
        from .. import calfile
        calfile.save(path, "gaincell", dataclasses.asdict(self), meta or {})

    @classmethod
    def load(cls, path, expect: dict | None = None):
        from .. import calfile
        names = [f.name for f in dataclasses.fields(cls)]
        arrays, _ = calfile.load(path, "gaincell", [n for n in names if n not in ("k_chan", "v_chan")],
                                 ("k_chan", "v_chan"), expect)
        return cls(**arrays)

    @classmethod
    def identity(cls, layers, heads, kv_heads, cell: CellModel):
        """q in [-1, 1] per unit, k and v centred on mid-rail with a 1 V/unit gain; the output
        scaler undoes t_max x dI/dV so an ideal cell reproduces exact attention."""
        one = np.ones((layers, heads))
        kv1 = np.ones((layers, kv_heads))
        gain = cell.gain()
        i_fs = float(np.max(np.abs(cell.current(np.array([0.0, cell.vdd])))))
        # physical full scales: every cell of a 64-row score column at full current; a value tile
        # driven by softmax weights (sum <= 1) at most one full-current cell's charge
        return cls(one.copy(), 0 * one, kv1.copy(), cell.v_mid * kv1, kv1.copy(), cell.v_mid * kv1,
                   one / gain, 0 * one, np.full((layers, heads), np.inf), 64 * cell.t_max * i_fs * one,
                   cell.t_max * i_fs * one)
