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


def _pulse_sum_reference(x):
    """The order _pulse_sum documents, in NumPy float32 scalars, one addition at a time."""
    f = np.float32
    n = len(x)
    if n < 8:
        tot = f(0)
        for v in x:
            tot = f(tot + v)
        return tot

    def sum8(v):
        return f(f(f(v[0] + v[4]) + f(v[2] + v[6])) + f(f(v[1] + v[5]) + f(v[3] + v[7])))

    tot, n32 = f(0), n - n % 32
    if n32:
        lanes = [f(v) for v in x[:32]]
        for b in range(32, n32, 32):
            lanes = [f(a + v) for a, v in zip(lanes, x[b:b + 32])]
        tot = sum8([f(f(f(lanes[u] + lanes[8 + u]) + lanes[16 + u]) + lanes[24 + u]) for u in range(8)])
    s = n32
    if n - n32 >= 8:
        n8 = n - n % 8
        e = [f(v) for v in x[n32:n32 + 8]]
        e[0] = f(tot + e[0])
        for b in range(n32 + 8, n8, 8):
            e = [f(a + v) for a, v in zip(e, x[b:b + 8])]
        tot, s = sum8(e), n8
    for v in x[s:]:
        tot = f(tot + v)
    return tot


def test_pulse_sum_adds_in_its_documented_order():
    """Every length from 0 to 140 (no lanes, the 8-lane part alone, 32 lanes once and more, each
    followed by a rest), terms spread over 6 decades so a different order rounds differently, and
    an offset into the array."""
    from analogattn.attention._fused.gaincell import _pulse_sum

    rng = np.random.default_rng(11)
    x = (10.0 ** rng.uniform(-3, 3, 200)).astype(np.float32)
    orders_differ = 0
    for n in range(141):
        got = _pulse_sum(x, 7, n)
        assert got == _pulse_sum_reference(x[7:7 + n]), n
        orders_differ += got != np.cumsum(x[7:7 + n], dtype=np.float32)[-1] if n else 0
    assert orders_differ > 20  # the test can tell this order from a plain running sum


@pytest.mark.parametrize("accumulate", [False, True])
def test_score_tile_and_its_largest_logit_equal_numpy(accumulate):
    """score_tile's scores and, per head, the largest |score| over the allowed keys (the score
    ADC's reference; taken as an integer max of order-preserving keys) against NumPy: a causal
    mask with a row that sees nothing, a clamp that bites, one head clamped to 0 (full 0) and one
    unclamped (inf); the largest value sits on a masked key too, so ignoring the mask would show."""
    rng = np.random.default_rng(3)
    g, tb, S = 3, 21, 77
    x = rng.normal(0, 2, (g * tb, S)).astype(np.float32)
    x[tb + 5, -1] = 1e6  # row 5 of head 1 (not clamped): a masked key (s > 60 + 5)
    full = np.array([1.5, np.inf, 0.0], np.float32)
    scale = rng.uniform(0.2, 3, (g, tb)).astype(np.float32)
    al = np.arange(S)[None, :] <= np.arange(tb)[:, None] + 60
    al[7] = False  # a row that sees nothing
    bias = np.where(al, 0, -np.inf).astype(np.float32)
    prev = rng.normal(0, 1, (g, tb, S)).astype(np.float32)
    out = prev.copy()
    hmax = _fused.score_tile(x, full, scale, out, accumulate, bias, True)
    lim = np.where(full > 0, full, 0).astype(np.float32)[:, None, None]
    ref = np.minimum(np.maximum(x.reshape(g, tb, S), -lim), lim) * scale[:, :, None]
    if accumulate:  # the compiled sum may fuse the product into it (one rounding): float64 reference
        exact = prev.astype(np.float64) + ref.astype(np.float64)
        assert np.all(np.abs(out - exact) <= 2.4e-7 * (np.abs(prev) + np.abs(ref)))
    else:
        assert np.array_equal(out, ref)
    want = np.max(np.where(al[None], np.abs(out), -np.inf), axis=(1, 2))
    assert np.array_equal(hmax, np.maximum(want, 0).astype(np.float32))
    assert 5 < hmax[1] < 100  # inf does not clamp, and the 1e6 is masked
    if not accumulate:
        assert hmax[2] == 0  # full 0 reads 0


def test_interp_terms_equal_numpy():
    """Each expansion term's table linearly interpolated at every stored voltage (float64 grid
    position, clamped to the grid's ends; float32 fraction and table values), for 3 terms at
    once, against NumPy per term: values on the grid, between points, and off both ends."""
    rng = np.random.default_rng(17)
    S, d, n, N = 37, 19, 3, 401
    lo, hi = -0.05, 1.85
    y = rng.uniform(lo - 0.2, hi + 0.2, (S, d)).astype(np.float32)
    y[0, :5] = np.float32(lo) + np.arange(5, dtype=np.float32) * np.float32((hi - lo) / (N - 1))
    table = rng.standard_normal((n, N)).astype(np.float32)
    inv_h = (N - 1) / (hi - lo)
    out = np.empty((S, n, d), np.float32)
    _fused.interp_terms(y, lo, inv_h, table, out)
    x = np.clip((y.astype(np.float64) - lo) * inv_h, 0.0, N - 1 - 1e-9)
    k = x.astype(np.int64)
    f = (x - k).astype(np.float32)
    for i in range(n):
        t0, t1 = table[i][k], table[i][k + 1]
        want = t0.astype(np.float64) + f.astype(np.float64) * (t1.astype(np.float64) - t0)
        # one float32 rounding each side (the compiled loop may fuse the product into the sum)
        assert np.all(np.abs(out[:, i] - want) <= 3e-7 * (np.abs(t0) + np.abs(t1))), i
    below = y < lo  # clamped to the grid's first point: exactly its table values
    assert below.sum() > 10
    for i in range(n):
        assert np.all(out[:, i][below] == table[i, 0])
