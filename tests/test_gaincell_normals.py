"""The gain cell's compiled copy of NumPy's float32 (and float64) standard normals: the same deviates
bit for bit and the generator left in the same state (the kernel's read noise must not change with
it). Every check compares with NumPy's own ``Generator.standard_normal`` on a twin generator."""
import numpy as np
import pytest

from analogattn.attention._fused import normals
from analogattn.attention._fused.normals import standard_normal_f32, standard_normal_f64


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("seed", [0, 7, 12345])
def test_same_deviates_and_state_as_numpy(seed):
    """Odd and even lengths (a float32 takes half of a 64-bit output; the other half waits in the
    generator), float64 draws in between (they skip the waiting half), shapes of 1..3 axes, and
    4e6 deviates in one array: ~1.5 % take the ziggurat's slow paths (wedge and tail, which draw
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


# sizes around the compiled draw's block edges (a block holds up to 2 x 1024 float32 words or 1024
# float64 ones, fewer when fewer are wanted) and its 16- and 8-wide copies
_SIZES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 255, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096,
          4097, 6143, 10_000, 65_537]


@pytest.mark.parametrize("seed", [1, 2024])
def test_many_sizes_mixed_with_numpys_own_draws(seed):
    """A seeded random sequence of float32 and float64 draws of many sizes (0, 1, odd, around the
    block edges), shapes given as ints or tuples, and NumPy's own draws on the same generator
    (float32/float64 normals, raw 64-bit outputs, 32-bit integers, which use the kept half, and
    uniforms) in between: every array and the whole state after every step equal the twin's."""
    a, b = np.random.default_rng(seed), np.random.default_rng(seed)
    order = np.random.default_rng(seed + 1)
    for step in range(120):
        kind = order.integers(0, 7)
        size = int(_SIZES[order.integers(0, len(_SIZES))])
        if kind <= 1:
            shape = size if step % 2 else (size,)
            assert _same(standard_normal_f32(b, shape), a.standard_normal(shape, dtype=np.float32))
        elif kind <= 3:
            shape = (size,) if step % 3 else size
            assert _same(standard_normal_f64(b, shape), a.standard_normal(shape))
        elif kind == 4:  # NumPy's own float32 / float64 normals on the compiled side's generator
            dt = np.float32 if step % 2 else np.float64
            assert _same(b.standard_normal(size % 50, dtype=dt), a.standard_normal(size % 50, dtype=dt))
        elif kind == 5:
            assert np.array_equal(b.integers(0, 2**32, size % 7, dtype=np.uint32),
                                  a.integers(0, 2**32, size % 7, dtype=np.uint32))
        else:
            assert np.array_equal(b.bit_generator.random_raw(size % 5), a.bit_generator.random_raw(size % 5))
            assert np.array_equal(b.random(size % 3), a.random(size % 3))
        assert a.bit_generator.state == b.bit_generator.state, step


def test_consecutive_draws_equal_one_draw():
    """Consecutive compiled draws give NumPy's one long draw (the kept half carried over)."""
    ref = np.random.default_rng(5).standard_normal(50_001, dtype=np.float32)
    b = np.random.default_rng(5)
    parts, cuts = [], [0, 1, 2, 5, 21, 2049, 2050, 7000, 30_001, 50_001]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        parts.append(standard_normal_f32(b, hi - lo))
    assert _same(np.concatenate(parts), ref)
    ref64 = np.random.default_rng(6).standard_normal(20_000)
    b = np.random.default_rng(6)
    got = np.concatenate([standard_normal_f64(b, m) for m in (3, 1021, 1, 8000, 10_975)])
    assert _same(got, ref64)


def _with_kept_half(seed, word):
    """A generator whose kept 32-bit half is ``word`` (NumPy takes any value)."""
    g = np.random.default_rng(seed)
    s = g.bit_generator.state
    s["has_uint32"], s["uinteger"] = 1, int(word)
    g.bit_generator.state = s
    return g


