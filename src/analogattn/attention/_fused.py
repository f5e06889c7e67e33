"""Fused per-element loops of the circuit kernels (numba, compiled once and cached on disk).

Serial loops: the matrix products around them keep both cores busy, and numba's worker threads
fighting BLAS threads for two cores cost more than they gain (measured 10x slower here).
Each function makes one pass over a block's (rows x keys) arrays instead of the ten or so
temporary arrays the same arithmetic costs in NumPy; they hold no physics of their own (the
formulas are documented where they are called, in :mod:`analogattn.attention.sprint` and
:mod:`analogattn.attention.gaincell`). float32 scalars and branch-free inner loops, so LLVM
vectorises them (a float64 scalar or a short-circuit ``and`` in the loop cost 20x).
In the pruning kernel, row i of a block is query i % T of head i // T.
"""
from __future__ import annotations

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


# -- gain-cell kernel ------------------------------------------------------------------------------
# Blocks of queries: arrays (g, tb, s) are a block's rows (g stacked heads x tb queries) against
# its keys; GEMM outputs are (g tb, .) with row h tb + t.

@nb.jit(inline="always", **_fast)
def _adc_steps(f, half):
    """(1 / step, step) of a mid-tread ADC with codes -half .. half-1 over +-f (0, 0: reads 0)."""
    if half > 0 and f > 0:
        return np.float32(half / f), np.float32(f / half)
    return np.float32(0.0), np.float32(0.0)


@nb.jit(inline="always", **_fast)
def _adc(v, inv, step, half):
    """v through the ADC of ``_adc_steps``: the nearest code, clamped to -half .. half-1."""
    return min(max(np.rint(v * inv), np.float32(-half)), np.float32(half - 1)) * step


@nb.jit(inline="always", **_fast)
def _tile_mean(mk, rw, r, wr, v):
    """v[c] = sum_i mk[i dd + c] rw[i, r] / wr: a tile's expansion terms combined with row r's
    factors, over the reference wr (dd = v's length)."""
    dd = v.shape[0]
    c0 = rw[0, r] / wr
    for c in range(dd):
        v[c] = mk[c] * c0
    for i in range(1, rw.shape[0]):
        ci = rw[i, r] / wr
        for c in range(dd):
            v[c] += mk[i * dd + c] * ci

@nb.jit(**_fast)
def score_tile(x, full, scale, out, accumulate, bias, want_max):
    """out[h, t, s] (+)= clamp(x[h tb + t, s], +-full[h]) * scale[h, t]: one tile of a block's
    score charges (clamped to the charge-to-pulse range; full <= 0 reads 0, inf: no clamp),
    rescaled per row. With ``want_max``, returns per head the largest |out| over the allowed keys
    (bias (tb, s): 0 allowed, -inf not)."""
    g, tb, S = out.shape
    hmax = np.zeros(g, np.float32)
    for h in range(g):
        f = full[h]
        lo = -f if f > 0 else np.float32(0.0)
        hi = f if f > 0 else np.float32(0.0)
        for t in range(tb):
            xi, o, c = x[h * tb + t], out[h, t], scale[h, t]
            if accumulate:
                for s in range(S):
                    o[s] += min(max(xi[s], lo), hi) * c
            else:
                for s in range(S):
                    o[s] = min(max(xi[s], lo), hi) * c
            if want_max:
                b = bias[t]
                m = hmax[h]
                for s in range(S):
                    v = abs(o[s]) + b[s]
                    m = v if v > m else m
                hmax[h] = m
    return hmax


@nb.jit(**_fast)
def softmax_block(z, lim, half, inv_r, inv_k, use_comp, bias):
    """In place on a block's scores z (g, tb, s): per row, the ADC over +-lim[h] (codes
    -half .. half-1; half 0: none; lim <= 0 reads 0), multiplied by inv_r[t] inv_k[s] (the decay
    undone) when use_comp, softmax over the allowed keys (bias (tb, s): 0 / -inf), and the weights
    multiplied by inv_r[t] inv_k[s] again (pulses lengthened by the decay). Rows with nothing
    allowed -> 0."""
    g, tb, S = z.shape
    zero, one = np.float32(0.0), np.float32(1.0)
    q = half > 0
    for h in range(g):
        inv, step = _adc_steps(lim[h], half)
        for t in range(tb):
            zi, b = z[h, t], bias[t]
            ir = inv_r[t] if use_comp else one
            for s in range(S):
                v = zi[s]
                if q:
                    v = _adc(v, inv, step, half)
                if use_comp:
                    v = v * ir * inv_k[s]
                zi[s] = v + b[s]
            m = _max_biased(zi, b)  # b again: -inf + -inf stays -inf
            m = zero if m == -np.inf else m
            tot = zero
            for s in range(S):
                e = exp32(zi[s] - m)
                zi[s] = e
                tot += e
            r = one / tot if tot > 0 else zero
            if use_comp:
                r = r * ir
                for s in range(S):
                    zi[s] = zi[s] * r * inv_k[s]
            else:
                for s in range(S):
                    zi[s] = zi[s] * r


