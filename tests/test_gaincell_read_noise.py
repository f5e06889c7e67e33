"""The gain cell's characterized read noise in the kernel (issue 16): hand-computed noise of a
value tile, the switch, and the charge variance from a noise spectrum."""
import dataclasses

import numpy as np
import pytest

from analogattn.attention.gaincell import CellModel, GainCellAttention, GainCellConfig
from analogattn.characterize.gaincell_noise import integrated_charge_var


def _noisy_cell(sigma):
    cell = CellModel.ideal()
    return dataclasses.replace(cell, noise_q=lambda v: np.full(np.shape(v), sigma))


def test_value_tile_noise_matches_hand_computation():
    """64 keys of zero current (stored at mid-rail), full pulses, one 64-row tile, ratiometric ADC
    fine enough to vanish: the output is the tile's noise charge, sigma = sqrt(64) x sigma_Q per
    full pulse (pulse sum 64, the tile's largest weight 1 multiplies back)."""
    sig = 3e-16
    cell = _noisy_cell(sig)
    cfg = GainCellConfig(input_levels=0, output_levels=65536, token_period=0.0, rows=64, predistort=False)
    ker = GainCellAttention(cell, cfg, None)
    assert np.isclose(ker.readout.noise_var_q, sig ** 2)
    R = 4000
    out = ker._values(np.ones((R, 64)), np.full((64, 1), 0.45), None, 1e-13)[:, 0]
    assert abs(out.mean()) < 4 * 8 * sig / np.sqrt(R)
    assert abs(out.std() / (8 * sig) - 1) < 0.05
    off = GainCellAttention(cell, cfg.replace(circuit_read_noise=False), None)
    assert np.all(off._values(np.ones((8, 64)), np.full((64, 1), 0.45), None, 1e-13) == 0)
    plain = GainCellAttention(CellModel.ideal(), cfg, None)  # no noise model in the bundle: nothing drawn
    assert plain.circuit_noise_var() == 0.0


def test_integrated_white_noise_charge():
    """White one-sided density S over a window T: sigma_Q^2 = S T / 2 (Parseval on the box)."""
    f = np.geomspace(1.0, 1e13, 20001)
    S, T = 4e-24, 10e-9
    assert abs(integrated_charge_var(f, np.full_like(f, S), T) / (S * T / 2) - 1) < 0.01


def test_mismatch_draws_the_written_voltage_spread():
    """With a write-spread model, --mismatch moves every written cell by sigma_w(V) N(0, 1): the
    stored voltages in the cache differ from the nominal ones with that spread (and not at all
    with mismatch off)."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    sw = 4e-3
    cell = dataclasses.replace(CellModel.ideal(), write_sigma=lambda v: np.full(np.shape(v), sw))
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 300, 16)).astype(np.float32) * 0.1 for _ in range(3))
    pos = np.arange(300)
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=0.0, adc_bits=0,
                         window=0, predistort=False)
    out = {}
    for mm in (False, True):
        ker = GainCellAttention(cell, cfg.replace(mismatch=mm), Scalers.identity(1, 2, 2, cell))
        cache = ker.new_cache(0, 2, 16)
        ker(q, k, v, pos, Mask(), cache, 0)
        out[mm] = cache.keys.copy(), cache.values.copy()
    dk, dv = out[True][0] - out[False][0], out[True][1] - out[False][1]
    assert abs(dk.std() / sw - 1) < 0.05 and abs(dv.std() / sw - 1) < 0.05 and abs(dk.mean()) < 3e-4


def test_refresh_blocks_and_token_by_token_agree():
    """With a refresh every 13 tokens, blocks of queries (cut at every refresh) and decoding token by
    token give the same output; without decay the refresh changes nothing."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((n, 60, 16)).astype(np.float32) * 0.3 for n in (6, 2, 2))
    pos = np.arange(60)
    cell = dataclasses.replace(CellModel.ideal(), tau=3e-7, v_eq=0.3)
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, adc_bits=0, token_period=1e-8,
                         window=0, rows=8, predistort=False, refresh_interval=13)
    sc = Scalers.identity(1, 6, 2, cell)
    ker = GainCellAttention(cell, cfg, sc, block=256)
    full = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    ker = GainCellAttention(cell, cfg, sc)
    cache = ker.new_cache(0, 2, 16)
    steps = np.concatenate([ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], pos[t:t + 1], Mask(), cache, 0)
                            for t in range(60)], axis=1)
    assert np.abs(steps - full).max() < 1e-4 * np.abs(full).max()
    never = GainCellAttention(cell, cfg.replace(refresh_interval=0), sc)
    assert np.abs(never(q, k, v, pos, Mask(), never.new_cache(0, 2, 16), 0) - full).max() > 1e-3 * np.abs(full).max()


