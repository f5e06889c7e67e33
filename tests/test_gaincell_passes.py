"""The gain-cell kernel's compiled passes against NumPy formulas."""
import numpy as np
import pytest

from analogattn.attention import _fused
from analogattn.attention._fused.gaincell import tile_pulses_t


def _tile_pulses_numpy(p, bias, mode, inv_sat, levels, rows):
    g, tb, S = p.shape
    ntl = -(-S // rows)
    one, zero = np.float32(1.0), np.float32(0.0)
    allowed = bias == 0
    pm = np.where(allowed[None], p, zero)
    rmax = pm.max(axis=2)
    rmax = np.where(rmax > 0, rmax, one)
    pq = np.zeros((ntl, g * tb, rows), np.float32)
    m = np.ones((g * tb, ntl), np.float32)
    psum = np.zeros((g * tb, ntl), np.float32)
    L = np.float32(levels - 1)
    for k in range(ntl):
        seg, al, segm = p[:, :, k * rows:(k + 1) * rows], allowed[:, k * rows:(k + 1) * rows], \
            pm[:, :, k * rows:(k + 1) * rows]
        if mode == 0:
            scale, mk = inv_sat[:, None, None], np.ones((g, tb), np.float32)
        elif mode == 1:
            scale, mk = (one / rmax)[:, :, None], rmax
        else:
            tmax = segm.max(axis=2)
            mk = np.where(tmax > 0, tmax, one)
            scale = (one / mk)[:, :, None]
        v = np.minimum(np.maximum(seg * scale, zero), one)
        if levels > 1:
            v = np.rint(v * L) * (one / L)
        v = np.where(al[None], v, zero).astype(np.float32)
        n = v.shape[2]
        pq[k, :, :n] = v.reshape(g * tb, n)
        m[:, k] = mk.reshape(g * tb)
        psum[:, k] = np.cumsum(v, axis=2, dtype=np.float32)[:, :, -1].reshape(g * tb)  # in order
    return pq, m, psum


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("levels", [0, 16])
def test_tile_pulses_equal_numpy(mode, levels):
    """Keys not a multiple of the tile rows, a causal mask (rows with tiles fully masked), weights
    spread so the pulse sums' rounding depends on the order of the additions."""
    rng = np.random.default_rng(5)
    g, tb, S, rows = 3, 37, 150, 32
    p = (rng.uniform(0, 1, (g, tb, S)) ** 3).astype(np.float32)
    if mode == 0:
        p = rng.uniform(-1, 3, (g, tb, S)).astype(np.float32)
    bias = np.where(np.arange(S)[None, :] <= np.arange(tb)[:, None] + 100, 0, -np.inf).astype(np.float32)
    inv_sat = rng.uniform(0.3, 2, g).astype(np.float32)
    ntl = -(-S // rows)
    pq = np.full((ntl, g * tb, rows), np.nan, np.float32)
    m = np.ones((g * tb, ntl), np.float32)
    psum = np.empty((g * tb, ntl), np.float32)
    _fused.tile_pulses(p, bias, mode, inv_sat, levels, rows, pq, m, psum)
    rpq, rm, rpsum = _tile_pulses_numpy(p, bias, mode, inv_sat, levels, rows)
    assert np.array_equal(pq, rpq)  # element-wise: bit for bit
    assert np.array_equal(m, rm)  # maxima: exact in any order
    # the pulse sums: the compiled loop may add in another order (fast-math reassociation, kept as
    # the recorded numbers were made with it): <= 32 terms in [0, 1], a few float32 roundings
    assert np.allclose(psum, rpsum, rtol=4e-6, atol=0)


@pytest.mark.parametrize("t_major", [False, True])
def test_tile_pulse_sums_do_not_depend_on_where_the_arrays_sit(t_major):
    """The pulse sums are the same wherever malloc puts the arrays. Summed in the loop that wrote
    the pulses, they were vectorised behind LLVM's run-time check that the pulses' array does not
    overlap the mask's, a conservative check that also fired when the pulses merely followed the
    mask within a tile's length; its scalar fallback adds in another order, so a sum's last bit
    depended on the heap (a gain-cell decode step gave one of two results, about 1 run in 3).
    Here the pulses' array sits at each of 0 .. 64 floats after the mask's end, and far away."""
    g, tb, S, rows = 3, 1, 209, 64  # a decode step's shapes: 3 heads, 4 tiles, the last partial
    ntl = -(-S // rows)
    rng = np.random.default_rng(1)
    inv_sat = np.ones(g, np.float32)
    first, last = np.zeros(tb, np.int64), np.full(tb, S, np.int64)
    for _ in range(4):
        p = (rng.random((g, tb, S)) ** 4).astype(np.float32)

        def sums(gap):
            buf = np.zeros(4 * (S + gap + ntl * g * tb * rows) + 65536, np.uint8)
            bias = buf[:4 * S].view(np.float32).reshape(tb, S)  # all allowed
            o = 4 * (S + gap) if gap >= 0 else buf.size - 4 * ntl * g * tb * rows
            pq = buf[o:o + 4 * ntl * g * tb * rows].view(np.float32).reshape(ntl, g * tb, rows)
            m = np.ones((g * tb, ntl), np.float32)
            psum = np.zeros((g * tb, ntl), np.float32)
            if t_major:
                tile_pulses_t(p, bias, 2, inv_sat, 16, rows, first, last, pq, m, psum)
            else:
                _fused.tile_pulses(p, bias, 2, inv_sat, 16, rows, pq, m, psum)
            return psum

        far = sums(-1)
        for gap in range(0, 65, 4):
            assert np.array_equal(sums(gap), far), gap
