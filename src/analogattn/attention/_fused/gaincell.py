"""Compiled loops of the gain-cell kernel. Blocks of queries: arrays (g, tb, s) are a block's
rows (g stacked heads x tb queries) against its keys; GEMM outputs are (g tb, .) with row h tb + t."""
from __future__ import annotations

import numba as nb
import numpy as np

from .common import _KEY_NONE, _adc, _adc_steps, _fast, _key, _max_biased, _opts, _pulse, _unkey, exp32


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


@nb.jit(inline="always", **_opts)
def _load8(x, o):
    """x[o] .. x[o + 7] as a tuple (unsigned indices: no negative-index wrap to compute)."""
    o = np.uint64(o)
    one = np.uint64(1)
    return (x[o], x[o + one], x[o + 2 * one], x[o + 3 * one], x[o + 4 * one], x[o + 5 * one], x[o + 6 * one],
            x[o + 7 * one])


@nb.jit(inline="always", **_opts)
def _add8(a, b):
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7])


@nb.jit(inline="always", **_opts)
def _sum8(v):
    """The 8 lanes added as a vector reduction adds them: halves, then quarters, then the pair."""
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))


@nb.jit(**_opts)
def _pulse_sum(x, o, n):
    """x[o] + .. + x[o + n - 1] (float32) in one fixed order, whatever the machine or the arrays'
    places: fewer than 8 terms in sequence; else 32 lanes over the whole blocks of 32 (lane 8 u + l
    takes the terms 32 b + 8 u + l in turn), the four groups of 8 added lane by lane in turn and
    reduced by :func:`_sum8`; then the whole blocks of 8 left in 8 lanes (lane 0 starting from the
    sum so far), reduced likewise; then the rest in sequence.

    That is the order LLVM gave the sum on an AVX2 machine when the pulses were summed in the loop
    that wrote them, so the numbers are the ones recorded before. But that loop ran vectorised only
    when a run-time check that the arrays do not overlap passed, a conservative check that also
    failed for a pulse array lying within a tile after the mask's end, and its scalar fallback
    added in sequence: a sum's last bit depended on where malloc had put the arrays (a decode step
    gave one of two results in about one run in three). Compiled without fast-math (the helpers
    are inlined into this function, not into the fast-math caller), so the order written is the
    order run; 0.3 ns a term against 0.2 for a vectorised sum."""
    tot = np.float32(0.0)
    if n < 8:
        for s in range(o, o + n):
            tot += x[s]
        return tot
    n32 = n - n % 32
    if n32:
        a0, a1, a2, a3 = _load8(x, o), _load8(x, o + 8), _load8(x, o + 16), _load8(x, o + 24)
        for b in range(o + 32, o + n32, 32):
            a0 = _add8(a0, _load8(x, b))
            a1 = _add8(a1, _load8(x, b + 8))
            a2 = _add8(a2, _load8(x, b + 16))
            a3 = _add8(a3, _load8(x, b + 24))
        tot = _sum8(_add8(_add8(_add8(a0, a1), a2), a3))
    s = n32
    if n - n32 >= 8:
        n8 = n - n % 8
        e = _load8(x, o + n32)
        e = (tot + e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7])
        for b in range(o + n32 + 8, o + n8, 8):
            e = _add8(e, _load8(x, b))
        tot = _sum8(e)
        s = n8
    for k in range(o + s, o + n):
        tot += x[k]
    return tot


@nb.jit(inline="always", **_fast)
def _abs_max_biased(o, b):
    """max(|o| + b) of two float32 rows (b 0 allowed / -inf not; -inf when nothing is), as an
    integer max of :func:`.common._key` s, which LLVM vectorises (the float compare-and-select
    reduction it replaces stayed scalar: 1.6 ns an element against 0.1)."""
    m = np.int32(_KEY_NONE)
    for s in range(o.shape[0]):
        m = max(m, _key(abs(o[s]) + b[s]))
    return _unkey(m)


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
                m = _abs_max_biased(o, bias[t])
                if m > hmax[h]:
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
                for s in range(s0, s1):
                    v = _pulse(pi[s] * scale, L, invL)
                    out[s - s0] = v if b[s] == 0 else zero
                for s in range(s1 - s0, rows):
                    out[s] = zero
                psum[i, k] = _pulse_sum(out, 0, s1 - s0)


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
    kk = np.empty(d, np.int64)  # a row's grid cells and fractions, once for all n terms
    ff = np.empty(d, np.float32)
    for s in range(S):
        ys = y[s]
        for c in range(d):
            x = min(max((ys[c] - y0) * inv_h, 0.0), top)  # float64 position
            k = np.int64(x)
            kk[c] = k
            ff[c] = np.float32(x - k)
        for i in range(n):
            ti = table[i]
            o = out[s, i]
            for c in range(d):
                k = kk[c]
                o[c] = ti[k] + ff[c] * (ti[k + 1] - ti[k])


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