@pytest.mark.parametrize("extra", [0.0, 0.02])
def test_fused_noisy_tiles_and_drawing_ahead_equal_the_numpy_path(extra, monkeypatch):
    """Read noise on (the cells' own and the extra relative one): the compiled noisy value-tile
    epilogue with the normal deviates drawn ahead in a helper thread and the blocks split over two
    lanes (each taking its deviates by key, out of the drawing order) gives bit for bit what the
    NumPy path gives with each deviate drawn when needed (same generator, same order), over several
    layers' calls (the generator's state carries from call to call) and blocks of queries."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    rng = np.random.default_rng(7)
    q, k, v = (rng.uniform(-0.4, 0.4, (n, 90, 16)).astype(np.float32) for n in (6, 2, 2))
    cell = dataclasses.replace(CellModel.ideal(), tau=2e-6, v_eq=0.3,
                               noise_q=lambda v: np.full(np.shape(v), 4e-16))
    cfg = GainCellConfig(storage_levels=16, output_levels=32, token_period=1e-8, rows=8, predistort=False,
                         read_noise=extra)
    sc = Scalers.identity(2, 6, 2, cell)
    sc.out_scale[:] *= 0.3  # tiles clip: the ADC's ends matter
    outs = {}
    from analogattn.attention.gaincell import kernel as kmod
    monkeypatch.setattr(kmod, "lanes", lambda: 2)
    for fast in (False, True):
        ker = GainCellAttention(cell, cfg, sc, block=32)
        # fast: blocks on two lanes, taking drawn-ahead deviates
        ker.draw_ahead = ker.fused_noise = ker.two_lanes = fast
        ker.LANE_MIN_WORK = 0
        assert ker.circuit_noise_var() > 0
        caches = [ker.new_cache(i, 2, 16) for i in range(2)]
        outs[fast] = [ker(q[:, a:b], k[:, a:b], v[:, a:b], np.arange(a, b), Mask(), caches[layer], layer)
                      for a, b in ((0, 70), (70, 90)) for layer in (0, 1)]
        outs[fast].append(ker.rng.standard_normal(4))  # the generator ends in the same state
    for x, y in zip(outs[False], outs[True]):
        assert np.array_equal(x, y)
    quiet = GainCellAttention(cell, cfg.replace(circuit_read_noise=False, read_noise=0.0), sc, block=32)
    ref = quiet(q, k, v, np.arange(90), Mask(), quiet.new_cache(0, 2, 16), 0)
    assert np.abs(np.concatenate([outs[True][0], outs[True][2]], axis=1) - ref).max() > 0  # the noise is there


def test_noisy_tile_adc_equals_its_numpy_formula():
    """The compiled epilogue against adc() and the sum over tiles, on random parts and deviates,
    including tiles not read and a zero full scale (reads 0)."""
    from analogattn.attention import _fused
    from analogattn.attention.peripherals import adc
    rng = np.random.default_rng(3)
    ntl, R, dd = 5, 40, 12
    parts = rng.standard_normal((ntl, R, dd)).astype(np.float32)
    z1, z2 = (rng.standard_normal((ntl, R, dd)).astype(np.float32) for _ in range(2))
    s1 = rng.uniform(0, 0.1, R).astype(np.float32)
    s2 = rng.uniform(0, 0.2, (ntl, R)).astype(np.float32)
    full = rng.uniform(0.5, 2.0, R).astype(np.float32)
    full[3] = 0
    back = rng.uniform(0.1, 3, (ntl, R)).astype(np.float32)
    back[1, ::3] = 0
    ref = adc(parts + s1[None, :, None] * z1 + s2[:, :, None] * z2, full[None, :, None], 32)
    ref = (ref * back[:, :, None]).sum(axis=0)
    acc = np.empty((R, dd), np.float32)
    _fused.noisy_tile_adc(parts, z1, s1, z2, s2, full, 16, back, acc)
    assert np.array_equal(acc, ref)
    assert np.all(acc[3] == 0)


def test_cache_growth_leaves_unwritten_mismatch_at_zero():
    """A cell model with a write spread but no read Monte Carlo (sigma None) under --mismatch writes
    no current deviations: past the cache's first capacity (256 tokens) they must still read as
    zero (they were uninitialised memory once: NaN/inf in the outputs of a 300-token call)."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    from analogattn.attention.gaincell.kernel import GainCellCache
    c = GainCellCache(2, 16, capacity=4)
    c.append(np.ones((2, 3, 16)), np.ones((2, 3, 16)), np.arange(3))
    c.append(np.ones((2, 9, 16)), np.ones((2, 9, 16)), np.arange(3, 12))
    assert c.length == 12 and not c.mismatch_k.any() and not c.mismatch_v.any()
    cell = dataclasses.replace(CellModel.ideal(), write_sigma=lambda v: np.full(np.shape(v), 4e-3))
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 300, 16)).astype(np.float32) * 0.1 for _ in range(3))
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=0.0, adc_bits=0,
                         window=0, predistort=False, mismatch=True)
    ker = GainCellAttention(cell, cfg, Scalers.identity(1, 2, 2, cell))
    out = ker(q, k, v, np.arange(300), Mask(), ker.new_cache(0, 2, 16), 0)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("ratio", [False, True])
