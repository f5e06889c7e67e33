"""Fused per-element loops of the pruning kernel (numba, compiled once and cached on disk).

Serial loops: the matrix products around them keep both cores busy, and numba's worker threads
fighting BLAS threads for two cores cost more than they gain (measured 10x slower here).
Each function makes one pass over a block's (rows x keys) arrays instead of the ten or so
temporary arrays the same arithmetic costs in NumPy; they hold no physics of their own (the
formulas are documented where they are called, in :mod:`analogattn.attention.sprint`).
Row i of a block is query i % T of head i // T.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_opts = dict(nopython=True, cache=True, fastmath=False, nogil=True)
# reassociation lets LLVM vectorise the loops; no "no-inf/no-NaN" assumptions (scores use -inf)
_fast = dict(_opts, fastmath={"reassoc", "contract", "arcp", "nsz", "afn"})


@nb.jit(**_fast)
def decide(iw, sab, row, off, r, c2, k2, cn2, pool, start, allowed, forced, T, keep):
    """keep[i, s] = (allowed and the comparator fires) or forced, the comparator input being
    r (iw (1 + c2 sab)) + row[i] + off[s] + sqrt(cn2 + k2 (sab^2 + iw^2)) z, z = pool[start + i S + s]
    (the caller keeps that inside the pool). Branch-free inner loop, so it vectorises."""
    n, S = iw.shape
    for i in range(n):
        t = i % T
        base = start + i * S
        ri = row[i]
        for s in range(S):
            a = iw[i, s]
            b = sab[i, s]
            v = r * (a * (1.0 + c2 * b)) + ri + off[s] + math.sqrt(cn2 + k2 * (a * a + b * b)) * pool[base + s]
            keep[i, s] = (allowed[t, s] and v > 0.0) or forced[t, s]


@nb.jit(**_opts)
def masked_row_max(exact, mask, T):
    """Largest score of each row among the keys its query's row of ``mask`` (T, S) marks
    (-inf if none): the allowed keys' maximum, or the anchors' best."""
    n, S = exact.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        t = i % T
        m = np.float32(-np.inf)
        for s in range(S):
            v = exact[i, s] if mask[t, s] else np.float32(-np.inf)
            m = max(m, v)
        out[i] = m
    return out


@nb.jit(**_fast)
def kept_weights(e, allowed, keep, T):
    """In place on e = exp(exact - row max): zero the keys not kept (and not allowed); returns
    per row (sum of kept weights, share of the ideal softmax mass kept, kept count, keys kept
    here but not by the previous query of the same head). Kept keys must be allowed."""
    n, S = e.shape
    tot = np.empty(n, np.float64)
    mass = np.empty(n, np.float64)
    kept = np.zeros(n, np.int64)
    new = np.zeros(n, np.int64)
    for i in range(n):
        t = i % T
        prev = i - 1 if t > 0 else i  # the first query of a head has no previous one: count nothing
        a = np.float32(0.0)
        k = np.float32(0.0)
        c = 0
        nw = 0
        for s in range(S):
            v = e[i, s] if allowed[t, s] else np.float32(0.0)
            a += v
            kp = keep[i, s]
            w = v if kp else np.float32(0.0)
            e[i, s] = w
            k += w
            c += kp
            nw += kp and not keep[prev, s]
        tot[i] = k
        mass[i] = k / a if a > 0 else 0.0
        kept[i] = c
        new[i] = nw
    return tot, mass, kept, new


# -- gain-cell kernel ------------------------------------------------------------------------------

@nb.jit(**_fast)
def adc_rows(x, full, half):
    """In place: x[i, :] through a mid-tread ADC of codes -half .. half - 1 over +-full[i]
    (full[i] <= 0 reads 0); half 0: clamp to +-full[i] only. One pass, float32."""
    n, m = x.shape
    for i in range(n):
        f = full[i]
        if f <= 0:
            for k in range(m):
                x[i, k] = 0.0
            continue
        if half == 0:
            for k in range(m):
                x[i, k] = min(max(x[i, k], -f), f)
            continue
        step = f / half
        inv = half / f
        lo, hi = -float(half), float(half - 1)
        for k in range(m):
            c = min(max(np.rint(x[i, k] * inv), lo), hi)
            x[i, k] = c * step


@nb.jit(**_fast)
def masked_absmax_rows(x, allowed, T, G):
    """Per group of T rows (a head), the largest |x| where allowed[i % T, s]."""
    n, S = x.shape
    out = np.zeros(G, np.float32)
    for i in range(n):
        t = i % T
        m = out[i // T]
        for s in range(S):
            if allowed[t, s]:
                m = max(m, abs(x[i, s]))
        out[i // T] = m
    return out


@nb.jit(**_fast)
def _logits(z, full, half, comp, use_comp, allowed, T):
    """z[i, s] <- ADC(z) / comp - row max over allowed keys; -inf where not allowed."""
    n, S = z.shape
    ninf = np.float32(-np.inf)
    for i in range(n):
        t = i % T
        f = full[i]
        q = half > 0 and f > 0
        step = np.float32(f / half) if q else np.float32(0.0)
        inv = np.float32(half / f) if q else np.float32(0.0)
        lo, hi = np.float32(-half), np.float32(half - 1)
        m = ninf
        for s in range(S):
            v = z[i, s]
            if half > 0:
                v = min(max(np.rint(v * inv), lo), hi) * step
            if use_comp:
                v = v / comp[t, s]
            v = v if allowed[t, s] else ninf
            z[i, s] = v
            m = max(m, v)
        if m == ninf:
            m = np.float32(0.0)
        for s in range(S):
            z[i, s] -= m


@nb.jit(**_fast)
def _normalise(z, comp, use_comp, T):
    n, S = z.shape
    for i in range(n):
        t = i % T
        tot = np.float32(0.0)
        for s in range(S):
            tot += z[i, s]
        r = np.float32(1.0) / tot if tot > 0 else np.float32(0.0)
        if use_comp:
            for s in range(S):
                z[i, s] = z[i, s] * r / comp[t, s]
        else:
            for s in range(S):
                z[i, s] *= r


def circuit_softmax(z, full, half, comp, use_comp, allowed, T):
    """In place, per row i (query i % T) of float32 z: the ADC over +-full[i] (codes
    -half .. half-1; half 0: none), divided by the decay comp[t, s] when use_comp, softmax over the
    allowed keys, and the weights divided by comp again (longer pulses for decayed keys). Rows
    with nothing allowed -> 0. (The exponential is NumPy's: vectorised float32.)"""
    _logits(z, full, half, comp, use_comp, allowed, T)
    np.exp(z, out=z)
    _normalise(z, comp, use_comp, T)
