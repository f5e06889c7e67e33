"""The ideal kernel's per-element passes: a row softmax over each query's visible key range
(no mask array: keys [a, b) of a row are the visible ones, as positions ascend) and the
normalised scatter of the weighted values into a (T, H, d) output."""
from __future__ import annotations

import numba as nb
import numpy as np

from .common import _fast, exp32


@nb.jit(**_fast)
def softmax_ranges(sc, a, b, tb, scale):
    """In place on raw scores ``sc`` (rows x S), row r = query r % tb of a head group:
    sc <- exp(scale (sc - max)) over the row's visible keys [a[t], b[t]), 0 outside; returns
    the row sums (1 for a row that sees nothing). NumPy reference: ``ops.softmax`` of
    ``scale * sc`` with -inf outside the range, before the division."""
    n, S = sc.shape
    tot = np.empty(n, np.float32)
    for r in range(n):
        t = r % tb
        lo, hi = a[t], b[t]
        row = sc[r]
        lanes = np.full(8, -np.inf, np.float32)
        for s0 in range(lo, hi - 7, 8):
            for k in range(8):
                v = row[s0 + k]
                lanes[k] = v if v > lanes[k] else lanes[k]
        m = np.float32(-np.inf)
        for k in range(8):
            m = max(m, lanes[k])
        for s in range(max(lo, hi - (hi - lo) % 8), hi):
            m = max(m, row[s])
        for s in range(0, lo):
            row[s] = np.float32(0.0)
        acc = np.zeros(8, np.float32)
        ms = m * scale
        for s0 in range(lo, hi - 7, 8):
            for k in range(8):
                e = exp32(row[s0 + k] * scale - ms)
                row[s0 + k] = e
                acc[k] += e
        tail = np.float32(0.0)
        for s in range(max(lo, hi - (hi - lo) % 8), hi):
            e = exp32(row[s] * scale - ms)
            row[s] = e
            tail += e
        for s in range(max(hi, lo), S):
            row[s] = np.float32(0.0)
        for k in range(8):
            tail += acc[k]
        tot[r] = tail if tail > 0 else np.float32(1.0)
    return tot


@nb.jit(**_fast)
def scatter_normalised(o, tot, out, t0, h0, g, tb):
    """out[t0 + t, h0 + j] = o[j tb + t] / tot[j tb + t] for the g heads of a group; out is (T, H, d)."""
    d = o.shape[1]
    for j in range(g):
        for t in range(tb):
            r = j * tb + t
            inv = np.float32(1.0) / tot[r]
            src, dst = o[r], out[t0 + t, h0 + j]
            for i in range(d):
                dst[i] = src[i] * inv