def test_noisy_tile_acc_equals_tile_parts_then_noisy_tile_adc(ratio):
    """tile_parts of one tile and the per-tile pass (noise, ADC, sum), tile by tile in order, give bit
    for bit what tile_parts over all tiles and then noisy_tile_adc give, with tiles not read (pulse
    sum 0), a zero full scale, and each noise term on or off (bit-identical: the same operations on
    the same values in the same order)."""
    from analogattn.attention import _fused
    from analogattn.attention._fused.gaincell import noisy_tile_acc
    rng = np.random.default_rng(11)
    ntl, R, n, dd = 4, 30, 3, 16
    M = rng.standard_normal((ntl, R, n * dd)).astype(np.float32)
    rw = rng.uniform(0.5, 1.5, (n, R)).astype(np.float32)
    psum = rng.uniform(1, 20, (R, ntl)).astype(np.float32)
    psum[::4, 1] = 0
    z1, z2 = (rng.standard_normal((ntl, R, dd)).astype(np.float32) for _ in range(2))
    s1 = rng.uniform(0, 0.1, R).astype(np.float32)
    s2 = rng.uniform(0, 0.2, (ntl, R)).astype(np.float32)
    full = rng.uniform(0.5, 2.0, R).astype(np.float32)
    full[3] = 0
    back = np.ascontiguousarray((psum * rng.uniform(0.5, 2, (R, ntl)).astype(np.float32)).T)
    empty = np.empty((0, 0), np.float32)
    for use1, use2 in ((True, True), (False, True), (True, False)):
        parts = np.empty((ntl, R, dd), np.float32)
        _fused.tile_parts(M, rw, psum, ratio, parts)
        ref = np.empty((R, dd), np.float32)
        _fused.noisy_tile_adc(parts, z1 if use1 else np.empty((0, 0, 0), np.float32), s1, z2 if use2 else
                              np.empty((0, 0, 0), np.float32), s2, full, 16, back, ref)
        acc = np.zeros((R, dd), np.float32)
        for k in range(ntl):
            part = np.empty((1, R, dd), np.float32)
            _fused.tile_parts(M[k:k + 1], rw, np.ascontiguousarray(psum[:, k:k + 1]), ratio, part)
            noisy_tile_acc(part[0], z1[k] if use1 else empty, s1, z2[k] if use2 else empty, s2[k], full, 16, back[k],
                           acc)
        assert np.array_equal(acc, ref)
        assert np.abs(ref).max() > 0


@pytest.mark.parametrize("mask,window,block", [("causal", 0, 32), ("sliding", 0, 24), ("bidirectional", 0, 40),
                                               ("causal", 23, 256)])
