"""Shared compiled pieces: jit options, the vectorisable float32 exp, the lane max, the ADC
(one element of :func:`..peripherals.adc`)."""
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


_KEY_NONE = -2147483648  # the key of no float (a negative NaN's): the maximum of nothing


@intrinsic
def _key(typingctx, v):
    """An int32 that orders like the float32 v (sign bit clear: v's bits; set: its bits with the
    other 31 flipped, so more negative floats are smaller integers; -0.0 just below 0.0). In
    32-bit integer arithmetic throughout (numba's own would widen it to 64 bits, and the max
    reductions over it would then run half as many lanes)."""
    if not isinstance(v, types.Float) or v.bitwidth != 32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        flip = builder.and_(builder.ashr(bits, ir.Constant(i32, 31)), ir.Constant(i32, 0x7fffffff))
        return builder.xor(bits, flip)
    return types.int32(v), codegen


@intrinsic
def _bytes8(typingctx, arr, offset):
    """The 8 bytes arr[offset:offset + 8] of a C-contiguous bool or uint8 array as one
    little-endian uint64 (an unaligned load; the caller keeps it in bounds)."""
    if not (isinstance(arr, types.Array) and arr.dtype in (types.boolean, types.uint8)
            and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [args[1]])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
    return types.uint64(arr, offset), codegen


@nb.jit(inline="always", **_fast)
def _unkey(m):
    """The float32 of a key from :func:`_key`; -inf for _KEY_NONE."""
    if m == np.int32(_KEY_NONE):
        return np.float32(-np.inf)
    return _as_float32(m ^ ((m >> np.int32(31)) & np.int32(0x7fffffff)))


@nb.jit(inline="always", **_fast)
def _max_biased(e, b):
    """max(e + b) of two float32 rows (-inf when empty), as an integer max of :func:`_key` s,
    which LLVM vectorises (a float max reduction stays scalar without the no-NaN flag: 8
    interleaved float accumulators took 0.37 ns an element). The float max's value for NaN-free
    sums, except that a maximum of zeros may come back as 0.0 where the float max gave -0.0 (the
    same exponentials and sums downstream: x - 0.0 == x - (-0.0) but for x = -0.0, exp 1)."""
    m = np.int32(_KEY_NONE)
    for s in range(e.shape[0]):
        m = max(m, _key(e[s] + b[s]))
    return _unkey(m)


@nb.jit(inline="always", **_fast)
def _lane_max(row):
    """max of a float32 row (-inf when empty), as an integer max of :func:`_key` s, which LLVM
    vectorises (the ideal softmax pass with 8 interleaved float accumulators instead took 1.6-2x
    as long, paired, fresh compiles). The float max's value for rows without NaN, except that a
    row whose largest values are -0.0 and 0.0 gives 0.0 (the float max gave whichever came
    first: the same exponentials and sums downstream)."""
    m = np.int32(_KEY_NONE)
    for s in range(row.shape[0]):
        m = max(m, _key(row[s]))
    return _unkey(m)


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
def _pulse(v, L, invL):
    """A pulse width: v clipped to [0, 1], rounded to L + 1 levels when L > 0 (one element of
    :func:`..peripherals.pulse`; L = levels - 1, invL = 1 / L)."""
    v = min(max(v, np.float32(0.0)), np.float32(1.0))
    if L > 0:
        v = np.rint(v * L) * invL
    return v


@nb.jit(**_fast)
def adc_rows(x, full, half, out):
    """out[i] = the ADC (``_adc``) of row x[i] over +-full[i]: for tests against the NumPy ADC."""
    for i in range(x.shape[0]):
        inv, step = _adc_steps(full[i], half)
        for j in range(x.shape[1]):
            out[i, j] = _adc(x[i, j], inv, step, half)


@nb.jit(**_fast)
def pulse_rows(x, levels, out):
    """out = ``_pulse`` of x with ``levels`` levels: for tests against the NumPy pulse quantiser."""
    L = np.float32(levels - 1) if levels > 1 else np.float32(0.0)
    invL = np.float32(1.0) / L if levels > 1 else np.float32(0.0)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = _pulse(x[i, j], L, invL)
