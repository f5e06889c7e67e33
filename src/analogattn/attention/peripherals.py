"""The converters and the comparator around the arrays: one NumPy reference each.

The compiled loops of :mod:`._fused` inline the same arithmetic per element (float32, one pass
over a block); ``tests/test_peripherals.py`` checks each against the function here on random
inputs. Conventions:

- a **quantiser** rounds to evenly spaced levels over [lo, hi] (clipped first);
- a **signed code** is mid-tread two's complement: the nearest integer, clamped to
  -half .. half - 1 (zero is a code; the most positive code is one short of +half);
- the **ADC** digitises x over [-full, full) with 2 half codes of step full / half (a reference
  full <= 0 reads 0; no levels: clip only); the **ratiometric** ADC digitises x / ref (the
  reference follows the signal's drive) and multiplies back;
- the **DAC** turns each row's magnitudes, scaled to the row's largest |x| (a per-row reference),
  into unsigned codes 0 .. M (the sign is a second read phase);
- the **comparator** keeps when its input, plus an offset and Gaussian noise, is above zero.
"""
from __future__ import annotations

import numpy as np


def quantise(x, lo, hi, levels):
    """Round x (clipped to [lo, hi]) to ``levels`` evenly spaced values (levels 0: clip only)."""
    x = np.clip(x, lo, hi)
    if levels and levels > 1 and hi > lo:
        step = (hi - lo) / (levels - 1)
        x = lo + np.round((x - lo) / step) * step
    return x


def signed_code(u, half):
    """Mid-tread two's-complement codes of u (in units of one step): rint(u) in -half .. half-1."""
    return np.clip(np.rint(u), -half, half - 1)


def adc(x, full, levels):
    """A signed ADC of ``levels`` codes (-levels/2 .. levels/2 - 1) over [-full, full): mid-tread,
    so zero is a code (levels 0: clip only). ``full`` may be an array broadcasting against x (one
    reference per row); a reference of 0 reads 0."""
    if not levels or levels < 2:
        return np.clip(x, -full, full)
    full = np.asarray(full)
    half = levels // 2
    step = np.where(full > 0, full, 1.0) / half
    out = np.where(full > 0, signed_code(x / step, half) * step, 0.0)
    return out.astype(x.dtype, copy=False) if isinstance(x, np.ndarray) else out


def ratiometric_adc(x, ref, full, levels):
    """The ADC of x / ref (a reference that follows the drive: the ADC digitises the weighted
    mean), multiplied back by ref; ref 0 (nothing driven) reads 0."""
    ref = np.asarray(ref)
    safe = np.where(ref != 0, ref, 1)
    return np.where(ref != 0, adc(x / safe, full, levels) * ref, 0)


def dac_codes(x, M):
    """Per row of x (n, d): the reference u_max = max |x| (1 for an all-zero row) and the unsigned
    codes rint(|x| M / u_max) in 0 .. M; the sign is sign(x) (a second read phase)."""
    u_max = np.abs(x).max(axis=-1, keepdims=True)
    u_max = np.where(u_max > 0, u_max, 1)
    return np.rint(np.abs(x) * (M / u_max)).astype(np.int64), u_max[..., 0]


def pulse(x, levels):
    """A pulse width from x: clipped to [0, 1] and quantised to ``levels`` (a DAC of unsigned
    pulse widths)."""
    return quantise(x, 0.0, 1.0, levels)


def comparator(v_in, offset, noise_sigma, z):
    """Decisions v_in + offset + noise_sigma z > 0 (z: standard normal samples)."""
    return v_in + offset + noise_sigma * z > 0
