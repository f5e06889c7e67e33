"""The ideal kernel's per-element passes: a row softmax over each query's visible key range
(no mask array: keys [a, b) of a row are the visible ones, as positions ascend) and the
normalised scatter of the weighted values into a (T, H, d) output."""
from __future__ import annotations

import numba as nb
import numpy as np

from .common import _fast, _lane_max, exp32


@nb.jit(inline="always", **_fast)
def _exp_shifted_(row, scale):
    """In place: row <- exp(scale (row - max(row))); returns the sum. ``row`` is a slice indexed
    from 0 (see :func:`softmax_ranges`)."""
    ms = _lane_max(row) * scale
    acc = np.float32(0.0)
    for s in range(row.shape[0]):
        e = exp32(row[s] * scale - ms)
        row[s] = e
        acc += e
    return acc


@nb.jit(**_fast)
def softmax_ranges(sc, a, b, tb, scale):
    """In place on raw scores ``sc`` (rows x S), row r = query r % tb of a head group:
    sc <- exp(scale (sc - max)) over the row's visible keys [a[t], b[t]), 0 outside; returns
    the row sums (1 for a row that sees nothing). NumPy reference: ``ops.softmax`` of
    ``scale * sc`` with -inf outside the range, before the division.

    The loops run over a slice of the row from index 0: indexing from a run-time offset
    (row[lo + s]) keeps numba's negative-index wraparound in the loop, and LLVM then does not
    vectorise it (2.6 ns per element that way, 0.48 this way)."""
    n, S = sc.shape
    tot = np.empty(n, np.float32)
    for r in range(n):
        t = r % tb
        lo, hi = a[t], b[t]
        full = sc[r]
        if hi <= lo:
            full[:] = np.float32(0.0)
            tot[r] = np.float32(1.0)
            continue
        acc = _exp_shifted_(full[lo:hi], scale)
        full[:lo] = np.float32(0.0)
        full[hi:] = np.float32(0.0)
        tot[r] = acc if acc > 0 else np.float32(1.0)
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


@nb.jit(**_fast)
def decode_attention(q, keys, values, lo, hi, scale, out):
    """One query per head (decoding): out[h] = softmax(scale q[h] . keys[j, lo:hi]) values[j, lo:hi]
    with j = h // (H / n_kv), in one pass (no BLAS call, no threads: at a short context the
    products are a few microseconds and the calls around them cost more). q, out (H, d); keys,
    values (n_kv, S, d). NumPy reference: :func:`..base.reference_attention` with one query."""
    H, d = q.shape
    n_kv = keys.shape[0]
    g = H // n_kv
    L = hi - lo
    sc = np.empty(max(L, 1), np.float32)
    for h in range(H):
        o = out[h]
        o[:] = np.float32(0.0)
        if L <= 0:
            continue
        K = keys[h // g, lo:hi]
        V = values[h // g, lo:hi]
        qh = q[h]
        for s in range(L):
            kr = K[s]
            acc = np.float32(0.0)
            for i in range(d):
                acc += qh[i] * kr[i]
            sc[s] = acc
        tot = _exp_shifted_(sc[:L], scale)
        for s in range(L):
            w = sc[s]
            vr = V[s]
            for i in range(d):
                o[i] += w * vr[i]
        inv = np.float32(1.0) / tot
        for i in range(d):
            o[i] *= inv
