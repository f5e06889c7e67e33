"""Optional compiled evaluation of the surrogate kinds (numba, one pass over memory in blocks
that stay in cache; the per-element passes are written so LLVM vectorises them).

Loading and evaluating a bundle needs only NumPy: when numba is not importable (or
ANALOGATTN_NO_NUMBA is set), ``AVAILABLE`` is False and the models use their NumPy paths, which
compute the same function (tested equal to float32 rounding).
"""
from __future__ import annotations

import os

import numpy as np

AVAILABLE = False
if not os.environ.get("ANALOGATTN_NO_NUMBA"):
    try:
        import numba as _nb
        AVAILABLE = True
    except ImportError:  # pragma: no cover - numba is a dependency of the package, optional here
        AVAILABLE = False

BLOCK = 4096
PARALLEL_MIN = 1 << 20  # arrays at least this large are split over the cores in blocks


def table2d(x, y, patches, ny1, ox, sx, hx, oy, sy, hy, out):
    (_table2d_par if x.size >= PARALLEL_MIN else _table2d)(x, y, patches, ny1, ox, sx, hx, oy, sy, hy, out)


def poly2d(x, y, c, x0, y0, xl, xh, yl, yh, out):
    (_poly2d_par if x.size >= PARALLEL_MIN else _poly2d)(x, y, c, x0, y0, xl, xh, yl, yh, out)


def _table2d_py(x, y, patches, ny1, ox, sx, hx, oy, sy, hy, out):
    """Bilinear patch (p0, p1, p2, p3) of grid cell (ix, iy): p0 + p1 wy + p2 wx + p3 wx wy,
    inputs clipped to the grid. One pass per block, over slices of the block indexed from 0:
    indexing from the block's run-time offset (x[s + k]) keeps numba's negative-index
    wraparound in the loop, which then neither vectorises nor scaled over the cores
    (39 ms for 10^7 inputs on 2 cores that way, 15-19 ms this way). Two passes per block: the
    cell indices and weights (LLVM vectorises it), then the patches' loads and the sums (scalar:
    one loop doing both ran scalar throughout; on an AMD EPYC, Zen 4, 10^7 inputs took 22.8 ->
    16.6 ms on 2 cores, 34.7 -> 28.4 ms on one, medians of 7 paired rounds, the same bits)."""
    n = x.size
    for b in _nb.prange((n + BLOCK - 1) // BLOCK):
        s = b * BLOCK
        e = min(s + BLOCK, n)
        xs, ys, os_ = x[s:e], y[s:e], out[s:e]
        cell = np.empty(BLOCK, np.int64)
        wxs, wys = np.empty(BLOCK), np.empty(BLOCK)
        for k in range(e - s):
            fx = min(max((xs[k] - ox) * sx, 0.0), hx)
            fy = min(max((ys[k] - oy) * sy, 0.0), hy)
            ix, iy = np.int64(fx), np.int64(fy)
            wxs[k], wys[k] = fx - ix, fy - iy
            cell[k] = ix * ny1 + iy
        for k in range(e - s):
            i, wx, wy = cell[k], wxs[k], wys[k]
            os_[k] = (patches[i, 3] * wx + patches[i, 1]) * wy + patches[i, 2] * wx + patches[i, 0]


def _poly2d_py(x, y, c, x0, y0, xl, xh, yl, yh, out):
    """Horner in y inside Horner in x of sum c[i, j] (x - x0)^i (y - y0)^j, i + j <= deg;
    each Horner step a vectorised pass over a block."""
    n = x.size
    deg = c.shape[0] - 1
    for b in _nb.prange((n + BLOCK - 1) // BLOCK):
        u, v = np.empty(BLOCK), np.empty(BLOCK)
        acc, inner = np.empty(BLOCK), np.empty(BLOCK)
        s = b * BLOCK
        m = min(s + BLOCK, n) - s
        xs, ys, os_ = x[s:s + m], y[s:s + m], out[s:s + m]  # indexed from 0 (see _table2d_py)
        for k in range(m):
            u[k] = min(max(xs[k], xl), xh) - x0
            v[k] = min(max(ys[k], yl), yh) - y0
            acc[k] = 0.0
        for i in range(deg, -1, -1):
            top = c[i, deg - i]
            for k in range(m):
                inner[k] = top
            for j in range(deg - i - 1, -1, -1):
                cij = c[i, j]
                for k in range(m):
                    inner[k] = inner[k] * v[k] + cij
            for k in range(m):
                acc[k] = acc[k] * u[k] + inner[k]
        for k in range(m):
            os_[k] = acc[k]


def _twin(fn, suffix):
    """A copy of ``fn`` under another qualified name. Numba's on-disk cache names a function's
    entries by qualified name and line and keys them by signature only, not by the jit options:
    two njit wrappers of one function, one parallel and one not, shared their cached code, so
    whichever was compiled first ran for both (the parallel read surface loaded the serial
    code and never started a thread, or the serial path ran the threaded one)."""
    import types
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__doc__ = fn.__doc__
    return twin


def _serial_and_parallel(fn, **opts):
    return _nb.njit(**opts)(fn), _nb.njit(parallel=True, **opts)(_twin(fn, "_par"))


if AVAILABLE:
    _opts = dict(cache=True, nogil=True, fastmath=True)
    _table2d, _table2d_par = _serial_and_parallel(_table2d_py, **_opts)
    _poly2d, _poly2d_par = _serial_and_parallel(_poly2d_py, **_opts)



def column(level, v, table, v_lo, v_hi, dv, weights, c2, g_scale, out):
    """ReRAM column currents: (columns, rows) level / voltage inputs -> (columns,) currents, one
    pass (see :meth:`..models.ColumnModel.__call__` for the formula and its NumPy path)."""
    fn = _column_par if level.size >= PARALLEL_MIN else _column
    fn(level, v, table, v_lo, v_hi, dv, weights, c2, g_scale, out)


def _column_py(level, v, table, v_lo, v_hi, dv, weights, c2, g_scale, out):
    """Per column: x_i = the cell I-V table at (level_i, v_i), both clipped to the table, linear
    in v; x_i *= g_scale_i when given (g_scale has 0 columns when not);
    out = sum w_i x_i + c2 (sum x_i)^2."""
    n, rows = level.shape
    nl, nv = table.shape
    scaled = g_scale.shape[0] > 0
    for c in _nb.prange(n):
        s = 0.0
        acc = 0.0
        for r in range(rows):
            lv = min(max(level[c, r], 0), nl - 1)
            f = min(max(v[c, r], v_lo), v_hi) / dv
            i = min(np.int64(f), nv - 2)
            w = f - i
            x = table[lv, i] * (1 - w) + table[lv, i + 1] * w
            if scaled:
                x *= g_scale[c, r]
            s += x
            acc += weights[r] * x
        out[c] = acc + c2 * s * s


if AVAILABLE:
    _column, _column_par = _serial_and_parallel(_column_py, **_opts)