def test_strips_and_tiles_read_equal_the_whole_block_path(mask, window, block, monkeypatch):
    """The fast path (scores in strips of queries over the keys they see, value tiles' products
    over the rows that read them, rows t-major) against the whole-block NumPy path with the same
    deviates: bit for bit, for causal, sliding and bidirectional masks, the kernel's own window,
    both noise terms on, head dims over two score tiles (accumulated) and strips shorter than a
    block (STRIP 8) or a block shorter than a strip; a prefill, then decoding token by token."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    from analogattn.attention.gaincell import kernel as kmod
    rng = np.random.default_rng(9)
    T = 100
    q, k, v = (rng.uniform(-0.4, 0.4, (n, T, 16)).astype(np.float32) for n in (6, 2, 2))
    cell = dataclasses.replace(CellModel.ideal(), tau=2e-6, v_eq=0.3,
                               noise_q=lambda v: np.full(np.shape(v), 4e-16))
    cfg = GainCellConfig(storage_levels=16, output_levels=32, token_period=1e-8, rows=8, predistort=False,
                         read_noise=0.01, window=window)
    sc = Scalers.identity(1, 6, 2, cell)
    sc.out_scale[:] *= 0.3
    sc.score_scale[:] *= 0.5
    m = Mask(mask, 30) if mask == "sliding" else Mask(mask)
    monkeypatch.setattr(kmod, "lanes", lambda: 2)
    outs = {}
    for fast in (False, True):
        ker = GainCellAttention(cell, cfg, sc, block=block)
        ker.STRIP = 8
        ker.fused_noise = ker.draw_ahead = ker.two_lanes = fast
        ker.LANE_MIN_WORK = 0
        cache = ker.new_cache(0, 2, 16)
        y = [ker(q[:, :90], k[:, :90], v[:, :90], np.arange(90), m, cache, 0)]
        y += [ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], np.arange(t, t + 1), m, cache, 0) for t in range(90, T)]
        outs[fast] = np.concatenate(y, axis=1), ker.rng.standard_normal(3)
    assert np.array_equal(outs[False][0], outs[True][0]) and np.array_equal(outs[False][1], outs[True][1])
    assert np.isfinite(outs[True][0]).all()


def test_runs_of_visible_keys_hand_computed():
    """_runs on a small causal block with a window: each row's first and one-past-last key, the
    strips' key spans, and the rows meeting each tile."""
    from analogattn.attention.gaincell.kernel import _runs
    t = np.arange(6)[:, None] + 4  # queries 4..9 over keys 0..9, window 3
    s = np.arange(10)[None, :]
    al = (s <= t) & (s > t - 3)
    al[1] = False  # a row that sees nothing
    big = 1 << 20  # K: every strip's product counts as large
    first, last, strips, tiles = _runs(al, 4, 4, 16, big)
    assert first.tolist() == [2, 0, 4, 5, 6, 7] and last.tolist() == [5, 0, 7, 8, 9, 10]
    assert strips == [(0, 4, 2, 8), (4, 6, 6, 10)]
    assert tiles == [(0, 1), (0, 6), (4, 6)]  # keys 0-3: row 0; 4-7: rows 0, 2..5; 8-9: rows 4, 5
    # small products: tiles widened to 16 stacked rows (g 3: 6 queries); strips of 2 rows with K
    # 5242: the first (rows 0-1, keys 2-4: 16 x 2 x 3 x K <= 2^19) merged with the next
    assert _runs(al, 4, 4, 3, big)[3] == [(0, 6), (0, 6), (0, 6)]
    assert _runs(al, 2, 4, 16, 5242)[2] == [(0, 4, 2, 8), (4, 6, 6, 10)]
    assert _runs(al, 4, 4, 16, 1)[2] == [(0, 6, 0, 10)]  # the whole block's product is small: one strip