@nb.jit(**_opts)
def noisy_tile_acc(part, z1, s1, z2, s2, full, half, back, acc):
    """acc (R, dd) += ADC(part[r] + s1[r] z1[r] + s2[r] z2[r]) back[r]: one value tile of
    :func:`noisy_tile_adc` (part: the tile's (R, dd) outputs before their ADC, from
    :func:`tile_parts`; back 0: row not read, skipped; full <= 0 reads 0; an empty z skips its
    term), the same operations in the same order, so calling it tile by tile in order gives
    noisy_tile_adc's sums bit for bit without the (tiles, rows, dd) arrays (each tile's GEMM,
    parts and noise used while in cache). :func:`noisy_tile_rows` with one head (its rows are
    then this tile's rows in order)."""
    noisy_tile_rows(part, 0, 1, part.shape[0], z1, s1, z2, s2, full, half, back, acc)


@nb.jit(**_opts)
def add_row_scaled(x, sig, z):
    """x[r, s] += sig[r] z[r, s] (strict IEEE float32: the product rounded, then the sum, as the
    NumPy expression ``x += sig[:, None] * z`` does, so the result is bit for bit the same)."""
    R, S = x.shape
    for r in range(R):
        a, b, sr = x[r], z[r], sig[r]
        for s in range(S):
            a[s] = a[s] + sr * b[s]


@nb.jit(**_opts)
def noisy_tile_adc(parts, z1, s1, z2, s2, full, half, back, acc):
    """acc (R, dd) = sum over tiles k (in order) of ADC(parts[k, r] + s1[r] z1[k, r] + s2[k, r]
    z2[k, r]) back[k, r]: a block's value-tile outputs with their read noise (z1 / z2 standard
    normals drawn by the caller; an empty z skips its term), each tile's ADC over +-full[r]
    (codes -half .. half-1, mid-tread; full <= 0 reads 0), weighted back digitally (back 0: a tile
    not read, skipped). Strict IEEE float32, every operation in the order of the NumPy path in
    ``GainCellAttention._value_block`` (noise added, :func:`..peripherals.adc`, product, sum over
    the tiles), so the two agree bit for bit (``x / step`` as NumPy divides, not a reciprocal).
    :func:`noisy_tile_acc` tile by tile (the kernel calls that one as each tile's product is made)."""
    acc[:] = np.float32(0.0)
    none = np.empty((0, 0), np.float32)
    for k in range(parts.shape[0]):
        noisy_tile_acc(parts[k], z1[k] if z1.size > 0 else none, s1, z2[k] if z2.size > 0 else none, s2[k],
                       full, half, back[k], acc)


# Row strips and tiles read (the kernel's fast path). A block's visible keys are a run per query
# row (causal, sliding and bidirectional masks): the score product is made in strips of query rows
# over the keys the strip's rows may see, and a value tile's product over the rows that read it.
# The GEMM outputs of these passes are "t-major": row (t - t0) g + h for query t of head h (the
# strip's or tile's rows contiguous for every head); noise arrays and per-row scales stay h-major
# (row h tb + t, the order they are drawn in). Every element gets the operations of the
# whole-block passes above in the same order, so the results are the same bit for bit.

@nb.jit(**_opts)
def score_noise_strip(x, t0, g, tb, ks, s64, z64, sig, z32):
    """In place on a strip's score charges x (ts g, S) (t-major from query t0; columns keys ks ..
    ks + S of the block): x += float32(s64[i] z64[i, ks + c]) (an empty z64: none), then
    x += sig[i] z32[i, ks + c] (empty: none), i = h tb + t: the block's noise arrays (g tb, s)
    read at the strip's elements. Strict IEEE float32 as the NumPy expressions of the
    whole-block path (``x += (s * z).astype(float32)``; :func:`add_row_scaled`)."""
    R, S = x.shape
    has64 = z64.size > 0
    has32 = z32.size > 0
    for r in range(R):
        t = t0 + r // g
        i = (r % g) * tb + t
        a = x[r]
        if has64:
            b = z64[i, ks:ks + S]
            s = np.float64(s64[i])
            for c in range(S):
                a[c] = a[c] + np.float32(s * b[c])
        if has32:
            b32 = z32[i, ks:ks + S]
            sr = sig[i]
            for c in range(S):
                a[c] = a[c] + sr * b32[c]


