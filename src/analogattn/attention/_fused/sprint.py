"""Compiled loops of the pruning kernel (rows: query i % T of head i // T)."""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .common import _KEY_NONE, _bytes8, _fast, _key, _max_biased, _opts, _unkey, exp32


@intrinsic
def _prefetch(typingctx, arr, idx):
    """A hint to fetch the cache line of arr[idx] (LLVM's prefetch: read, keep in every level);
    no effect on any value."""
    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        a = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, a, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(arr, types.intp), codegen


@nb.jit(inline="always", **_fast)
def _dac_row(q, part, M, b_dac, w, ls, lb):
    """One query's DAC: full scale u = max |q| (1 for a zero query, returned), codes
    rint(|x| M / u) of the elements ``part`` of q, factor b = b_dac[code]; lb = b,
    ls = sign(x) b w."""
    m = np.float32(0.0)
    for c in range(q.shape[0]):
        m = max(m, abs(q[c]))
    m = m if m > 0 else np.float32(1.0)
    sc = np.float32(M) / m
    for c in range(part.shape[0]):
        x = part[c]
        b = b_dac[np.int64(np.rint(abs(x) * sc))]
        lb[c] = b
        ls[c] = (b if x >= 0 else -b) * w[c]
    return m


@nb.jit(**_fast)
def dac_lhs(qe, M, b_dac, w, r0, r1, lhs):
    """The word-line drive of rows r0..r1 of a column for queries qe (n, d): per query the DAC
    full scale u_max = max |qe| (returned, (n,)), codes m = rint(|q| M / u_max), factor
    b = b_dac[m]; lhs[:n] = sign(q) b w (the weighted signed sum's operand), lhs[n:] = b (the
    unsigned sum's)."""
    n = qe.shape[0]
    u_max = np.empty(n, np.float32)
    for i in range(n):
        # slices indexed from 0 (see softmax_ranges)
        u_max[i] = _dac_row(qe[i], qe[i, r0:r1], M, b_dac, w, lhs[i], lhs[n + i])
    return u_max


@nb.jit(**_opts)
def key_cells(k, chan, step, half, level, a):
    """The cells' key-side factors a[level[code + half]] (float64, k's shape (n_kv, T, d)) of the
    keys' codes code = clip(rint(k / chan[h, c] / step[h]), -half, half - 1) (``chan`` None: no
    per-channel scale), in one pass and in the NumPy kernel's precisions (no fastmath: true
    divisions, so the codes are the same)."""
    H, T, d = k.shape
    out = np.empty((H, T, d), np.float64)
    lo, hi = -half, half - 1
    for h in range(H):
        sh = step[h]
        for t in range(T):
            kr, orow = k[h, t], out[h, t]
            for c in range(d):
                u = kr[c] / chan[h, c] if chan is not None else kr[c]
                r = min(max(np.rint(u / sh), lo), hi)
                orow[c] = a[level[np.int64(r) + half]]
    return out


@nb.jit(**_fast)
def dac_pairs(qe, M, b_dac, w, lhs):
    """``dac_lhs`` of a whole key (one tile) with each query's two operands side by side: lhs (n, 2, d),
    lhs[i, 0] = sign(q) b w, lhs[i, 1] = b (so a chunk of queries' rows are one matrix)."""
    n = qe.shape[0]
    u_max = np.empty(n, np.float32)
    for i in range(n):
        u_max[i] = _dac_row(qe[i], qe[i], M, b_dac, w, lhs[i, 0], lhs[i, 1])
    return u_max


