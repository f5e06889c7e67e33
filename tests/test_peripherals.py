"""The converters and the comparator: the NumPy references of attention/peripherals.py, and the
compiled per-element versions in attention/_fused against them on random inputs."""
import numpy as np
import pytest

from analogattn.attention import _fused
from analogattn.attention.peripherals import adc, comparator, dac_codes, pulse, quantise, ratiometric_adc, signed_code

rng = np.random.default_rng(11)


def test_signed_code_is_mid_tread_twos_complement():
    assert signed_code(np.array([-9.0, -4.4, -0.5, 0.4, 0.5, 1.5, 3.49, 3.6, 9.0]), 4).tolist() == \
        [-4, -4, -0.0, 0, 0, 2, 3, 3, 3]


def test_adc_and_ratiometric_adc():
    x = np.array([-5.0, -1.0, -0.2, 0.0, 0.24, 0.26, 0.99, 5.0])
    assert np.allclose(adc(x, 1.0, 8), [-1.0, -1.0, -0.25, 0.0, 0.25, 0.25, 0.75, 0.75])
    assert np.all(adc(x, np.zeros_like(x), 8) == 0)  # a zero reference reads zero
    ref = np.array([2.0, 0.5, 0.0])
    got = ratiometric_adc(np.array([1.0, 0.2, 0.3]), ref, 1.0, 8)
    assert np.allclose(got, [adc(0.5, 1.0, 8) * 2.0, adc(0.4, 1.0, 8) * 0.5, 0.0])


def test_dac_codes_per_row_reference():
    codes, u = dac_codes(np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]]), 15)
    assert codes.tolist() == [[8, 15, 4], [0, 0, 0]] and u.tolist() == [1.0, 1.0]


def _away_from_ties(u, tol=1e-4):
    return np.abs(u - np.floor(u) - 0.5) > tol


@pytest.mark.parametrize("levels", [2, 16, 256])
def test_compiled_adc_equals_numpy(levels):
    x = (rng.standard_normal((40, 300)) * 2).astype(np.float32)
    full = np.abs(rng.standard_normal(40)).astype(np.float32) + 0.1
    full[3] = 0.0  # reads zero
    out = np.empty_like(x)
    _fused.adc_rows(x, full, levels // 2, out)
    want = adc(x, full[:, None], levels)
    ok = _away_from_ties(x / np.where(full > 0, full, 1)[:, None] * (levels // 2))
    assert np.array_equal(out[ok], want[ok].astype(np.float32)) or np.allclose(out[ok], want[ok], rtol=1e-6, atol=0)
    assert np.all(out[3] == 0)


@pytest.mark.parametrize("levels", [0, 1, 4, 16])
def test_compiled_pulse_equals_numpy(levels):
    x = rng.uniform(-0.3, 1.3, (20, 500)).astype(np.float32)
    out = np.empty_like(x)
    _fused.pulse_rows(x, levels, out)
    want = pulse(x.astype(np.float64), levels)
    ok = _away_from_ties(np.clip(x, 0, 1) * max(levels - 1, 1)) if levels > 1 else np.ones(x.shape, bool)
    np.testing.assert_allclose(out[ok], want[ok], rtol=1e-6, atol=1e-7)
    assert np.array_equal(quantise(x, 0.0, 1.0, levels), pulse(x, levels))


def test_compiled_dac_equals_numpy():
    n, d, M = 30, 64, 15
    qe = rng.standard_normal((n, d)).astype(np.float32)
    b_dac = np.linspace(0, 1, M + 1).astype(np.float32) ** 1.3  # any voltage-side factor per code
    w = (1 + 0.01 * rng.standard_normal(d)).astype(np.float32)
    lhs = np.empty((2 * n, d), np.float32)
    u_max = _fused.dac_lhs(qe, M, b_dac, w, 0, d, lhs)
    codes, u = dac_codes(qe, M)
    ok = _away_from_ties(np.abs(qe) * (M / u[:, None]))
    np.testing.assert_allclose(u_max, u, rtol=0)
    b = b_dac[codes]
    assert np.array_equal(lhs[n:][ok], b[ok])
    assert np.array_equal(lhs[:n][ok], (np.where(qe >= 0, b, -b) * w)[ok])


def test_compiled_decisions_equal_the_numpy_comparator():
    T, g, S = 5, 2, 64
    iw = rng.standard_normal((g * T, S)).astype(np.float32)
    sab = (np.abs(rng.standard_normal((g * T, S))) + np.abs(iw)).astype(np.float32)
    row = rng.standard_normal(g * T).astype(np.float32)
    off = (0.1 * rng.standard_normal(S)).astype(np.float32)
    pool = rng.standard_normal(10_000).astype(np.float32)
    allowed = np.ones((T, S), bool)
    forced = np.zeros((T, S), bool)
    keep = np.empty((g * T, S), bool)
    r, c2, k2, cn2, start = 0.8, 0.05, 0.3, 0.01, 50
    _fused.decide_softmax(rng.standard_normal((g * T, S)).astype(np.float32), iw, sab, row, off, r, c2, k2, cn2,
                          pool, start, np.zeros((T, S), np.float32), allowed, forced, T, keep)
    z = pool[start:start + g * T * S].reshape(g * T, S)
    v_in = r * iw * (1 + c2 * sab) + row[:, None]
    sigma = np.sqrt(cn2 + k2 * (sab ** 2 + iw ** 2))
    want = comparator(v_in, off[None, :], sigma, z)
    close = np.abs(v_in + off + sigma * z) < 1e-5
    assert np.array_equal(keep[~close], want[~close]) and 0.2 < keep.mean() < 0.8
