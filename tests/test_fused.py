"""The compiled per-element loops against the NumPy formulas they replace (no physics of their
own: each must give what the documented NumPy expression gives)."""
import numpy as np
import pytest

from analogattn.attention import _fused

rng = np.random.default_rng(7)


def test_exp32_is_float32_accurate_and_handles_the_range_ends():
    x = np.concatenate([rng.uniform(-87, 88, 200_000), [-1e30, -np.inf, -87.5, 0.0, 88.5, np.inf]])
    x = x.astype(np.float32).reshape(2, -1)
    out = np.empty_like(x)
    _fused.exp_rows(x, out)
    ref = np.exp(x.astype(np.float64))
    ok = (x >= -87) & (x <= 88)
    assert np.max(np.abs(out[ok] / ref[ok] - 1)) < 1e-6  # float32 eps is 6e-8: within ~16 ulp
    assert np.all(out[x < -87] == 0) and np.all(np.isinf(out[x > 88]))


def test_kept_softmax_equals_numpy():
    T, g, S = 7, 3, 45
    e = rng.standard_normal((g * T, S)).astype(np.float32) * 6
    allowed = np.tril(np.ones((T, S), bool), k=S - T)
    allowed[:, :5] = False  # a sliding window: the oldest keys out
    allowed[2] = False  # a query that sees nothing
    keep = (rng.random((g * T, S)) < 0.4) & np.tile(allowed, (g, 1))
    bias = np.where(allowed, np.float32(0), np.float32(-np.inf))
    work = e.copy()
    tot, mass, kept, new = _fused.kept_softmax(work, bias, keep, T)
    al = np.tile(allowed, (g, 1))
    m = np.where(al, e, -np.inf).max(axis=1, keepdims=True)
    m[~np.isfinite(m)] = 0
    ex = np.where(al, np.exp(e.astype(np.float64) - m), 0.0)
    w = np.where(keep, ex, 0.0)
    np.testing.assert_allclose(work, w, rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(tot, w.sum(1), rtol=1e-5)
    np.testing.assert_allclose(mass, np.where(ex.sum(1) > 0, w.sum(1) / np.maximum(ex.sum(1), 1e-300), 0), rtol=1e-5)
    assert np.array_equal(kept, keep.sum(1))
    prev = np.arange(g * T) - 1
    prev[np.arange(g * T) % T == 0] += 1  # first query of each head: compared with itself
    assert np.array_equal(new, (keep & ~keep[prev]).sum(1))


def test_anchor_max_reads_only_the_listed_keys():
    T, g, S = 5, 2, 30
    e = rng.standard_normal((g * T, S)).astype(np.float32)
    forced = rng.random((T, S)) < 0.2
    forced[3] = False
    r, c = np.nonzero(forced)
    ptr = np.searchsorted(r, np.arange(T + 1))
    got = _fused.anchor_max(e, ptr, c, T)
    want = np.where(np.tile(forced, (g, 1)), e, -np.inf).max(axis=1)
    assert np.array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("noise", [False, True])
def test_decisions_equal_the_comparator_formula(noise):
    T, g, S = 6, 3, 40
    iw = rng.standard_normal((g * T, S)).astype(np.float32)
    sab = np.abs(rng.standard_normal((g * T, S))).astype(np.float32) + np.abs(iw)
    row = rng.standard_normal(g * T).astype(np.float32)
    off = (0.1 * rng.standard_normal(S)).astype(np.float32)
    pool = rng.standard_normal(10_000).astype(np.float32)
    allowed = np.tril(np.ones((T, S), bool), k=S - T)
    forced = np.zeros((T, S), bool)
    forced[np.arange(T), S - T + np.arange(T)] = True
    r, c2, k2, cn2, start = 0.8, 0.05, (0.3 if noise else 0.0), (0.01 if noise else 0.0), 123
    keep = np.empty((g * T, S), bool)
    bias = np.where(allowed, np.float32(0), np.float32(-np.inf))
    _fused.decide_softmax(rng.standard_normal((g * T, S)).astype(np.float32), iw, sab, row, off, r, c2, k2, cn2, pool,
                          start, bias, allowed, forced, T, keep)
    z = pool[start:start + g * T * S].reshape(g * T, S)
    v = (r * iw * (1 + c2 * sab) + row[:, None] + off[None, :]
         + np.sqrt(cn2 + k2 * (sab ** 2 + iw ** 2)) * z)
    want = (np.tile(allowed, (g, 1)) & (v > 0)) | np.tile(forced, (g, 1))
    close = np.abs(v) < 1e-5  # float32 rounding may flip exact ties
    assert np.array_equal(keep[~close], want[~close])
    assert keep[np.tile(forced, (g, 1))].all() and not keep[~np.tile(allowed, (g, 1))].any()


def test_decide_softmax_equals_its_decisions_then_kept_softmax():
    T, g, S = 6, 3, 50
    iw = rng.standard_normal((g * T, S)).astype(np.float32)
    sab = (np.abs(rng.standard_normal((g * T, S))) + np.abs(iw)).astype(np.float32)
    row = (0.3 * rng.standard_normal(g * T)).astype(np.float32)
    off = (0.1 * rng.standard_normal(S)).astype(np.float32)
    pool = rng.standard_normal(20_000).astype(np.float32)
    allowed = np.tril(np.ones((T, S), bool), k=S - T)
    forced = np.zeros((T, S), bool)
    forced[np.arange(T), S - T + np.arange(T)] = True
    bias = np.where(allowed, np.float32(0), np.float32(-np.inf))
    e = (4 * rng.standard_normal((g * T, S))).astype(np.float32)
    args = (0.8, 0.05, 0.3, 0.01, pool, 77)
    k2 = np.empty((g * T, S), bool)
    e1, e2 = e.copy(), e.copy()
    s2 = _fused.decide_softmax(e2, iw, sab, row, off, *args, bias, allowed, forced, T, k2)
    r, c2, kk2, cn2, _, start = args  # the comparator formula, in NumPy
    z = pool[start:start + g * T * S].reshape(g * T, S)
    v = r * iw * (1 + c2 * sab) + row[:, None] + off[None, :] + np.sqrt(cn2 + kk2 * (sab ** 2 + iw ** 2)) * z
    k1 = (np.tile(allowed, (g, 1)) & (v > 0)) | np.tile(forced, (g, 1))
    close = np.abs(v) < 1e-5
    k1[close] = k2[close]  # float32 rounding may flip exact ties
    s1 = _fused.kept_softmax(e1, bias, k1, T)
    assert np.array_equal(k1, k2) and 0.1 < k1[np.tile(allowed, (g, 1))].mean() < 0.9
    np.testing.assert_allclose(e2, e1, rtol=1e-6)
    for a, b in zip(s1, s2):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_lane_max_equals_numpy():
    """The ideal softmax's and the loss's row maximum (integer keys, vectorised) equals NumPy's
    float maximum bit for bit (but for the sign of a zero maximum) over hard rows (see
    float_rows), rows of -inf only and the empty row (-inf)."""
    import numba as nb
    from float_rows import hard_rows, same_max

    from analogattn.attention._fused.common import _lane_max
    lmax = nb.njit(lambda x: _lane_max(x))
    assert lmax(np.empty(0, np.float32)) == -np.inf
    assert lmax(np.full(9, -np.inf, np.float32)) == -np.inf
    for x in hard_rows(np.random.default_rng(12), 400):
        assert same_max(lmax(x), x.max()), x


def test_max_biased_equals_numpy():
    """The masked row maximum max(e + b) (b: 0 allowed / -inf not) of the gain cell's softmax and
    the pruning kernel's kept weights equals NumPy's float maximum of e + b (as above); -inf when
    nothing is allowed or the row is empty."""
    import numba as nb
    from float_rows import SPECIAL, hard_rows, same_max

    from analogattn.attention._fused.common import _max_biased
    bmax = nb.njit(lambda e, b: _max_biased(e, b))
    rng = np.random.default_rng(13)
    assert bmax(np.empty(0, np.float32), np.empty(0, np.float32)) == -np.inf
    for e in hard_rows(rng, 400, SPECIAL[SPECIAL != -np.inf]):
        b = np.where(rng.random(e.size) < rng.choice([0.0, 0.3, 1.0]), np.float32(0), np.float32(-np.inf))
        b = b.astype(np.float32)
        assert same_max(bmax(e, b), (e + b).max()), (e, b)