@nb.jit(**_fast)
def task_operands(q, h0, b0, scale, chan, M, b_dac, w, qs_t, lhs_t, lhs, u_max):
    """A (block, KV head) task's query operands in the chunks' interleaved row order (query t of
    head h at row t g + h), from q (H, T, d) directly: qs_t[t, h] = q[h0 + h, b0 + t] x scale
    (float32), lhs_t[t, h] = ``dac_pairs`` of the equalised query qe = float32(q[h0 + h, b0 + t] x chan)
    (``chan`` None: qe = q; a float64 chan multiplies in float64 and rounds, as NumPy's
    float32 x float64), u_max[h tb + t] its DAC full scale; the drive also in block order
    (lhs[h tb + t] = lhs_t[t, h], the layout dac_pairs gives: the reference column's
    matrix-vector products on it round as before, which they need not on reordered rows). The
    same values as the NumPy products and dac_pairs on the (g tb, d) rows, without their copies
    and transposes."""
    tb, g, d = qs_t.shape
    qe = np.empty(d, np.float32)
    for t in range(tb):
        for h in range(g):
            # element by element, no row views (each view of a (t, h) row costs numba a reference
            # count: 7.3 -> 3.6 ns an element); _dac_row's arithmetic in its order
            m = np.float32(0.0)
            for c in range(d):
                x = q[h0 + h, b0 + t, c]
                qs_t[t, h, c] = x * scale
                if chan is not None:
                    x = np.float32(x * chan[c])
                qe[c] = x
                m = max(m, abs(x))
            m = m if m > 0 else np.float32(1.0)
            sc = np.float32(M) / m
            i = h * tb + t
            for c in range(d):
                x = qe[c]
                b = b_dac[np.int64(np.rint(abs(x) * sc))]
                sb = (b if x >= 0 else -b) * w[c]
                lhs_t[t, h, 0, c] = sb
                lhs_t[t, h, 1, c] = b
                lhs[i, 0, c] = sb
                lhs[i, 1, c] = b
            u_max[i] = m


@nb.jit(**_opts)
def anchor_max(exact, ptr, cols, T):
    """Largest exact score of each row among its query's anchor keys, given as a CSR list
    (query t's anchors: cols[ptr[t]:ptr[t + 1]]); -inf if none. Touches only the anchors."""
    n = exact.shape[0]
    out = np.empty(n, np.float32)
    for i in range(n):
        t = i % T
        m = np.float32(-np.inf)
        cl, row = cols[ptr[t]:ptr[t + 1]], exact[i]  # a slice indexed from 0 (see softmax_ranges)
        for c in range(cl.shape[0]):
            m = max(m, row[cl[c]])
        out[i] = m
    return out


@nb.jit(inline="always", **_fast)
def _counts(kp, kq):
    """Kept keys of a row, and those not kept by the previous row (kq): 8 flags at a time (a bool
    is one byte, 0 or 1, so the bytes of a word sum by one multiply: (w x 0x0101..01) >> 56;
    kp & ~kq stays 0 / 1 per byte), the rest one by one. Exact, as the flag-by-flag loop it
    replaces (14 % of decide_chunk's time on captured chunks)."""
    n = kp.shape[0]
    n8 = n - n % 8
    ones = np.uint64(0x0101010101010101)
    sh = np.uint64(56)
    c = np.uint64(0)
    nw = np.uint64(0)
    for s in range(0, n8, 8):
        a = _bytes8(kp, s)
        b = _bytes8(kq, s)
        c += (a * ones) >> sh
        nw += ((a & ~b) * ones) >> sh
    for s in range(n8, n):
        c += np.uint64(kp[s])
        nw += np.uint64(kp[s] & ~kq[s])
    return np.int32(c), np.int32(nw)


@nb.jit(inline="always", **_fast)
def _kept_row(e, b, kp, kq):
    """One row of exact scores e, in place: e <- exp(e - max over the allowed keys) on kept keys
    (kp), 0 elsewhere; b: 0 allowed / -inf not; kq: the previous row's kept keys. Returns (sum of
    kept weights, share of the ideal softmax mass kept, kept count, newly kept count)."""
    return _kept_from_max(e, _max_biased(e, b), b, kp, kq)


@nb.jit(inline="always", **_fast)
def _kept_from_max(e, m, b, kp, kq):
    """The rest of ``_kept_row`` once the row maximum m over the allowed keys is known."""
    zero = np.float32(0.0)
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


