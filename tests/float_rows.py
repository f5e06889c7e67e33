"""Rows of float32 values that are hard for a row maximum (shared by the tests of the compiled
maxima): lengths 1-70 (a vector body and every tail), scales 1e-3 to 1e3, some rows with both
zeros, subnormals, the float32 extremes and -inf planted, some entirely negative (the order of
the flipped integer keys matters there)."""
import numpy as np

SPECIAL = np.array([0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, -np.inf, 1.0, -1.0], np.float32)


def hard_rows(rng, n, special=SPECIAL):
    """n such rows, one at a time."""
    for trial in range(n):
        L = int(rng.integers(1, 71))
        x = (rng.standard_normal(L) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        if trial % 3 == 0:
            x[rng.integers(0, L, 3)] = rng.choice(special, 3)
        if trial % 5 == 0:
            x = -np.abs(x)
        yield x


def same_max(got, want):
    """got is want bit for bit, but for the sign of a zero maximum (either gives the same
    exponentials downstream)."""
    if want == 0:
        return got == 0
    return np.float32(got).tobytes() == np.float32(want).tobytes()