@nb.jit(**_fast)
def score_strip(x, t0, ks, full, scale, out, accumulate, bias, want_max, hmax):
    """:func:`score_tile` of a strip: x (ts g, S) t-major from query t0 over keys ks .. ks + S of
    the block; out[h, t, ks + c] (+)= clamp(x[(t - t0) g + h, c], +-full[h]) scale[h, t], the rest
    of the row (keys the strip's rows do not see) set to 0 when not ``accumulate``; with
    ``want_max``, hmax[h] = max(hmax[h], largest |out| over the allowed keys)."""
    g = out.shape[0]
    R, S = x.shape
    W = out.shape[2]
    for r in range(R):
        t = t0 + r // g
        h = r % g
        f = full[h]
        lo = -f if f > 0 else np.float32(0.0)
        hi = f if f > 0 else np.float32(0.0)
        xi, o, c = x[r], out[h, t, ks:ks + S], scale[h, t]
        if accumulate:
            for s in range(S):
                o[s] += min(max(xi[s], lo), hi) * c
        else:
            for s in range(S):
                o[s] = min(max(xi[s], lo), hi) * c
            row = out[h, t]
            for s in range(ks):
                row[s] = np.float32(0.0)
            for s in range(ks + S, W):
                row[s] = np.float32(0.0)
        if want_max:
            m = _abs_max_biased(o, bias[t, ks:ks + S])
            if m > hmax[h]:
                hmax[h] = m


@nb.jit(inline="always", **_fast)
def _span_max(pf, bf, o, bo, n):
    """The largest of pf[o + s] + bf[bo + s] over s < n (flat rows of weights and their 0 / -inf
    biases; -inf when none), as an integer max of :func:`.common._key` s: LLVM runs it on 8 or 16
    lanes. A float max with a select on the bias stayed scalar (1.5 ns a weight against 0.3).
    Unsigned offsets: numba has no negative index to wrap."""
    m = np.int32(_KEY_NONE)
    for s in range(n):
        u = np.uint64(s)
        m = max(m, _key(pf[o + u] + bf[bo + u]))
    return _unkey(m)


@nb.jit(inline="always", **_fast)
def _span_pulses(pf, bf, o, bo, qf, qo, n, scale, L, invL):
    """qf[qo + s] = ``_pulse`` of pf[o + s] scale where bf[bo + s] is 0, else 0 (s < n), on flat
    arrays with unsigned offsets (vectorised: no views, no index wrap)."""
    zero = np.float32(0.0)
    for s in range(n):
        u = np.uint64(s)
        v = _pulse(pf[o + u] * scale, L, invL)
        qf[qo + u] = v if bf[bo + u] == zero else zero


@nb.jit(**_fast)
def tile_pulses_t(p, bias, mode, inv_sat, levels, rows, first, last, pq, m, psum):
    """:func:`tile_pulses` with pq t-major (pq[k, t g + h]) and the tiles outside each row's
    visible keys first[t] .. last[t] (first = last: none) written without reading p (zero pulses,
    pulse sum 0, m as tile_pulses gives them: 1, or the row's largest weight in mode 1). The
    same values bit for bit: a tile's (or row's) largest allowed weight as the largest p + bias
    (the bias 0 where allowed; floored at 0 as tile_pulses' maximum starts from 0), its pulses by
    tile_pulses' operations and their sum by the same _pulse_sum. Rows in t-major order (each
    tile's pulses then written in sequence), on flat arrays with unsigned offsets: no row or tile
    views (numba counts a reference for each) and no index wrap, so the maxima and the pulses
    vectorise (2.6-3.8 -> 1.1-1.6 ns an element on a 3 x 256 x 1024 causal block, paired); pq
    C-contiguous, p and bias too."""
    g, tb, S = p.shape
    ntl = pq.shape[0]
    flat = pq.reshape(-1)  # _pulse_sum reads the pulses back from it
    pf = p.reshape(-1)
    bf = bias.reshape(-1)
    R = pq.shape[1]
    zero, one = np.float32(0.0), np.float32(1.0)
    L = np.float32(levels - 1) if levels > 1 else zero
    invL = one / L if levels > 1 else zero
    for t in range(tb):
        ft, lt = first[t], last[t]
        for h in range(g):
            i = h * tb + t
            j = t * g + h
            row = np.uint64(i * S)
            brow = np.uint64(t * S)
            rmax = zero
            if mode == 1:
                rmax = max(_span_max(pf, bf, row, brow, S), zero)
                rmax = rmax if rmax > 0 else one
            for k in range(ntl):
                s0 = k * rows
                s1 = min(S, s0 + rows)
                if s1 <= ft or s0 >= lt:
                    for s in range(rows):
                        pq[k, j, s] = zero
                    psum[i, k] = zero
                    m[i, k] = rmax if mode == 1 else one
                    continue
                n = s1 - s0
                o, bo = row + np.uint64(s0), brow + np.uint64(s0)
                scale = one
                if mode == 0:
                    scale = inv_sat[h]
                    m[i, k] = one
                elif mode == 1:
                    scale = one / rmax
                    m[i, k] = rmax
                else:
                    tmax = max(_span_max(pf, bf, o, bo, n), zero)
                    tmax = tmax if tmax > 0 else one
                    scale = one / tmax
                    m[i, k] = tmax
                _span_pulses(pf, bf, o, bo, flat, np.uint64((k * R + j) * rows), n, scale, L, invL)
                for s in range(n, rows):
                    pq[k, j, s] = zero
                psum[i, k] = _pulse_sum(flat, (k * R + j) * rows, n)