@nb.jit(**_opts)
def _threshold_row(m, theta, base, vpl, mu, anchor):
    """A row's comparator constant as the NumPy kernel forms it (no contraction into an FMA, so it
    is the same float32 value): thr = anchors' best m - theta (anchor rule) or theta (fixed), in
    theta's precision then float32; base - thr vpl - mu in float32."""
    thr = np.float32(m - theta) if anchor else np.float32(theta)
    return (base - thr * vpl) - mu


@nb.jit(**_fast)
def decide_chunk(e, both, t0, g, tb, S, lk, anchor, ptr, cols, theta, base, vpl, mu, off, r, c2, k2, cn2,
                 pool, start, bias, allowed, forced, keep, tot, mass, kept, new):
    """``decide_softmax`` (with the anchor maximum and the row constants of the NumPy kernel) on
    a chunk of queries t0 .. t0 + R of the g heads of one KV head, the heads interleaved: chunk
    row q is query t = t0 + q // g of head h = q % g, block row i = h tb + t (the rows of g heads
    in one matrix product each: the keys are packed once for all of them). The chunk sees only
    keys lk .. lk + L of the block's S (e: (g R, L), the other keys are not allowed for any of its
    rows; both: (2 g R, L), row 2q the chunk row q's iw, row 2q + 1 its sab). Row i: m = max of e
    over the query's anchors cols[ptr[t]:ptr[t+1]] (block key indices); row constant
    ``_threshold_row(m, theta[h], base[i], vpl[i], mu)``; the comparator noise sample of key s is
    pool[start + i S + s] as in ``decide_softmax``; keep[i] (the full block row) written, False
    outside the chunk's keys; tot/mass/kept/new[i] as ``kept_softmax`` (row i - 1's keep, the
    previous query of the head, is written by an earlier chunk row or chunk). Loops over slices
    from 0. Returns the number of rows whose kept weights all underflowed (tot < 1e-30)."""
    M, L = e.shape
    bad = 0
    r, c2, k2, cn2 = np.float32(r), np.float32(c2), np.float32(k2), np.float32(cn2)
    one, zero = np.float32(1.0), np.float32(0.0)
    for q in range(M):
        t = t0 + q // g
        h = q % g
        i = h * tb + t
        er = e[q]
        m = np.float32(-np.inf)
        if anchor:
            cl = cols[ptr[t]:ptr[t + 1]]
            for c in range(cl.shape[0]):
                m = max(m, er[cl[c] - lk])
        ri = _threshold_row(m, theta[h], base[i], vpl[i], mu, anchor)
        z = pool[start + i * S + lk:start + i * S + lk + L]
        if q + 1 < M:  # the next row's noise samples: a stream from memory (the pool is 32 MB),
            q1 = q + 1  # fetched while this row runs (1.55 -> 1.10 ns/key)
            nxt = start + ((q1 % g) * tb + t0 + q1 // g) * S + lk
            if nxt + L <= pool.shape[0]:
                for u in range(0, L, 16):
                    _prefetch(pool, nxt + u)
        a_, b_, o_ = both[2 * q], both[2 * q + 1], off[lk:lk + L]
        al, fo, bi = allowed[t, lk:lk + L], forced[t, lk:lk + L], bias[t, lk:lk + L]
        kfull = keep[i]
        ke = kfull[lk:lk + L]
        # the comparator, and in the same pass the row maximum on e + bias (float adds, then
        # integer keys, as _max_biased: LLVM vectorises it; a select on the allowed flags instead
        # was turned into branches in this loop nest and ran scalar). One pass over the row
        # instead of two: 2.26 -> 2.07 ns a key on 48 captured chunks of a layer-0 call (7 rounds,
        # medians; the same bits)
        mk = np.int32(_KEY_NONE)
        for s in range(L):
            x = a_[s]
            y = b_[s]
            v = r * (x * (one + c2 * y)) + ri + o_[s] + np.sqrt(cn2 + k2 * (x * x + y * y)) * z[s]
            ke[s] = (al[s] & (v > zero)) | fo[s]
            mk = max(mk, _key(er[s] + bi[s]))
        kfull[:lk] = False
        kfull[lk + L:] = False
        kq = keep[i - 1, lk:lk + L] if t > 0 else ke
        k_, ms, c, nw = _kept_from_max(er, _unkey(mk), bi, ke, kq)
        tot[i] = k_
        mass[i] = ms
        kept[i] = c
        new[i] = nw
        bad += k_ < 1e-30
    return bad


@nb.jit(**_opts)
def scatter_chunk(o, tot, t0, g, tb, out, b0, h0):
    """A chunk's weighted values normalised into the (T, H, d) output: chunk row q (query
    t = t0 + q // g of head h = q % g, block row i = h tb + t) goes to out[b0 + t, h0 + h] as
    o[q] / tot[i] (true float32 divisions, no fast-math reciprocal: NumPy's o / tot bit for bit),
    without the GIL (on two lanes a NumPy call between the products waits for it)."""
    M, d = o.shape
    for q in range(M):
        t = t0 + q // g
        h = q % g
        den = tot[h * tb + t]
        src, dst = o[q], out[b0 + t, h0 + h]
        for c in range(d):
            dst[c] = src[c] / den


@nb.jit(**_fast)
def block_masks(qpos, kpos, kind, mwin, win, anchor, sink, local, C):
    """A query block's masks as the pruning kernel makes them with NumPy (``Mask.allowed`` of
    kind 0 causal / 1 sliding over mwin tokens / 2 bidirectional, narrowed to the kernel's own
    window ``win`` when non-zero; forced: the query's own key, and with the anchor rule the
    first ``sink`` positions and the last ``local``; forced only where allowed), in one pass:
    (allowed, forced (T, S) bool; bias (T, S) float32 0 / -inf; the forced keys as a CSR list
    ptr (T + 1), cols; allowed keys per query; free (allowed, not forced) count; per chunk of C
    queries the key range [lk, hk) holding every allowed key of its queries (hk <= lk: none)).
    Branch-free element loop (bitwise & and |, no short-circuit), so LLVM vectorises it."""
    T, S = qpos.shape[0], kpos.shape[0]
    allowed = np.empty((T, S), np.bool_)
    forced = np.empty((T, S), np.bool_)
    bias = np.empty((T, S), np.float32)
    n_allowed = np.zeros(T, np.int64)
    ptr = np.zeros(T + 1, np.int64)
    cols = np.empty(T * S, np.int64)
    nc = (T + C - 1) // C
    lk = np.full(nc, S, np.int64)
    hk = np.zeros(nc, np.int64)
    n_free = 0
    nf = 0
    every, sliding, narrowed = kind == 2, kind != 1, win == 0
    for t in range(T):
        qp = qpos[t]
        al, fo, bi = allowed[t], forced[t], bias[t]
        na = 0
        nfr = 0
        for s in range(S):
            kp = kpos[s]
            ok = (every | (kp <= qp)) & (sliding | (kp > qp - mwin)) & (narrowed | (kp > qp - win))
            f = ((kp == qp) | (anchor & ((kp < sink) | (kp > qp - local)))) & ok
            al[s] = ok
            fo[s] = f
            bi[s] = np.float32(0.0) if ok else np.float32(-np.inf)
            na += np.int64(ok)
            nfr += np.int64(ok & ~f)
        n_allowed[t] = na
        n_free += nfr
        for s in range(S):  # forced keys: a few per row
            if fo[s]:
                cols[nf] = s
                nf += 1
        ptr[t + 1] = nf
        if na:
            a = 0
            while not al[a]:
                a += 1
            b = S
            while not al[b - 1]:
                b -= 1
            ch = t // C
            lk[ch] = min(lk[ch], a)
            hk[ch] = max(hk[ch], b)
    return allowed, forced, bias, ptr, cols[:nf].copy(), n_allowed, n_free, lk, hk