@nb.jit(**_fast)
def tile_pulses(p, bias, mode, inv_sat, levels, rows, pq, m, psum):
    """A block's value-array pulses, tile by tile (tiles of ``rows`` keys from the block's first key).
    p (g, tb, s): softmax weights (mode 1: pulses span the row's largest weight; mode 2: each
    tile's largest weight) or score charges (mode 0, hardsigmoid: p = clamp(p inv_sat[h], 0, 1),
    no scaling); keys not allowed (bias -inf) get no pulse. Pulses are quantised to ``levels`` over
    [0, 1] (levels < 2: clipped only). Writes pq (ntiles, g tb, rows) (zero-padded), m (g tb,
    ntiles) the scale each tile's pulses were divided by, psum (g tb, ntiles) the pulse sums."""
    g, tb, S = p.shape
    ntl = pq.shape[0]
    zero, one = np.float32(0.0), np.float32(1.0)
    L = np.float32(levels - 1) if levels > 1 else zero
    invL = one / L if levels > 1 else zero
    for h in range(g):
        for t in range(tb):
            i = h * tb + t
            pi, b = p[h, t], bias[t]
            rmax = zero
            if mode == 1:
                for s in range(S):
                    v = pi[s] if b[s] == 0 else zero
                    rmax = v if v > rmax else rmax
                rmax = rmax if rmax > 0 else one
            for k in range(ntl):
                s0 = k * rows
                s1 = min(S, s0 + rows)
                scale = one
                if mode == 0:
                    scale = inv_sat[h]
                elif mode == 1:
                    scale = one / rmax
                    m[i, k] = rmax
                else:
                    tmax = zero
                    for s in range(s0, s1):
                        v = pi[s] if b[s] == 0 else zero
                        tmax = v if v > tmax else tmax
                    tmax = tmax if tmax > 0 else one
                    scale = one / tmax
                    m[i, k] = tmax
                if mode == 0:
                    m[i, k] = one
                out = pq[k, i]
                tot = zero
                for s in range(s0, s1):
                    v = min(max(pi[s] * scale, zero), one)
                    if levels > 1:
                        v = np.rint(v * L) * invL
                    v = v if b[s] == 0 else zero
                    out[s - s0] = v
                    tot += v
                for s in range(s1 - s0, rows):
                    out[s] = zero
                psum[i, k] = tot


@nb.jit(**_fast)
def tile_outputs(M, rw, dd, psum, m, ratio, full, half, digitise, acc):
    """acc (R, dd) += sum over tiles k read by row r (psum > 0) of
    ADC(sum_i M[k, r, i dd + c] rw[i, r] / w) w m[r, k], w = psum[r, k] if ``ratio`` (the ADC
    digitises the tile's weighted mean against its pulse sum) else 1: the ADC over +-full[r]
    (codes -half .. half-1; half 0: clamp only; full <= 0 reads 0) when ``digitise``."""
    ntl, R, _ = M.shape
    zero = np.float32(0.0)
    v = np.empty(dd, np.float32)
    for r in range(R):
        f = full[r]
        inv, step = _adc_steps(f, half)
        fl = f if f > 0 else zero
        a = acc[r]
        for k in range(ntl):
            w = psum[r, k]
            if w == 0:
                continue
            wr = w if ratio else np.float32(1.0)
            back = wr * m[r, k]
            _tile_mean(M[k, r], rw, r, wr, v)
            if digitise and half > 0:
                for c in range(dd):
                    a[c] += _adc(v[c], inv, step, half) * back
            elif digitise:
                for c in range(dd):
                    a[c] += min(max(v[c], -fl), fl) * back
            else:
                for c in range(dd):
                    a[c] += v[c] * back


@nb.jit(**_fast)
def interp_terms(y, y0, inv_h, table, out):
    """out[s, i, c] = table[i] linearly interpolated at y[s, c] on the uniform grid
    y0 + k / inv_h (k = 0 .. N-1; clamped to the grid's ends): the expansion terms f_i of stored
    voltages, from their tables."""
    S, d = y.shape
    n, N = table.shape
    top = N - 1 - 1e-9
    for s in range(S):
        ys = y[s]
        for i in range(n):
            ti = table[i]
            o = out[s, i]
            for c in range(d):
                x = min(max((ys[c] - y0) * inv_h, 0.0), top)  # float64 position
                k = np.int64(x)
                f = np.float32(x - k)
                o[c] = ti[k] + f * (ti[k + 1] - ti[k])


@nb.jit(**_fast)
def tile_parts(M, rw, psum, ratio, out):
    """out[k, r, c] = sum_i M[k, r, i dd + c] rw[i, r] / w (w = psum[r, k] if ratio else 1; 0
    where the tile is not read): each tile's output before its ADC (calibration and read noise)."""
    ntl, R, _ = M.shape
    for k in range(ntl):
        for r in range(R):
            w = psum[r, k]
            if w == 0:
                out[k, r, :] = 0.0
                continue
            o = out[k, r]
            _tile_mean(M[k, r], rw, r, np.float32(1.0), o)
            if ratio:  # divided after the sum, as the recorded calibrations always were (the fused
                o /= w  # path divides the factors: equal to rounding, not bit for bit)