def test_strip_passes_equal_the_block_passes():
    """score_noise_strip + score_strip over strips (the product's t-major rows, keys ks..ke) against
    add_row_scaled + score_tile on the whole block (h-major), noise of both kinds: the strip's
    elements bit for bit, the rest 0, the heads' largest |logit| the same; tile_pulses_t against
    tile_pulses (pq rows permuted, tiles outside a row's keys zero)."""
    from analogattn.attention import _fused
    from analogattn.attention._fused.gaincell import score_noise_strip, score_strip, tile_pulses_t
    from analogattn.attention.gaincell.kernel import _runs
    rng = np.random.default_rng(2)
    g, tb, S, K = 3, 20, 45, 24
    al = np.arange(S)[None, :] <= np.arange(tb)[:, None] + 25
    bias = np.where(al, 0, -np.inf).astype(np.float32)
    lhs = rng.standard_normal((g, tb, K)).astype(np.float32)
    rhs = rng.standard_normal((S, K)).astype(np.float32)
    full = np.array([3.0, 2.0, 0.0], np.float32)
    scale = rng.uniform(0.5, 2, (g, tb)).astype(np.float32)
    z64 = rng.standard_normal((g * tb, S))
    z32 = rng.standard_normal((g * tb, S)).astype(np.float32)
    s64 = (0.3 * rng.uniform(0.5, 1, g * tb)).astype(np.float32)
    sig = rng.uniform(0.1, 0.5, g * tb).astype(np.float32)
    x = lhs.reshape(g * tb, K) @ rhs.T
    xt = x.reshape(g, tb, S).transpose(1, 0, 2).reshape(tb * g, S)  # the product's rows t-major
    x += (s64[:, None] * z64).astype(np.float32)
    _fused.add_row_scaled(x, sig, z32)
    ref = np.empty((g, tb, S), np.float32)
    rmax = _fused.score_tile(x, full, scale, ref, False, bias, True)
    first, last, strips, _ = _runs(al, 6, 8, g, 1 << 20)
    assert len(strips) == 4
    got = np.full((g, tb, S), np.nan, np.float32)
    hmax = np.zeros(g, np.float32)
    for t0, t1, ks, ke in strips:
        xs = xt[t0 * g:t1 * g, ks:ke].copy()
        score_noise_strip(xs, t0, g, tb, ks, s64, z64, sig, z32)
        score_strip(xs, t0, ks, full, scale, got, False, bias, True, hmax)
    assert np.array_equal(np.where(al[None], got, 0), np.where(al[None], ref, 0))
    assert not np.isnan(got).any() and np.array_equal(hmax, rmax)
    p = np.where(al[None], rng.uniform(0, 1, (g, tb, S)) ** 3, 0).astype(np.float32)
    inv_sat = np.ones(g, np.float32)
    for mode in (0, 1, 2):
        ntl = -(-S // 8)
        pq, m, ps = np.empty((ntl, g * tb, 8), np.float32), np.ones((g * tb, ntl), np.float32), \
            np.empty((g * tb, ntl), np.float32)
        _fused.tile_pulses(p, bias, mode, inv_sat, 16, 8, pq, m, ps)
        pq2, m2, ps2 = np.full_like(pq, np.nan), np.full_like(m, np.nan), np.full_like(ps, np.nan)
        tile_pulses_t(p, bias, mode, inv_sat, 16, 8, first, last, pq2, m2, ps2)
        perm = (np.arange(g)[None, :] * tb + np.arange(tb)[:, None]).ravel()  # t-major row -> h-major row
        assert np.array_equal(pq2, pq[:, perm]) and np.array_equal(m2, m) and np.array_equal(ps2, ps), mode


def test_pooled_noise_buffers_are_reused_and_change_nothing(monkeypatch):
    """The deviates' buffers kept between calls (no fresh pages per draw): a second call of the same
    shapes fills the first call's buffers again, and every output (and the generator's state) is
    bit for bit that of fresh arrays per draw, with the deviates drawn ahead on two lanes."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    from analogattn.attention.gaincell import kernel as kmod
    rng = np.random.default_rng(3)
    q, k, v = (rng.uniform(-0.4, 0.4, (n, 80, 16)).astype(np.float32) for n in (6, 2, 2))
    cell = dataclasses.replace(CellModel.ideal(), tau=2e-6, v_eq=0.3, noise_q=lambda v: np.full(np.shape(v), 4e-16))
    cfg = GainCellConfig(storage_levels=16, output_levels=32, token_period=1e-8, rows=8, predistort=False)
    sc = Scalers.identity(1, 6, 2, cell)
    monkeypatch.setattr(kmod, "lanes", lambda: 2)
    pointers = []
    draw = kmod._Draws._draw

    def spy(self, shape, dtype):
        out = draw(self, shape, dtype)
        pointers.append(out.__array_interface__["data"][0])
        return out
    monkeypatch.setattr(kmod._Draws, "_draw", spy)
    outs = {}
    for per_shape in (0, kmod._Draws.PER_SHAPE):  # 0: nothing kept, a fresh array per draw
        monkeypatch.setattr(kmod._Draws, "PER_SHAPE", per_shape)
        ker = GainCellAttention(cell, cfg, sc, block=32)
        ker.LANE_MIN_WORK = 0
        ker.DRAW_AHEAD_MIN = 0
        res = []
        for _ in range(2):  # two windows of the same shapes
            del pointers[:]
            res.append(ker(q, k, v, np.arange(80), Mask(), ker.new_cache(0, 2, 16), 0))
            res.append(ker.rng.standard_normal(2))
            seen = list(pointers)
        outs[per_shape] = res
    assert len(seen) > 4
    for a, b in zip(outs[0], outs[kmod._Draws.PER_SHAPE]):
        assert np.array_equal(a, b)
    kept = {p for bufs in ker._noise_pool.values() for b in bufs for p in [b.__array_interface__["data"][0]]}
    assert kept and set(seen) <= kept  # the second window's deviates all went into kept buffers


def test_call_layout_is_reused_only_for_the_same_positions_and_mask(monkeypatch):
    """A call's layout (visible keys, blocks, decay factors, runs) is made once and reused by the
    next call with the same query and key positions and mask (the other layers of a forward
    pass), and made afresh otherwise: outputs bit for bit those of a kernel that makes it every
    call, with decay, read noise and both lanes on."""
    from analogattn.attention.base import Mask
    from analogattn.attention.gaincell import Scalers
    from analogattn.attention.gaincell import kernel as kmod
    rng = np.random.default_rng(11)
    T = 90
    q, k, v = (rng.uniform(-0.4, 0.4, (2, n, T, 16)).astype(np.float32) for n in (6, 2, 2))
    cell = dataclasses.replace(CellModel.ideal(), tau=2e-6, v_eq=0.3, noise_q=lambda v: np.full(np.shape(v), 4e-16))
    cfg = GainCellConfig(storage_levels=16, output_levels=32, token_period=1e-8, rows=8, predistort=False,
                         read_noise=0.01)
    sc = Scalers.identity(2, 6, 2, cell)
    sc.out_scale[:] *= 0.3
    sc.score_scale[:] *= 0.5
    monkeypatch.setattr(kmod, "lanes", lambda: 2)
    made = []
    orig = GainCellAttention._blocks

    def counted(self, *a):
        made.append(1)
        return orig(self, *a)
    monkeypatch.setattr(GainCellAttention, "_blocks", counted)

    def run(reuse):
        ker = GainCellAttention(cell, cfg, sc, block=32)
        ker.STRIP = 8
        ker.LANE_MIN_WORK = 0
        if not reuse:
            ker._reuse_layout = lambda positions, kpos, mask, extra, make, same=(): make()  # every call its own
        masks = (Mask(), Mask("sliding", 30))
        caches = {m: [ker.new_cache(i, 2, 16) for i in range(2)] for m in masks}
        outs, n_made = [], []

        def call(layer, t0, t1, m, cache):
            before = len(made)
            outs.append(ker(q[layer, :, t0:t1], k[layer, :, t0:t1], v[layer, :, t0:t1], np.arange(t0, t1), m, cache,
                            layer))
            n_made.append(len(made) - before)
        for m in masks:  # the sliding mask's prefill right after the causal one's
            for layer in (0, 1):  # the second layer: the same positions and mask
                call(layer, 0, 60, m, caches[m][layer])
        for layer in (0, 1):
            call(layer, 60, 80, masks[0], caches[masks[0]][layer])
        call(1, 60, 80, masks[0], ker.new_cache(1, 2, 16))  # the same queries against their own keys only
        for t in range(80, 83):  # decode steps
            for layer in (0, 1):
                call(layer, t, t + 1, masks[0], caches[masks[0]][layer])
        return outs, n_made, ker.rng.standard_normal(3)
    got, n_made, tail = run(True)
    ref, ref_made, ref_tail = run(False)
    assert ref_made == [1] * len(ref_made)
    assert n_made == [1, 0, 1, 0, 1, 0, 1] + [1, 0] * 3
    assert all(np.array_equal(a, b) for a, b in zip(got, ref)) and np.array_equal(tail, ref_tail)
    # another config (or cell) on the same kernel object: made afresh
    ker = GainCellAttention(cell, cfg, sc, block=32)
    ker(q[0, :, :60], k[0, :, :60], v[0, :, :60], np.arange(60), Mask(), ker.new_cache(0, 2, 16), 0)
    before = len(made)
    ker.cfg = cfg.replace(token_period=2e-8)
    ker(q[0, :, :60], k[0, :, :60], v[0, :, :60], np.arange(60), Mask(), ker.new_cache(0, 2, 16), 0)
    assert len(made) == before + 1
