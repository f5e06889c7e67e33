"""The pruning kernel's column currents against held-out SPICE of whole columns.

The kernel does not evaluate the column surrogate: it factorises the cell I-V table (rank 1 of
its SVD), replaces the loss's unweighted sum by the weighted one, and compares the key column
with a reference column of zero-code cells (differential TIA). This module drives
:meth:`SprintAttention.column_currents` (the kernel's own code path: its DAC codes, factors and
GEMMs) with the held-out query/key patterns of the characterization (``reram/patterns``) and
compares the result with the SPICE column currents; with ``reram/reference`` (the same queries
through a column of reference-level cells) the differential current I_col - I_ref too.

The kernel sets each query's DAC full scale to its largest element, so a pattern is read as
SPICE drove it only when its largest query level is the top DAC level: patterns without a
full-scale row (about 2% of random 64-row patterns at 16 levels) are left out and counted.
NRMSE = rms error / (max - min) of the SPICE values, as for every other surrogate.
"""
from __future__ import annotations

import math

import numpy as np

from .config import SprintConfig
from .device import Crossbar
from .kernel import SprintAttention

TARGET = 0.005  # NRMSE of the kernel's column currents against held-out SPICE


def _nrmse(pred, true) -> float:
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(pred) & np.isfinite(true)
    if ok.sum() < 2:
        return float("nan")
    return float(np.sqrt(np.mean((pred[ok] - true[ok]) ** 2)) / (true[ok].max() - true[ok].min()))


def kernel_columns(xbar: Crossbar, q_levels, k_levels, input_levels: int, ref_level: int | None = None):
    """The kernel's single-phase column currents (A) for patterns of DAC levels ``q_levels`` (P, rows)
    and conductance levels ``k_levels`` (P, rows), through ``column_currents``; and the kernel's
    reference-column current for each query. Returns (i_col, i_ref, used) with ``used`` the
    patterns whose largest query level is the DAC's full scale (the others are NaN)."""
    q_levels, k_levels = np.asarray(q_levels), np.asarray(k_levels)
    P, d = q_levels.shape
    bits = int(round(math.log2(input_levels)))
    if 2 ** bits != input_levels or not 1 <= bits <= 12:
        raise ValueError(f"input_levels {input_levels}: the kernel's DAC needs a power of two (2 to 4096)")
    key_bits = int(round(math.log2(xbar.levels)))
    cfg = SprintConfig(dac_bits=bits, key_bits=min(4, key_bits), variation=False, circuit_noise=False)
    kern = SprintAttention(xbar, cfg, None)
    half = 2 ** (cfg.converters.key_bits - 1)
    if 2 ** cfg.converters.key_bits != xbar.levels:
        raise ValueError(f"{xbar.levels} conductance levels: the kernel maps 2^key_bits codes onto them")
    m = input_levels - 1
    used = q_levels.max(axis=1) == m
    i_col = np.full(P, np.nan)
    i_ref = np.full(P, np.nan)
    idx = np.flatnonzero(used)
    ref = np.full(d, xbar.a[kern._ref_level if ref_level is None else ref_level], np.float32)
    for c0 in range(0, idx.size, 256):
        sel = idx[c0:c0 + 256]
        qe = (q_levels[sel] / m).astype(np.float32)
        codes = k_levels[sel] - half  # the level of code c is L = c + half (levels = 2^key_bits)
        cells = xbar.a[kern._level[codes + half]].astype(np.float32)
        iw, sab, c2, ref_lin, _, u_max = kern.column_currents(qe, cells, ref)
        diag = np.arange(sel.size)
        cur = iw[diag, diag] * (1 + np.float32(c2) * sab[diag, diag])
        i_col[sel] = cur * u_max[:, 0]  # u_max = 1: every used query reaches the full-scale code
        i_ref[sel] = ref_lin
    return i_col, i_ref, used


def validate(col, patterns: dict, reference: dict | None = None, xbar: Crossbar | None = None) -> dict:
    """Scores of the kernel's column path on the held-out patterns (see the module docstring):
    ``nrmse`` (single-ended), ``nrmse_differential`` (with a reference analysis), the rank-1
    residual of the cell table, and the patterns used."""
    xbar = xbar if xbar is not None else Crossbar.from_column(col)
    held = np.asarray(patterns["held_out"], bool) & np.isfinite(patterns["current"])
    q, k, cur = patterns["q_levels"][held], patterns["k_levels"][held], patterns["current"][held]
    i_col, i_ref, used = kernel_columns(xbar, q, k, int(col.meta.get("input_levels", q.max() + 1)))
    out = {"nrmse": _nrmse(i_col[used], cur[used]), "rank1_error": float(xbar.rank1_error),
           "held_out_patterns": int(used.sum()), "left_out_not_full_scale": int((~used).sum()),
           "rank": 1}
    if reference is not None and "current" in reference:
        rh = np.asarray(reference["held_index"], np.int64)
        pos = {int(j): i for i, j in enumerate(np.flatnonzero(held))}
        rows = [(pos[int(j)], i) for i, j in enumerate(rh) if int(j) in pos]
        if rows:
            a, b = np.array(rows).T
            spice = cur[a] - reference["current"][b]
            kern = i_col[a] - i_ref[a]
            ok = used[a]
            out["nrmse_differential"] = _nrmse(kern[ok], spice[ok])
            out["nrmse_reference"] = _nrmse(i_ref[a][ok], reference["current"][b][ok])
    return out
