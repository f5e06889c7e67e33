"""Training-free calibration of the gain-cell kernel, through the shared capture harness
(:mod:`..capture`): per-channel equalisation and ranges, value-tile full scales, and the output
scaler by the paper's mean/std rule or least squares. The model is an argument (duck-typed)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import ParameterError
from .. import capture as cap
from .. import stats  # stats.quantile: np.quantile's values, faster on large arrays
from ..base import IdealAttention
from ..cache import KVCache
from ..recorders import TileQuantiles
from .config import GainCellConfig
from .device import CellModel
from .kernel import GainCellAttention
from .scalers import Scalers


def calibrate_ranges(model, token_windows, cell: CellModel, quantile: float = 0.999, headroom: float = 0.9,
                     kernel: GainCellAttention | None = None, equalise: bool = True,
                     score_quantile: float | None = None, score_margin: float = 1.0,
                     captured: cap.Captured | None = None):
    """Training-free range calibration: per layer and head, the ``quantile`` of |q| maps to a full
    pulse and that of |k| and |v| to ``headroom`` x (VDD/2) around mid-rail (with pre-distortion:
    x I_sym); score tiles' full scale at the quantile of |q.k|; the value tiles' at max |v|.
    Output scaler: 1 / (t_max dI/dV) so a linear cell gives back sum p v (refined by
    :func:`calibrate_tiles` and :func:`calibrate_output`).

    The statistics are taken on a pass of the ideal kernel over the *equalised* q, k, v (as since
    the first calibration; with equalisation its outputs are v / v_chan, so the statistics of
    later layers come from a perturbed model: kept for identical numbers, see issue #13)."""
    c = model.config
    if equalise:
        captured = captured if captured is not None else cap.capture(model, token_windows)
        k_chan, v_chan = captured.channel_scales()
    else:
        k_chan, v_chan = None, None
    score_quantile = quantile if score_quantile is None else score_quantile

    def equalised(q, k, v, layer):  # what the arrays will see
        if k_chan is None:
            return q, k, v
        g = q.shape[0] // k.shape[0]
        return (q * np.repeat(k_chan[layer], g, axis=0)[:, None, :], k / k_chan[layer][:, None, :],
                v / v_chan[layer][:, None, :])

    qs_, ks_, vs_, qk_ = ([[[] for _ in range(n)] for _ in range(c.n_layers)]
                          for n in (c.n_heads, c.n_kv_heads, c.n_kv_heads, c.n_heads))

    def see(layer, q, k, v, positions, mask):
        g = q.shape[0] // k.shape[0]
        for h in range(q.shape[0]):
            qs_[layer][h].append(stats.quantile(np.abs(q[h]), quantile))
            qk_[layer][h].append(stats.quantile(np.abs(q[h] @ k[h // g].T), score_quantile))
        for j in range(k.shape[0]):
            ks_[layer][j].append(stats.quantile(np.abs(k[j]), quantile))
            vs_[layer][j].append(stats.quantile(np.abs(v[j]), quantile))

    cap.run(model, token_windows, cap.Tap(IdealAttention(), see, equalised))
    qs, ks, vs, qk = (np.array([[np.mean(x) for x in layer] for layer in a]) for a in (qs_, ks_, vs_, qk_))
    sc = Scalers.identity(c.n_layers, c.n_heads, c.n_kv_heads, cell)
    sc.k_chan, sc.v_chan = k_chan, v_chan
    predistort = kernel is not None and kernel.cfg.array.predistort
    half = headroom if predistort else headroom * cell.vdd / 2  # fraction of I_sym, or volts
    sc.a_q = 1.0 / np.maximum(qs, 1e-9)
    sc.a_k = half / np.maximum(ks, 1e-9)
    sc.a_v = half / np.maximum(vs, 1e-9)
    # score tiles: full scale at the quantile of |q.k| mapped through the scalers and the cell gain
    gain = kernel.unit_charge() if kernel is not None else cell.gain()
    kv_of = np.arange(c.n_heads) // (c.n_heads // c.n_kv_heads)
    sc.score_scale = score_margin * gain * sc.a_q * sc.a_k[:, kv_of] * qk
    # hardsigmoid: the calibration quantile of |q.k| saturates the pulse (training-free S_sat)
    sc.s_sat = sc.score_scale.copy()
    sc.out_scale = gain * sc.a_v[:, kv_of] * vs[:, kv_of]  # a value tile's output at most ~ max |v|
    return sc


def calibrate_tiles(model, token_windows, kernel: GainCellAttention, quantile: float = 0.999,
                    margin: float = 1.1):
    """Set each head's value-tile full scale to ``margin`` x the ``quantile`` of |tile output|
    seen on calibration text, instead of the worst case: the model runs through the circuit
    (a twin of ``kernel`` with output digitisation off, sharing its scalers, cell tables and
    random generator), and each (query block, tile) gives the quantile over the rows that drive
    it; the largest of those per head is taken."""
    tiles = TileQuantiles(quantile)
    twin = GainCellAttention(kernel.cell, kernel.cfg.replace(output_levels=0), kernel.sc, recorder=tiles,
                             rng=kernel.rng, block=kernel.block, readout=kernel.readout)
    cap.run(model, token_windows, twin)
    for (layer, h), vals in tiles.per_head.items():
        kernel.sc.out_scale[layer, h] = margin * float(np.max(vals))
    return kernel.sc


def calibrate_output(model, token_windows, kernel: GainCellAttention, method: str = "lstsq",
                     captured: cap.Captured | None = None):
    """Per layer and head, fit the output scaler so the circuit's attention output matches the
    ideal model's on calibration text, each layer fed the ideal model's own q, k, v (no error
    build-up during calibration; ``captured`` on the windows, else captured here).

    - ``meanstd``: the paper's rule for a scaler, a <- a sigma_ideal / sigma, b <- b + mu_ideal - mu
      (applied once, exactly, instead of iterated with damping: with q, k, v fixed it converges
      in one step);
    - ``lstsq``: least squares of the ideal output on the circuit output (slope and offset), which
      minimises the output error instead of matching two moments.
    """
    if method not in ("lstsq", "meanstd"):
        raise ParameterError("calibration", method, "lstsq or meanstd")
    c = model.config
    n_win = len(token_windows)
    if captured is None:
        captured = cap.capture(model, token_windows)
    sc = kernel.sc
    base = 1.0 / kernel.cell.gain()
    for layer in range(c.n_layers):
        sc.a_o[layer, :], sc.b_o[layer, :] = base, 0.0
        xs, ys = [], []
        for q, k, v, pos, mask in captured.layer(layer, n_win):
            ys.append(IdealAttention()(q, k, v, pos, mask, KVCache(c.n_kv_heads, c.head_dim), layer))
            xs.append(kernel(q, k, v, pos, mask, kernel.new_cache(layer, c.n_kv_heads, c.head_dim), layer))
        x = np.concatenate(xs, axis=1).astype(np.float64)
        y = np.concatenate(ys, axis=1).astype(np.float64)
        for h in range(c.n_heads):
            xh, yh = x[h].ravel(), y[h].ravel()
            if not (np.isfinite(xh).all() and np.isfinite(yh).all()):
                raise ParameterError(f"calibration (layer {layer}, head {h})", "non-finite output",
                                     "finite kernel outputs on the calibration text")
            if method == "meanstd":
                a = yh.std() / max(xh.std(), 1e-30)
                b = yh.mean() - a * xh.mean()
            else:
                xc = xh - xh.mean()  # closed-form least squares (polyfit's SVD fails on degenerate heads)
                a = float((xc * (yh - yh.mean())).sum() / max((xc * xc).sum(), 1e-300))
                b = yh.mean() - a * xh.mean()
            sc.a_o[layer, h], sc.b_o[layer, h] = a * base, b
    return sc


def calibrated_kernel(model, token_windows, cell: CellModel, config: GainCellConfig, method: str | None = None,
                      equalise: bool | None = None, ranges: Scalers | None = None,
                      captured: cap.Captured | None = None, **range_options):
    """A gain-cell kernel with every calibration step: ranges (or a copy of ``ranges`` from an
    earlier call: they do not depend on levels or activation), value-tile full scales on the first
    window, and the output scaler by ``method`` (meanstd | lstsq | none; default: the config's).
    ``captured``: the ideal model's q, k, v on ``token_windows`` (:func:`..capture.capture`), shared
    between calls. The kernel returned is the one calibrated (its random generator has drawn the
    calibration's mismatch and noise). Returns (kernel, ranges)."""
    cal = config.calibrate
    method = cal.calibration if method is None else method
    equalise = cal.equalise if equalise is None else equalise
    plain = GainCellAttention(cell, config, None)  # its cell tables set the ranges' charge unit
    if ranges is None:
        if equalise and captured is None:
            captured = cap.capture(model, token_windows)
        opts = dict(quantile=cal.range_quantile, headroom=cal.headroom, score_margin=cal.score_margin)
        ranges = calibrate_ranges(model, token_windows, cell, kernel=plain, equalise=equalise, captured=captured,
                                  **{**opts, **range_options})
    sc = dataclasses.replace(ranges, a_o=ranges.a_o.copy(), b_o=ranges.b_o.copy(), out_scale=ranges.out_scale.copy())
    kernel = GainCellAttention(cell, config, sc, readout=plain.readout)
    calibrate_tiles(model, token_windows[:1], kernel, cal.tile_quantile, cal.tile_margin)
    if method != "none":
        if captured is None:
            captured = cap.capture(model, token_windows[:1])
        calibrate_output(model, token_windows[:1], kernel, method, captured)
    return kernel, ranges
