"""Compiled loops of the pruning kernel (rows: query i % T of head i // T)."""
from __future__ import annotations

import numba as nb
import numpy as np

from .common import _fast, _max_biased, _opts, exp32


@nb.jit(**_fast)
def dac_lhs(qe, M, b_dac, w, r0, r1, lhs):
    """The word-line drive of rows r0..r1 of a column for queries qe (n, d): per query the DAC
    full scale u_max = max |qe| (returned, (n,)), codes m = rint(|q| M / u_max), factor
    b = b_dac[m]; lhs[:n] = sign(q) b w (the weighted signed sum's operand), lhs[n:] = b (the
    unsigned sum's)."""
    n, d = qe.shape
    u_max = np.empty(n, np.float32)
    for i in range(n):
        m = np.float32(0.0)
        for c in range(d):
            m = max(m, abs(qe[i, c]))
        m = m if m > 0 else np.float32(1.0)
        u_max[i] = m
        sc = np.float32(M) / m
        for c in range(r0, r1):
            x = qe[i, c]
            b = b_dac[np.int64(np.rint(abs(x) * sc))]
            lhs[n + i, c - r0] = b
            lhs[i, c - r0] = (b if x >= 0 else -b) * w[c - r0]
    return u_max


@nb.jit(**_opts)
def anchor_max(exact, ptr, cols, T):
    """Largest exact score of each row among its query's anchor keys, given as a CSR list
    (query t's anchors: cols[ptr[t]:ptr[t + 1]]); -inf if none. Touches only the anchors."""
    n = exact.shape[0]
    out = np.empty(n, np.float32)
    for i in range(n):
        t = i % T
        m = np.float32(-np.inf)
        for c in range(ptr[t], ptr[t + 1]):
            m = max(m, exact[i, cols[c]])
        out[i] = m
    return out


@nb.jit(inline="always", **_fast)
def _counts(kp, kq):
    """Kept keys of a row, and those not kept by the previous row (kq)."""
    c = np.int32(0)
    nw = np.int32(0)
    for s in range(kp.shape[0]):
        c += np.int32(kp[s])
        nw += np.int32(kp[s] & ~kq[s])
    return c, nw


@nb.jit(inline="always", **_fast)
def _kept_row(e, b, kp, kq):
    """One row of exact scores e, in place: e <- exp(e - max over the allowed keys) on kept keys
    (kp), 0 elsewhere; b: 0 allowed / -inf not; kq: the previous row's kept keys. Returns (sum of
    kept weights, share of the ideal softmax mass kept, kept count, newly kept count)."""
    zero = np.float32(0.0)
    m = _max_biased(e, b)
    m = zero if m == -np.inf else m
    a = zero
    k = zero
    for s in range(e.shape[0]):
        v = exp32(e[s] - m + b[s])
        a += v
        w = v if kp[s] else zero
        e[s] = w
        k += w
    c, nw = _counts(kp, kq)
    return k, (k / a if a > 0 else 0.0), c, nw


@nb.jit(**_fast)
def kept_softmax(e, bias, keep, T):
    """In place on the exact scores e (rows: query i % T of head i // T): e <- exp(e - row max over
    allowed keys) on kept keys, 0 elsewhere (the unnormalised softmax over the kept keys).
    ``bias`` (T, S): 0 where allowed, -inf elsewhere. Returns per row (sum of kept weights, share
    of the ideal softmax mass kept, kept count, keys kept here but not by the previous query of
    the same head). Kept keys must be allowed."""
    n = e.shape[0]
    tot = np.empty(n, np.float64)
    mass = np.empty(n, np.float64)
    kept = np.zeros(n, np.int64)
    new = np.zeros(n, np.int64)
    for i in range(n):
        t = i % T
        prev = i - 1 if t > 0 else i  # the first query of a head has no previous one: count nothing
        tot[i], mass[i], kept[i], new[i] = _kept_row(e[i], bias[t], keep[i], keep[prev])
    return tot, mass, kept, new


@nb.jit(**_fast)
def decide_softmax(e, iw, sab, row, off, r, c2, k2, cn2, pool, start, bias, allowed, forced, T, keep):
    """The comparator decisions, then ``kept_softmax`` on them, row by row: keep[i, s] =
    (allowed and the comparator fires) or forced, the comparator input being
    r (iw (1 + c2 sab)) + row[i] + off[s] + sqrt(cn2 + k2 (sab^2 + iw^2)) z, z = pool[start + i S + s]
    (the caller keeps that inside the pool); e and the returns as in ``kept_softmax``."""
    n, S = e.shape
    tot = np.empty(n, np.float64)
    mass = np.empty(n, np.float64)
    kept = np.zeros(n, np.int64)
    new = np.zeros(n, np.int64)
    r, c2, k2, cn2 = np.float32(r), np.float32(c2), np.float32(k2), np.float32(cn2)
    one, zero = np.float32(1.0), np.float32(0.0)
    for i in range(n):
        t = i % T
        prev = i - 1 if t > 0 else i
        ri = row[i]
        z = pool[start + i * S:start + (i + 1) * S]
        a_, b_, al, fo, ke = iw[i], sab[i], allowed[t], forced[t], keep[i]
        for s in range(S):
            x = a_[s]
            y = b_[s]
            v = r * (x * (one + c2 * y)) + ri + off[s] + np.sqrt(cn2 + k2 * (x * x + y * y)) * z[s]
            ke[s] = (al[s] & (v > zero)) | fo[s]
        tot[i], mass[i], kept[i], new[i] = _kept_row(e[i], bias[t], ke, keep[prev])
    return tot, mass, kept, new