@pytest.mark.parametrize("word", [
    (0x7FFFFF << 9) | 200,            # layer 200, rabs at its largest: rejected at once, a wedge
    (0x7FFFFF << 9) | (1 << 8) | 57,  # the same, negative, layer 57
    (0x7FFFFF << 9) | 0,              # layer 0 rejected at once: the tail (uniform pairs)
    (0x7FFFFF << 9) | (1 << 8) | 0,   # the tail, negative
    (5 << 9) | 3,                     # accepted at once
])
@pytest.mark.parametrize("n", [1, 2, 3, 17, 5000])
def test_kept_half_as_first_candidate(word, n):
    """The kept half is the first float32 candidate, also when the ziggurat rejects it at once and
    its wedge or tail step takes the next words (from the first block) as uniforms."""
    for seed in (3, 4):
        a, b = _with_kept_half(seed, word), _with_kept_half(seed, word)
        assert _same(standard_normal_f32(b, n), a.standard_normal(n, dtype=np.float32))
        assert a.bit_generator.state == b.bit_generator.state
        assert _same(standard_normal_f32(b, 3), a.standard_normal(3, dtype=np.float32))


def test_large_float64_draw_and_tail():
    """3e6 float64 deviates in one array (the tail beyond r = 3.654 drawn ~800 times, the wedges
    ~45000), then a float32 draw on the same generator: NumPy's, bit for bit."""
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    a.standard_normal(1, dtype=np.float32)
    standard_normal_f32(b, 1)
    got, ref = standard_normal_f64(b, (3, 1_000_000)), a.standard_normal((3, 1_000_000))
    assert _same(got, ref) and (np.abs(ref) > 3.6541528853610088).sum() > 300
    assert a.bit_generator.state == b.bit_generator.state
    assert _same(standard_normal_f32(b, 4099), a.standard_normal(4099, dtype=np.float32))


def test_advance_and_block_outputs_match_numpy():
    """The pieces: the O(log n) jump equals PCG64.advance, and a block of outputs made with the
    jump tables equals NumPy's raw outputs (block sizes 16..1024, several states and increments)."""
    M = (1 << 64) - 1
    for seed in (0, 1, 99):
        bg = np.random.PCG64(seed)
        st = bg.state["state"]
        for delta in (0, 1, 2, 3, 1000, 2**40 + 7, 2**64 - 1):
            h, lo = normals._advance(np.uint64(st["state"] >> 64), np.uint64(st["state"] & M),
                                     np.uint64(st["inc"] >> 64), np.uint64(st["inc"] & M), np.uint64(delta))
            ref = np.random.PCG64(seed)
            ref.advance(delta)
            assert (int(h) << 64) | int(lo) == ref.state["state"]["state"], delta
        for nout in (16, 48, 1024):
            ch, cl = np.empty(normals._BLOCK, np.uint64), np.empty(normals._BLOCK, np.uint64)
            normals._jump_increments(np.uint64(st["inc"] >> 64), np.uint64(st["inc"] & M), ch, cl, normals._BLOCK)
            sb = np.array([st["state"] >> 64, st["state"] & M], np.uint64)
            w = np.empty(normals._BLOCK, np.uint64)
            normals._fill(sb, ch, cl, w, nout)
            ref = np.random.PCG64(seed)
            assert np.array_equal(w[:nout], ref.random_raw(nout))
            assert (int(sb[0]) << 64) | int(sb[1]) == ref.state["state"]["state"]


def test_other_bit_generators_use_numpy():
    a, b = np.random.Generator(np.random.MT19937(3)), np.random.Generator(np.random.MT19937(3))
    assert np.array_equal(standard_normal_f32(b, (9,)), a.standard_normal(9, dtype=np.float32))


@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.MT19937])
def test_out_buffer_gets_the_same_deviates(bitgen):
    """``out=``: the deviates written into a reused buffer are those of a fresh draw, the state the
    same; a buffer of the wrong dtype, shape or layout is refused before anything is drawn."""
    a, b = np.random.Generator(bitgen(11)), np.random.Generator(bitgen(11))
    buf32, buf64 = np.full((3, 7), np.nan, np.float32), np.full((5,), np.nan, np.float64)
    for _ in range(3):  # the same buffers filled again: each time the next deviates
        ref = a.standard_normal((3, 7), dtype=np.float32)
        got = standard_normal_f32(b, (3, 7), out=buf32)
        assert got is buf32 and _same(got, ref)
        ref64 = a.standard_normal(5)
        got64 = standard_normal_f64(b, (5,), out=buf64)
        assert got64 is buf64 and _same(got64, ref64)
    assert np.array_equal(a.random(4), b.random(4))  # the generators still in step
    for bad in (np.empty((3, 7), np.float64), np.empty((7, 3), np.float32), np.empty((7, 3), np.float32).T):
        with pytest.raises(ValueError, match="out must be"):
            standard_normal_f32(b, (3, 7), out=bad)
    assert np.array_equal(a.random(3), b.random(3))  # nothing drawn by the refused calls
