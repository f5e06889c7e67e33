"""The gain cell's compiled copy of NumPy's float32 standard normals: the same deviates bit for bit
and the generator left in the same state (the kernel's read noise must not change with it)."""
import numpy as np
import pytest

from analogattn.attention._fused.normals import standard_normal_f32


@pytest.mark.parametrize("seed", [0, 7, 12345])
def test_same_deviates_and_state_as_numpy(seed):
    """Odd and even lengths (a float32 takes half of a 64-bit output; the other half waits in the
    generator), float64 draws in between (they skip the waiting half), shapes of 1..3 axes, and
    4e6 deviates in one array: ~0.7 % take the ziggurat's slow paths (wedge and tail, which draw
    uniforms from the same stream), so a mistake there or in the uniforms' bits shows."""
    a, b = np.random.default_rng(seed), np.random.default_rng(seed)
    for shape, f64 in [((1,), False), ((7,), True), ((3, 5), False), ((4_000_000,), False), ((2, 3, 11), True),
                       ((0,), False), ((1001,), True)]:
        ref = a.standard_normal(shape, dtype=np.float32)
        got = standard_normal_f32(b, shape)
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
        assert a.bit_generator.state == b.bit_generator.state
        if f64:
            assert np.array_equal(a.standard_normal(5), b.standard_normal(5))
    big = standard_normal_f32(np.random.default_rng(seed), (4_000_000,))
    assert np.abs(big).max() > 4.5  # the tail was drawn


def test_other_bit_generators_use_numpy():
    a, b = np.random.Generator(np.random.MT19937(3)), np.random.Generator(np.random.MT19937(3))
    assert np.array_equal(standard_normal_f32(b, (9,)), a.standard_normal(9, dtype=np.float32))
