"""NumPy's standard normals in compiled loops: the same deviates as
``np.random.default_rng(...).standard_normal(shape[, dtype=np.float32])``, bit for bit, leaving the
generator in the same state, fillable in any thread with the GIL released. Used by both circuit
kernels for their read noise, comparator noise and cell variation.

The algorithms, as NumPy implements them: PCG64 (O'Neill 2014: a 128-bit LCG with the multiplier
below and the XSL-RR output; a float32 takes the low then the high 32-bit half of one 64-bit
output, the high half kept in the generator's state between calls, and a 64-bit draw does not touch
it) and the ziggurat method (Marsaglia & Tsang 2000) with 256 layers, its tables taken from numba's
port of NumPy's (``numba.np.random._constants``), C's log1p/log1pf and exp on the rare tail and
wedge paths. Other bit generators fall back to NumPy's own draw.

How it is fast (NumPy's loop calls the bit generator through a function pointer per deviate; a
plain compiled loop waits on one 128-bit multiply chain per output and tests every candidate with
branches), in blocks of up to ``_BLOCK`` 64-bit outputs:

- the block's outputs in one loop without a carried dependency: output k of a block starting at
  state s is that of s_(k+1) = A_(k+1) s + C_(k+1) (mod 2^128), an LCG jumped ahead (Brown 1994,
  "Random number generation with arbitrary strides"; A_j = a^j, C_j = c (1 + a + ... + a^(j-1)),
  A_j tabled at import, C_j once per call); the 64 x 64-bit products written with 32-bit halves,
  so that the compiler vectorises the loop (vpmuludq);
- the ziggurat's fast path (accept when rabs < ki[idx], ~98.5 %) for every word of the block in a
  vectorised loop, a candidate not accepted at once flagged (a byte, read 8 at a time);
- a sequential pass copies accepted values in order, 32 at a time, and at a flag runs NumPy's
  rejection step (a wedge or the tail) on that word, whose uniforms are the following words, as
  NumPy's stream gives them; a word so taken is not a candidate, its precomputed value unused;
- the generator ends where NumPy's does: advanced by the number of 64-bit outputs taken (O(log n)
  jump, PCG's ``pcg_advance`` algorithm), the kept 32-bit half from the block, not by what the
  blocks made.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.random._constants import fi_double as _FI64, fi_float as _FI, ki_double as _KI64, ki_float as _KI
from numba.np.random._constants import wi_double as _WI64, wi_float as _WI
from numba.np.random._constants import ziggurat_nor_inv_r as _ZINV64, ziggurat_nor_inv_r_f as _ZINV
from numba.np.random._constants import ziggurat_nor_r as _ZR64, ziggurat_nor_r_f as _ZR

from .common import _as_float32, _bytes8, _opts

_M64 = (1 << 64) - 1
_PCG_MUL = 0x2360ED051FC65DA44385DF649FCCF645  # PCG64's 128-bit LCG multiplier (NumPy's pcg64.h)
_PCG_MUL_HI = np.uint64(_PCG_MUL >> 64)
_PCG_MUL_LO = np.uint64(_PCG_MUL & _M64)
_BLOCK = 1024  # 64-bit outputs per block at most (the jump tables 48 kB, a block's words 8 kB)


def _jump_tables(n):
    """A_j = a^j and S_j = 1 + a + ... + a^(j-1) (mod 2^128) for j = 1..n: (A hi, A lo, A lo's low
    32 bits, A lo's high 32 bits, the same four of S), uint64 arrays indexed j - 1."""
    a, s, out = 1, 0, []
    for _ in range(n):
        s = (s * _PCG_MUL + 1) & ((1 << 128) - 1)  # S_(j+1) = a S_j + 1
        a = (a * _PCG_MUL) & ((1 << 128) - 1)
        out.append((a, s))
    cols = []
    for v in zip(*out):
        hi = np.array([x >> 64 for x in v], np.uint64)
        lo = np.array([x & _M64 for x in v], np.uint64)
        cols += [hi, lo, lo & np.uint64(0xFFFFFFFF), lo >> np.uint64(32)]
    return cols


_AH, _AL, _AL0, _AL1, _SH, _SL, _SL0, _SL1 = _jump_tables(_BLOCK)

_U0, _U1 = np.uint64(0), np.uint64(1)
_M32, _S32 = np.uint64(0xFFFFFFFF), np.uint64(32)
_B8, _B23, _B52 = np.uint32(0xFF), np.uint32(0x007FFFFF), np.uint64(0x000FFFFFFFFFFFFF)
_KW = (_WI.view(np.uint32).astype(np.uint64) << np.uint64(32)) | _KI.astype(np.uint64)  # see _fast32


@intrinsic
def _mulhi64(typingctx, a, b):
    """The high 64 bits of the 128-bit product of two uint64."""
    if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i128 = ir.IntType(128)
        p = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        return builder.trunc(builder.lshr(p, ir.Constant(i128, 64)), ir.IntType(64))
    return types.uint64(types.uint64, types.uint64), codegen


@intrinsic
def _cttz64(typingctx, a):
    """The number of trailing zero bits of a nonzero uint64 (one tzcnt)."""
    if not isinstance(a, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
    return types.uint64(types.uint64), codegen


@intrinsic
def _copy64b(typingctx, dst, i, src, p):
    """dst[i:i + m] = src[p:p + m] for the m = 64 / itemsize elements of 64 bytes (16 float32 or
    8 float64), C-contiguous arrays of one dtype that do not overlap: a memcpy of constant length,
    one or two vector moves (the caller keeps it in bounds)."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype):
        return None

    def codegen(context, builder, sig, args):
        d = context.make_array(sig.args[0])(context, builder, args[0]).data
        s = context.make_array(sig.args[2])(context, builder, args[2]).data
        item = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        cgutils.raw_memcpy(builder, builder.gep(d, [args[1]]), builder.gep(s, [args[3]]),
                           ir.Constant(ir.IntType(64), 64 // item), item)
        return context.get_dummy_value()
    return types.none(dst, i, src, p), codegen


@nb.jit(inline="always", **_opts)
def _mul128(ahi, alo, bhi, blo):
    """(a * b) mod 2^128 in (high, low) uint64 words."""
    return _mulhi64(alo, blo) + alo * bhi + ahi * blo, alo * blo


@nb.jit(inline="always", **_opts)
def _add128(ahi, alo, bhi, blo):
    """(a + b) mod 2^128 in (high, low) uint64 words."""
    lo = alo + blo
    return ahi + bhi + (_U1 if lo < alo else _U0), lo


@nb.jit(inline="always", **_opts)
def _affine(shi, slo, ahi, alo, chi, clo):
    """a s + c (mod 2^128): one LCG step, or j steps with (A_j, C_j)."""
    phi, plo = _mul128(shi, slo, ahi, alo)
    return _add128(phi, plo, chi, clo)


@nb.jit(inline="always", **_opts)
def _xslrr(hi, lo):
    """PCG64's output of a state: (hi xor lo) rotated right by the state's top 6 bits."""
    v = hi ^ lo
    rot = hi >> np.uint64(58)
    return (v >> rot) | (v << ((np.uint64(64) - rot) & np.uint64(63)))


@nb.jit(**_opts)
def _advance(shi, slo, ihi, ilo, delta):
    """The PCG64 state ``delta`` steps after s (increment i): a^delta s + c (a^(delta-1) + ... + 1),
    by squaring (O'Neill's pcg_advance_lcg_128, after Brown 1994)."""
    amh, aml = _U0, _U1  # the accumulated multiplier and increment
    aph, apl = _U0, _U0
    cmh, cml = _PCG_MUL_HI, _PCG_MUL_LO  # those of 2^k steps
    cph, cpl = ihi, ilo
    d = np.uint64(delta)
    while d > _U0:
        if d & _U1:
            amh, aml = _mul128(amh, aml, cmh, cml)
            aph, apl = _affine(aph, apl, cmh, cml, cph, cpl)
        th, tl = _add128(cmh, cml, _U0, _U1)
        cph, cpl = _mul128(th, tl, cph, cpl)
        cmh, cml = _mul128(cmh, cml, cmh, cml)
        d = d >> _U1
    return _affine(shi, slo, amh, aml, aph, apl)


@nb.jit(inline="always", **_opts)
def _mul_split(a0, a1, b0, b1):
    """(high, low) words of the 128-bit product of a = a1 2^32 + a0 and b = b1 2^32 + b0, all
    four halves < 2^32: four 32 x 32-bit products, which vectorise (vpmuludq); given as halves
    loaded apart, the compiler does not fold them back into one scalar 64 x 64 multiply."""
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    return a1 * b1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32), (mid << _S32) | (p00 & _M32)


@nb.jit(**_opts)
def _jump_increments(ihi, ilo, ch, cl, nout):
    """C_j = inc S_j (mod 2^128) for j = 1..nout into ch, cl[j - 1]."""
    a0, a1 = ilo & _M32, ilo >> _S32
    for k in range(nout):
        h, lo = _mul_split(a0, a1, _SL0[k] & _M32, _SL1[k] & _M32)
        ch[k] = h + ilo * _SH[k] + ihi * _SL[k]
        cl[k] = lo


@nb.jit(**_opts)
def _fill(sb, ch, cl, w, nout):
    """w[:nout] = the nout outputs after the state sb = [hi, lo] (nout <= _BLOCK), sb moved on by
    nout steps: output k is that of A_(k+1) s + C_(k+1), every k independent."""
    shi, slo = sb[0], sb[1]
    a0, a1 = slo & _M32, slo >> _S32
    for k in range(nout):
        h, lo = _mul_split(a0, a1, _AL0[k] & _M32, _AL1[k] & _M32)
        h += slo * _AH[k] + shi * _AL[k]
        lo2 = lo + cl[k]
        w[k] = _xslrr(h + ch[k] + (_U1 if lo2 < lo else _U0), lo2)
    sb[0], sb[1] = _affine(shi, slo, _AH[nout - 1], _AL[nout - 1], ch[nout - 1], cl[nout - 1])


@nb.jit(inline="always", **_opts)
def _cand32(r):
    """NumPy's float32 ziggurat candidate of a 32-bit word: (x, accepted at once, idx, rabs)."""
    idx = r & _B8
    rabs = (r >> np.uint32(9)) & _B23
    x = np.float32(np.int32(rabs)) * _WI[idx]  # rabs < 2^23: exact
    x = -x if (r >> np.uint32(8)) & np.uint32(1) else x
    return x, rabs < _KI[idx], idx, rabs


@nb.jit(**_opts)
def _fast32(u, xs, fl, nw):
    """xs[k] = the float32 candidate of word u[k], fl[k] = 1 if the ziggurat does not accept it at
    once, else 0: _cand32 in a loop the compiler vectorises, its two table reads one gather from
    _KW (wi's bits in the high half, ki in the low)."""
    for k in range(nw):
        r = u[k]
        t = _KW[r & _B8]
        rabs = (r >> np.uint32(9)) & _B23
        x = np.float32(np.int32(rabs)) * _as_float32(t >> _S32)
        xs[k] = -x if (r >> np.uint32(8)) & np.uint32(1) else x
        fl[k] = np.uint8(0) if rabs < (t & _M32) else np.uint8(1)


@nb.jit(**_opts)
def _fast64(w, xs, fl, nw):
    """xs[k] = the float64 candidate of output w[k], fl[k] = 1 if the ziggurat does not accept it
    at once, else 0."""
    for k in range(nw):
        r = w[k]
        idx = r & np.uint64(0xFF)
        rabs = (r >> np.uint64(9)) & _B52
        x = np.float64(np.int64(rabs)) * _WI64[idx]  # rabs < 2^52: exact
        xs[k] = -x if (r >> np.uint64(8)) & _U1 else x
        fl[k] = np.uint8(0) if rabs < _KI64[idx] else np.uint8(1)


@nb.jit(**_opts)
def _refill(sb, ihi, ilo, ch, cl, nc, w, u, xs, fl, words):
    """A new block of about ``words`` words (+2 % and a few for the rejections' extra words; more
    blocks follow if short), 32-bit if u has words (float32), else 64-bit: the generator's outputs
    into w and the words' fast-path values and flags into xs and fl. C_j tabled first as far as needed (nc entries
    are). Returns (the block's words, a multiple of 16, and the entries of C now tabled)."""
    per = 2 if u.shape[0] else 1
    nout = min(_BLOCK, (words + words // 50 + 32) // per)
    nout = (nout + 15) & ~15
    if nout > nc:
        nc = _BLOCK if nc else nout
        _jump_increments(ihi, ilo, ch, cl, nc)
    _fill(sb, ch, cl, w, nout)
    if per == 2:
        _fast32(u, xs, fl, 2 * nout)
    else:
        _fast64(w, xs, fl, nout)
    return per * nout, nc


@nb.jit(**_opts)
def _log1pf(x):
    return np.log1p(x)  # float32: C's log1pf, as NumPy's npy_log1pf(-U)


# The sequential passes below take no array-valued helper inline (numba would count references to
# its array arguments at every use, atomic operations costing more than the rest of a rejection);
# the one refill site is an ordinary call, once a block.

@nb.jit(**_opts)
def pcg64_normals_f32(st, out):
    """Fill ``out`` (float32, any shape, C order) with standard normals from the PCG64 state
    st = [state hi, state lo, inc hi, inc lo, has_uint32, uinteger] (uint64), updated in place:
    NumPy's ``random_standard_normal_f`` per element (ziggurat; log1pf(-U) in the tail), its
    32-bit words NumPy's next_uint32: the kept half first if there is one, then the low and the
    high half of each 64-bit output. Words after a candidate rejected at once are its uniforms
    (next_float: 24 bits), one for a wedge, pairs for the tail; ``mode`` says what the next word
    is."""
    flat = out.reshape(-1)
    n = flat.shape[0]
    if n == 0:
        return
    shi, slo, ihi, ilo = st[0], st[1], st[2], st[3]
    sb = np.array([shi, slo])
    ch = np.empty(_BLOCK, np.uint64)
    cl = np.empty(_BLOCK, np.uint64)
    w = np.empty(_BLOCK, np.uint64)
    u = w.view(np.uint32)  # little-endian: word 2k the low half of output k, 2k + 1 its high half
    xs = np.empty(2 * _BLOCK, np.float32)
    fl = np.empty(2 * _BLOCK, np.uint8)
    inv24 = np.float32(1.0 / 16777216.0)
    mode = 0  # the next word: 0 a candidate, 1 a wedge's uniform, 2 and 3 the tail's pair
    x = xx = np.float32(0.0)
    idx = rabs = np.uint32(0)
    p = nw = done = nc = 0  # the position in the block, its words, the words of earlier blocks
    i = 0
    if st[4]:  # the kept half: the first candidate
        x, ok, idx, rabs = _cand32(np.uint32(st[5]))
        if ok:
            flat[0] = x
            i = 1
        else:
            mode = 2 if idx == 0 else 1
    while i < n:
        if p == nw:
            done += nw
            nw, nc = _refill(sb, ihi, ilo, ch, cl, nc, w, u, xs, fl, n - i)
            p = 0
        if mode == 0:
            if p + 32 <= nw and i + 32 <= n:  # 32 copied, then checked
                _copy64b(flat, i, xs, p)
                _copy64b(flat, i + 16, xs, p + 16)
                g = _bytes8(fl, p)
                k = 0
                while g == _U0 and k < 24:
                    k += 8
                    g = _bytes8(fl, p + k)
                if g == _U0:
                    i += 32
                    p += 32
                    continue
                k += np.int64(_cttz64(g) >> np.uint64(3))  # the first not accepted at once
                i += k
                p += k
            elif fl[p] == 0:
                flat[i] = xs[p]
                i += 1
                p += 1
                continue
            x, _, idx, rabs = _cand32(u[p])  # rejected at once: a wedge or the tail follows
            p += 1
            mode = 2 if idx == 0 else 1
            continue
        f = np.float32(np.int64(u[p] >> np.uint32(8))) * inv24
        p += 1
        if mode == 1:  # the wedge
            flat[i] = x  # kept if accepted (no branch on a coin toss)
            i += np.int64((_FI[idx - 1] - _FI[idx]) * f + _FI[idx] < np.exp(-0.5 * np.float64(x) * np.float64(x)))
            mode = 0
        elif mode == 2:
            xx = -_ZINV * _log1pf(-f)
            mode = 3
        else:
            yy = -_log1pf(-f)
            if yy + yy > xx * xx:
                flat[i] = -(_ZR + xx) if ((rabs >> np.uint32(8)) & np.uint32(1)) else _ZR + xx
                i += 1
                mode = 0
            else:
                mode = 2
    k = done + p  # fresh words taken (after the kept half, if one)
    if k == 0:  # the kept half only
        st[4] = 0
        return
    m = (k + 1) // 2  # 64-bit outputs taken; if k is odd, the last one's high half is kept
    st[0], st[1] = _advance(shi, slo, ihi, ilo, m)
    st[4] = k & 1
    st[5] = u[p] if k & 1 else u[p - 1]  # the high half of output m - 1 (done is even, p >= 1)


@nb.jit(**_opts)
def pcg64_normals_f64(st, out):
    """Fill ``out`` (float64, any shape, C order) with standard normals from the PCG64 state
    st = [state hi, state lo, inc hi, inc lo] (uint64), updated in place: NumPy's
    ``random_standard_normal`` per element, one 64-bit output per candidate and per uniform
    (next_double: 53 bits); as pcg64_normals_f32 otherwise."""
    flat = out.reshape(-1)
    n = flat.shape[0]
    if n == 0:
        return
    shi, slo, ihi, ilo = st[0], st[1], st[2], st[3]
    sb = np.array([shi, slo])
    ch = np.empty(_BLOCK, np.uint64)
    cl = np.empty(_BLOCK, np.uint64)
    w = np.empty(_BLOCK, np.uint64)
    u = np.empty(0, np.uint32)  # (64-bit words)
    xs = np.empty(_BLOCK, np.float64)
    fl = np.empty(_BLOCK, np.uint8)
    inv53 = 1.0 / 9007199254740992.0
    mode = 0
    x = xx = 0.0
    idx = rabs = _U0
    p = nw = done = nc = 0
    i = 0
    while i < n:
        if p == nw:
            done += nw
            nw, nc = _refill(sb, ihi, ilo, ch, cl, nc, w, u, xs, fl, n - i)
            p = 0
        if mode == 0:
            if p + 32 <= nw and i + 32 <= n:  # 32 copied, then checked
                _copy64b(flat, i, xs, p)
                _copy64b(flat, i + 8, xs, p + 8)
                _copy64b(flat, i + 16, xs, p + 16)
                _copy64b(flat, i + 24, xs, p + 24)
                g = _bytes8(fl, p)
                k = 0
                while g == _U0 and k < 24:
                    k += 8
                    g = _bytes8(fl, p + k)
                if g == _U0:
                    i += 32
                    p += 32
                    continue
                k += np.int64(_cttz64(g) >> np.uint64(3))
                i += k
                p += k
            elif fl[p] == 0:
                flat[i] = xs[p]
                i += 1
                p += 1
                continue
            r = w[p]
            p += 1
            idx = r & np.uint64(0xFF)
            rabs = (r >> np.uint64(9)) & _B52
            x = np.float64(np.int64(rabs)) * _WI64[idx]
            x = -x if (r >> np.uint64(8)) & _U1 else x
            mode = 2 if idx == 0 else 1
            continue
        f = np.float64(np.int64(w[p] >> np.uint64(11))) * inv53
        p += 1
        if mode == 1:  # the wedge
            flat[i] = x
            i += np.int64((_FI64[idx - 1] - _FI64[idx]) * f + _FI64[idx] < np.exp(-0.5 * x * x))
            mode = 0
        elif mode == 2:
            xx = -_ZINV64 * np.log1p(-f)
            mode = 3
        else:
            yy = -np.log1p(-f)
            if yy + yy > xx * xx:
                flat[i] = -(_ZR64 + xx) if ((rabs >> np.uint64(8)) & _U1) else _ZR64 + xx
                i += 1
                mode = 0
            else:
                mode = 2
    st[0], st[1] = _advance(shi, slo, ihi, ilo, done + p)


def _draw(rng, shape, dtype, out=None):
    """``rng.standard_normal(shape, dtype)`` through the compiled loop when ``rng`` is a PCG64
    generator: its state taken out, the deviates drawn, the state put back. ``out``: a C-contiguous
    array of ``dtype`` and ``shape`` to fill (a reused buffer: no fresh pages to fault in)."""
    if out is not None and (out.dtype != dtype or tuple(out.shape) != tuple(shape) or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype).name} array of shape {tuple(shape)}")
    bg = rng.bit_generator
    if type(bg) is not np.random.PCG64:
        if out is None:
            return rng.standard_normal(shape, dtype=dtype)
        return rng.standard_normal(dtype=dtype, out=out)
    s = bg.state
    x, inc = s["state"]["state"], s["state"]["inc"]
    out = np.empty(shape, dtype) if out is None else out
    if dtype == np.float32:
        st = np.array([x >> 64, x & _M64, inc >> 64, inc & _M64, s["has_uint32"], s["uinteger"]], np.uint64)
        pcg64_normals_f32(st, out)
        s["has_uint32"], s["uinteger"] = int(st[4]), int(st[5])
    else:
        st = np.array([x >> 64, x & _M64, inc >> 64, inc & _M64], np.uint64)
        pcg64_normals_f64(st, out)
    s["state"]["state"] = (int(st[0]) << 64) | int(st[1])
    bg.state = s
    return out


def standard_normal_f32(rng, shape, out=None):
    """``rng.standard_normal(shape, dtype=np.float32)``, bit for bit, ``rng`` left in the same
    state; into ``out`` when given."""
    return _draw(rng, shape, np.float32, out)


def standard_normal_f64(rng, shape, out=None):
    """``rng.standard_normal(shape)`` (float64), bit for bit, ``rng`` left in the same state; into
    ``out`` when given."""
    return _draw(rng, shape, np.float64, out)