@nb.jit(**_fast)
def tile_parts_rows(M, r0, g, tb, rw, psum, k, ratio, out):
    """:func:`tile_parts` of tile k for the t-major rows r0 .. r0 + len(M) (M: their GEMM output;
    rw (n, tb) the query factors; psum (g tb, ntiles) h-major) into out (len(M), dd)."""
    for q in range(M.shape[0]):
        r = r0 + q
        t = r // g
        w = psum[(r % g) * tb + t, k]
        if w == 0:
            out[q, :] = 0.0
            continue
        o = out[q]
        _tile_mean(M[q], rw, t, np.float32(1.0), o)
        if ratio:
            o /= w


@nb.jit(**_opts)
def noisy_tile_rows(part, r0, g, tb, z1, s1, z2, s2, full, half, back, acc):
    """:func:`noisy_tile_acc` for the t-major rows r0 .. r0 + len(part) of one tile: part and acc
    (tb g, dd) t-major; z1, z2 (g tb, dd), s1, s2, full, back (g tb,) h-major. Row r (block row
    i = (r % g) tb + r // g): acc[r, c] += ADC(part[q, c] + s1[i] z1[i, c] + s2[i] z2[i, c]) back[i]
    (the ADC over +-full[i], codes -half .. half-1, mid-tread; full <= 0 reads 0; back 0: skipped;
    an empty z skips its term), strict IEEE float32 in NumPy's order. On 2-D indices, no row views
    (numba counts a reference for each, and a row here is 64 elements: 1.58 -> 0.41 ns an element)."""
    has1 = z1.size > 0
    has2 = z2.size > 0
    dd = part.shape[1]
    lo, hi = np.float32(-half), np.float32(half - 1)
    zero = np.float32(0.0)
    for q in range(part.shape[0]):
        r = r0 + q
        i = (r % g) * tb + r // g
        bk = back[i]
        if bk == 0:
            continue
        f = full[i]
        if f > 0:
            step = f / np.float32(half)
            a1 = s1[i] if has1 else zero
            a2 = s2[i] if has2 else zero
            for c in range(dd):
                v = part[q, c]
                if has1:
                    v = v + a1 * z1[i, c]
                if has2:
                    v = v + a2 * z2[i, c]
                v = min(max(np.rint(v / step), lo), hi) * step
                acc[r, c] = acc[r, c] + v * bk
        else:
            for c in range(dd):
                acc[r, c] = acc[r, c] + zero * bk


@nb.jit(**_opts)
def query_pulses(qh, a, b, u_max, levels, out):
    """out[h, t, c] = float32(sign(u) pulse(|u| / u_max[h, t])), u = a[h] qh[h, t, c] + b[h] in
    float64: the query DAC of the kernel, the NumPy expressions' operations in their order
    (:func:`..peripherals.pulse`: clip to [0, 1], then 0 + round(x / step) step with step =
    1 / (levels - 1) when levels > 1), strict IEEE, so the same values bit for bit."""
    g, T, d = qh.shape
    q = levels > 1
    step = 1.0 / (levels - 1) if q else 1.0
    for h in range(g):
        ah, bh = a[h], b[h]
        for t in range(T):
            um = np.float64(u_max[h, t])
            for c in range(d):
                u = ah * np.float64(qh[h, t, c]) + bh
                x = min(max(abs(u) / um, 0.0), 1.0)
                if q:
                    x = 0.0 + np.rint((x - 0.0) / step) * step
                out[h, t, c] = np.float32(np.sign(u) * x)
