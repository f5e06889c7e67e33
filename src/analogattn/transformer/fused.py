"""Compiled (numba) passes of the transformer's memory-bound steps: one pass over the rows
instead of the several temporary arrays the NumPy formulas in :mod:`.ops` cost. Each function
has its NumPy reference in :mod:`.ops` (``tests/test_fused_transformer.py`` checks them equal
on random inputs: bit-identical where no reduction or exp is involved, float32 rounding
otherwise). Serial loops: the matrix products around them keep both cores busy."""
from __future__ import annotations

import numba as nb
import numpy as np

from ..attention._fused.common import _fast, _lane_max, _opts, exp32


@nb.jit(**_fast)
def rms_norm_into(x, w, eps, out):
    """out = x / sqrt(mean(x^2) + eps) * w, row by row (float32, 8 lanes for the sum)."""
    n, m = x.shape
    inv_m = np.float32(1.0) / np.float32(m)
    for i in range(n):
        r = x[i]
        lanes = np.zeros(8, np.float32)
        for s0 in range(0, m - 7, 8):
            for k in range(8):
                v = r[s0 + k]
                lanes[k] += v * v
        acc = np.float32(0.0)
        for k in range(8):
            acc += lanes[k]
        for s in range(m - m % 8, m):
            acc += r[s] * r[s]
        inv = np.float32(1.0) / np.sqrt(acc * inv_m + eps)
        o = out[i]
        for s in range(m):
            o[s] = r[s] * inv * w[s]


@nb.jit(**_opts)
def rope_split(qkv, cos, sin, n_q, n_kv, d, q, k, v):
    """Split a (T, (n_q + 2 n_kv) d) q|k|v row block into heads, (H, T, d) each, rotating the
    pairs (2i, 2i+1) of q and k by the rotary tables (T, d/2) (the interleaved layout of
    :func:`.ops.rope_interleaved`; no fast-math: the same roundings as NumPy)."""
    T = qkv.shape[0]
    half = d // 2
    for t in range(T):
        row = qkv[t]
        c, s = cos[t], sin[t]
        for h in range(n_q):
            base = h * d
            o = q[h, t]
            for i in range(half):
                x0, x1 = row[base + 2 * i], row[base + 2 * i + 1]
                o[2 * i] = x0 * c[i] - x1 * s[i]
                o[2 * i + 1] = x0 * s[i] + x1 * c[i]
        for h in range(n_kv):
            base = (n_q + h) * d
            o = k[h, t]
            for i in range(half):
                x0, x1 = row[base + 2 * i], row[base + 2 * i + 1]
                o[2 * i] = x0 * c[i] - x1 * s[i]
                o[2 * i + 1] = x0 * s[i] + x1 * c[i]
            base = (n_q + n_kv + h) * d
            o = v[h, t]
            for i in range(d):
                o[i] = row[base + i]


@nb.jit(**_fast)
def swiglu_into(gu, f, out):
    """out = silu(gate) * up of a (T, 2f) gate|up block: gate / (1 + exp(-gate)) * up. The
    exponentials of a row first go to a scratch row of their own (a loop writing to memory that
    cannot alias the input vectorises: 4.2 -> 1.4 ns an element, 8% of a window-256 prefill's
    thread time before), then the product and division element by element as before (fast-math
    reassociates them to (gate x up) / (1 + e); a vectorised division here rounds otherwise)."""
    T = gu.shape[0]
    one = np.float32(1.0)
    e = np.empty(f, np.float32)
    for t in range(T):
        r, o = gu[t], out[t]
        for j in range(f):
            e[j] = exp32(-r[j])
        for j in range(f):
            o[j] = r[j] / (one + e[j]) * r[f + j]


@nb.jit(**_fast)
def add_into(x, y):
    """x += y (2-D float32)."""
    n, m = x.shape
    for i in range(n):
        a, b = x[i], y[i]
        for j in range(m):
            a[j] += b[j]


@nb.jit(**_fast)
def nll_rows(z, tgt, out):
    """out[i] = -log softmax(z[i])[tgt[i]] = max + log(sum exp(z[i] - max)) - z[i, tgt[i]] for
    float32 logits rows (the exponentials summed in float64); NumPy reference: ``-ops.log_softmax(z)
    [i, tgt[i]]``."""
    n, V = z.shape
    for i in range(n):
        r = z[i]
        m = _lane_max(r)
        acc = 0.0
        for s in range(V):
            acc += exp32(r[s] - m)
        out[i] = np.float64(m) + np.log(acc) - np.float64(r[tgt[i]])
