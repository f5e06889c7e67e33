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
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_opts = dict(nopython=True, cache=True, fastmath=False, nogil=True)
# reassociation lets LLVM vectorise the loops; no "no-inf/no-NaN" assumptions (scores use -inf)
_fast = dict(_opts, fastmath={"reassoc", "contract", "arcp", "nsz", "afn"})


@intrinsic
def _as_float32(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the low 32 bits of an integer (a bit cast)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if bits.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(bits), codegen


@nb.jit(inline="always", **_fast)
def exp32(x):
    """exp of a float32 in a form LLVM vectorises (NumPy's exp costs 3-5x more per element here):
    x = k ln2 + r, |r| <= ln2 / 2 (Cody-Waite: ln2 in a short high part and a correction),
    exp(r) by its Taylor polynomial of degree 7 (truncation < 1e-8 relative), 2^k by building the
    float's exponent bits. Within 1e-6 relative of exp over [-87, 88]; 0 below -87, inf above 88."""
    xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
    k = np.rint(xc * np.float32(1.4426950408889634))
    r = xc - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    y = p * _as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
    y = np.float32(0.0) if x < np.float32(-87.0) else y
    return np.float32(np.inf) if x > np.float32(88.0) else y


@nb.jit(**_fast)
def exp_rows(x, out):
    """out = exp32(x) for 2-D float32 arrays (tests compare it with NumPy's exp)."""
    n, m = x.shape
    for i in range(n):
        a, o = x[i], out[i]
        for s in range(m):
            o[s] = exp32(a[s])


@nb.jit(**_fast)
def decide(iw, sab, row, off, r, c2, k2, cn2, pool, start, allowed, forced, T, keep):
    """keep[i, s] = (allowed and the comparator fires) or forced, the comparator input being
    r (iw (1 + c2 sab)) + row[i] + off[s] + sqrt(cn2 + k2 (sab^2 + iw^2)) z, z = pool[start + i S + s]
    (the caller keeps that inside the pool). float32 scalars and bitwise logic: the inner loop has
    no branch and no float64 promotion, so it vectorises (20x faster than with them)."""
    n, S = iw.shape
    r, c2, k2, cn2 = np.float32(r), np.float32(c2), np.float32(k2), np.float32(cn2)
    one, zero = np.float32(1.0), np.float32(0.0)
    for i in range(n):
        t = i % T
        ri = row[i]
        z = pool[start + i * S:start + (i + 1) * S]
        a_, b_, al, fo, ke = iw[i], sab[i], allowed[t], forced[t], keep[i]
        for s in range(S):
            a = a_[s]
            b = b_[s]
            v = r * (a * (one + c2 * b)) + ri + off[s] + np.sqrt(cn2 + k2 * (a * a + b * b)) * z[s]
            ke[s] = (al[s] & (v > zero)) | fo[s]


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
def _max_biased(e, b):
    """max(e + b) of two float32 rows, in 8 interleaved lanes (numba's one-accumulator max
    reduction does not vectorise: 0.7 ns per element against 0.37 this way)."""
    S = e.shape[0]
    lanes = np.full(8, -np.inf, np.float32)
    for s0 in range(0, S - 7, 8):
        for k in range(8):
            v = e[s0 + k] + b[s0 + k]
            lanes[k] = v if v > lanes[k] else lanes[k]
    m = np.float32(-np.inf)
    for k in range(8):
        m = max(m, lanes[k])
    for s in range(S - S % 8, S):
        m = max(m, e[s] + b[s])
    return m


@nb.jit(**_fast)
def kept_softmax(e, bias, keep, T):
    """In place on the exact scores e (rows: query i % T of head i // T): e <- exp(e - row max over
    allowed keys) on kept keys, 0 elsewhere (the unnormalised softmax over the kept keys).
    ``bias`` (T, S): 0 where allowed, -inf elsewhere. Returns per row (sum of kept weights, share
    of the ideal softmax mass kept, kept count, keys kept here but not by the previous query of
    the same head). Kept keys must be allowed."""
    n, S = e.shape
    tot = np.empty(n, np.float64)
    mass = np.empty(n, np.float64)
    kept = np.zeros(n, np.int64)
    new = np.zeros(n, np.int64)
    zero = np.float32(0.0)
    for i in range(n):
        t = i % T
        prev = i - 1 if t > 0 else i  # the first query of a head has no previous one: count nothing
        ei, b, kp, kq = e[i], bias[t], keep[i], keep[prev]
        m = _max_biased(ei, b)
        m = zero if m == -np.inf else m
        a = zero
        k = zero
        for s in range(S):
            v = exp32(ei[s] - m + b[s])
            a += v
            w = v if kp[s] else zero
            ei[s] = w
            k += w
        c = np.int32(0)
        nw = np.int32(0)
        for s in range(S):
            c += np.int32(kp[s])
            nw += np.int32(kp[s] & ~kq[s])
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
