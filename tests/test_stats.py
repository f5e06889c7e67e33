"""attention.stats.quantile against np.quantile, bit for bit."""
import numpy as np
import pytest

from analogattn.attention import stats


def _arrays(rng):
    n = 1 << 17
    yield "normal float64", rng.standard_normal(n)
    yield "|normal| float32", np.abs(rng.standard_normal(n)).astype(np.float32)
    yield "heavy ties (quarters)", (np.round(rng.standard_normal(n) * 4) / 4).astype(np.float32)
    yield "heavy tail", (rng.exponential(size=n) ** 3).astype(np.float32)
    yield "2-D score matrix", np.abs(rng.standard_normal((512, 512)) * 1e-3).astype(np.float32)
    yield "one value", np.full(n, 0.37, np.float32)
    yield "short", rng.standard_normal(1000)


QS = [0.0, 1e-4, 0.001, 0.01, 0.05, 0.3, 0.5, 0.8, 0.95, 0.99, 0.999, 0.9999, 1.0]


def test_quantile_is_numpys_bit_for_bit_and_takes_its_fast_path(monkeypatch):
    """Every array and q gives np.quantile's value and type; on the continuous arrays the whole
    array is never handed to np.quantile (only the two order statistics are)."""
    rng = np.random.default_rng(7)
    whole = []
    real = np.quantile

    def spy(a, q, *args, **kw):
        if np.asarray(a).size > 2:
            whole.append(np.asarray(a).size)
        return real(a, q, *args, **kw)

    for name, a in _arrays(rng):
        for q in QS + [float(rng.random())]:
            want = real(a, q)
            whole.clear()
            monkeypatch.setattr(np, "quantile", spy)
            got = stats.quantile(a, q)
            monkeypatch.setattr(np, "quantile", real)
            assert type(got) is type(want) and np.array_equal(got, want), (name, q, got, want)
            if name in ("normal float64", "|normal| float32", "heavy tail", "2-D score matrix") and 0 < q < 1:
                assert not whole, (name, q)  # the fast path, not NumPy's whole-array call


def test_quantile_falls_back_on_nan_and_signed_zeros():
    a = np.abs(np.random.default_rng(1).standard_normal(1 << 16)).astype(np.float32)
    a[100] = np.nan
    assert np.isnan(stats.quantile(a, 0.999))
    z = np.zeros(1 << 16, np.float32)
    z[::3] = -0.0
    assert np.array_equal(stats.quantile(z, 0.5), np.quantile(z, 0.5))
    assert np.signbit(stats.quantile(z, 0.5)) == np.signbit(np.quantile(z, 0.5))
