"""Gain-cell attention kernel: exact limits and hand-computed cases."""
import dataclasses

import numpy as np
import pytest

from analogattn.attention.base import IdealAttention, Mask
from analogattn.attention.cache import KVCache
from analogattn.attention.gaincell import CellModel, GainCellAttention, GainCellConfig, Scalers, ideal_kernel
from analogattn.attention.peripherals import adc, quantise
from analogattn.attention.recorders import TileQuantiles, WeightProbe


def _qkv(H=6, KV=2, T=40, d=16, seed=0):
    rng = np.random.default_rng(seed)
    # values within the cell's linear range after the identity scalers: |k|, |v| < 0.45, |q| < 1
    return (rng.uniform(-1, 1, (H, T, d)).astype(np.float32), rng.uniform(-0.4, 0.4, (KV, T, d)).astype(np.float32),
            rng.uniform(-0.4, 0.4, (KV, T, d)).astype(np.float32))


def test_ideal_cell_equals_ideal_attention():
    q, k, v = _qkv()
    pos = np.arange(q.shape[1])
    want = IdealAttention()(q, k, v, pos, Mask(), KVCache(2, 16), 0)
    ker = ideal_kernel(1, 6, 2)
    got = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    assert np.abs(got - want).max() < 1e-5


def test_ideal_cell_incremental_equals_prefill():
    q, k, v = _qkv(T=12)
    pos = np.arange(12)
    ker = ideal_kernel(1, 6, 2)
    full = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    c = ker.new_cache(0, 2, 16)
    rows = [ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], pos[t:t + 1], Mask(), c, 0) for t in range(12)]
    assert np.abs(np.concatenate(rows, axis=1) - full).max() < 1e-5


def test_quantise_values():
    x = np.array([-0.2, 0.0, 0.1, 0.26, 0.9, 1.3])
    assert np.allclose(quantise(x, 0.0, 0.9, 4), [0.0, 0.0, 0.0, 0.3, 0.9, 0.9])
    assert np.allclose(quantise(x, 0.0, 1.0, 0), [0.0, 0.0, 0.1, 0.26, 0.9, 1.0])


def test_value_tiles_are_digitised_one_by_one():
    """Six keys of charge c each, full pulses, tiles of 4 and 2 rows, a 4-code signed ADC over
    [-3c, 3c) (codes -2..1 x 1.5c; zero is a code): the 4-row tile (4c, clamped) reads 1.5c and
    the 2-row tile (2c) 1.5c -> 3c, where one 6-row tile would read 1.5c; a tile without pulses
    reads exactly zero (no ADC bias from tiles outside the window)."""
    cell = CellModel.ideal()
    vv = np.full((6, 1), 0.55)
    c = 20e-6 * 0.1 * cell.t_max
    cfg = GainCellConfig(input_levels=0, output_levels=4, token_period=0.0, rows=4, activation="hardsigmoid",
                         predistort=False)
    ker = GainCellAttention(cell, cfg, None)
    assert np.isclose(ker._values(np.ones((1, 6)), vv, None, 3 * c)[0, 0], 3.0 * c, rtol=1e-6)
    six = GainCellAttention(cell, dataclasses.replace(cfg, rows=6), None)
    assert np.isclose(six._values(np.ones((1, 6)), vv, None, 3 * c)[0, 0], 1.5 * c, rtol=1e-6)
    p = np.array([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])  # first tile: no pulse
    assert np.isclose(ker._values(p, vv, None, 3 * c)[0, 0], 1.5 * c, rtol=1e-6)
    assert ker._values(np.zeros((1, 6)), vv, None, 3 * c)[0, 0] == 0.0


def test_adc_is_mid_tread_twos_complement():
    x = np.array([-5.0, -1.0, -0.2, 0.0, 0.24, 0.26, 0.99, 5.0])
    # 8 codes over [-1, 1): step 0.25, codes -4..3
    assert np.allclose(adc(x, 1.0, 8), [-1.0, -1.0, -0.25, 0.0, 0.25, 0.25, 0.75, 0.75])


def test_decay_hand_computed():
    """One key written at t=0, read by a query 10 tokens later: its stored (V - V_eq) has decayed
    by exp(-10 T / tau), so the score (linear cell) scales by the same factor."""
    tau, period = 1e-6, 1e-8
    cell = CellModel(0.9, 0.45, lambda v: 20e-6 * (np.asarray(v) - 0.45), lambda v: np.asarray(v, float), tau, 0.45)
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=period, adc_bits=0,
                         window=0, activation="hardsigmoid", poly_degree=1, predistort=False)
    sc = Scalers.identity(1, 1, 1, cell)
    sc.s_sat[:] = 1e9  # linear region of the hardsigmoid: p = S / s_sat
    ker = GainCellAttention(cell, cfg, sc)
    c = ker.new_cache(0, 1, 2)
    k = np.array([[[0.3, -0.1]]], np.float32)
    v = np.array([[[0.2, 0.1]]], np.float32)
    q = np.array([[[0.5, 0.5]]], np.float32)
    ker(q, k, v, np.array([0]), Mask(), c, 0)
    s_now = 15e-9 * 20e-6 * (0.5 * 0.3 + 0.5 * -0.1)
    out = ker(q, k * 0, v * 0, np.array([10]), Mask(), c, 0)  # second key stores mid-rail (zero)
    f = np.exp(-10 * period / tau)
    p_old = s_now * f / 1e9
    # value array: p_old x t_max x g x (0.2 f, 0.1 f), divided by the output gain t_max g
    assert np.allclose(out[0, 0], [p_old * 0.2 * f, p_old * 0.1 * f], rtol=1e-6)


def test_storage_levels_and_write_transfer_apply():
    cell = CellModel(0.9, 0.45, lambda v: 20e-6 * (np.asarray(v) - 0.45), lambda v: 0.9 * np.asarray(v, float),
                     np.inf, 0.45)
    cfg = GainCellConfig(storage_levels=4, token_period=0.0, predistort=False)
    ker = GainCellAttention(cell, cfg, Scalers.identity(1, 1, 1, cell))
    c = ker.new_cache(0, 1, 1)
    ker(np.zeros((1, 1, 1), np.float32), np.array([[[0.2]]], np.float32), np.array([[[-0.5]]], np.float32),
        np.array([0]), Mask(), c, 0)
    # k: 0.45 + 0.2 = 0.65 -> nearest of (0, 0.3, 0.6, 0.9) = 0.6 -> write 0.9 x 0.6 = 0.54
    assert np.isclose(c.keys[0, 0, 0], 0.54)
    # v: 0.45 - 0.5 = -0.05 -> clipped to 0 -> 0
    assert np.isclose(c.values[0, 0, 0], 0.0)


def test_sliding_window_limits_keys():
    q, k, v = _qkv(T=30)
    pos = np.arange(30)
    base = ideal_kernel(1, 6, 2)
    ker = GainCellAttention(base.cell, base.cfg.replace(window=5), base.sc)
    got = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    want = IdealAttention()(q, k, v, pos, Mask("sliding", 5), KVCache(2, 16), 0)
    assert np.abs(got - want).max() < 1e-5


def test_bad_config_names_field():
    with pytest.raises(ValueError, match="activation"):
        GainCellConfig(activation="relu")
    with pytest.raises(ValueError, match="storage_levels"):
        GainCellConfig(storage_levels=-1)


def test_predistortion_linearises_a_nonlinear_cell():
    """A strongly non-linear cell (cubic current, compressive write): writing through the inverse
    curves makes the read current linear in k and v, so attention is exact again."""
    cell = CellModel(0.9, 0.45, lambda v: 5e-6 * (np.asarray(v) - 0.45) + 60e-6 * (np.asarray(v) - 0.45) ** 3,
                     lambda v: 0.8 * np.asarray(v, float) + 0.05, np.inf, 0.45)
    base = dict(input_levels=0, storage_levels=0, output_levels=0, token_period=0.0, adc_bits=0, window=0)
    q, k, v = _qkv()
    pos = np.arange(q.shape[1])
    want = IdealAttention()(q, k, v, pos, Mask(), KVCache(2, 16), 0)
    sc = Scalers.identity(1, 6, 2, cell)
    sc.a_k[:] = sc.a_v[:] = 2.0  # |k|, |v| <= 0.4 -> current fractions <= 0.8
    on = GainCellAttention(cell, GainCellConfig(**base, predistort=True), sc)
    got = on(q, k, v, pos, Mask(), on.new_cache(0, 2, 16), 0)
    assert np.abs(got - want).max() < 2e-3
    sc_off = Scalers.identity(1, 6, 2, cell)
    off = GainCellAttention(cell, GainCellConfig(**base, predistort=False), sc_off)
    bad = off(q, k, v, pos, Mask(), off.new_cache(0, 2, 16), 0)
    assert np.abs(bad - want).max() > 10 * np.abs(got - want).max()


@pytest.mark.parametrize("method", ["meanstd", "lstsq"])
def test_output_calibration_recovers_a_known_gain(method, tmp_path):
    """A tiny GPT-2 through a linear cell whose output scaler is off by 3x and shifted: either
    calibration restores the exact output scaler (ideal cell, nothing else in the way)."""
    from analogattn.attention.gaincell import calibrate_output
    from analogattn.transformer.loaders import load
    from tiny_models import write_tiny_gpt2
    write_tiny_gpt2(tmp_path / "g")
    m = load(str(tmp_path / "g"))
    c = m.config
    ker = ideal_kernel(c.n_layers, c.n_heads, c.n_kv_heads)
    ker.sc.a_q[:], ker.sc.a_k[:], ker.sc.a_v[:] = 0.1, 0.05, 0.05  # the tiny model's q, k, v stay in range
    ids = m.tokenizer.encode("the cat sat in the hat and the dog ran")
    want = m.forward(ids)
    assert np.abs(m.forward(ids, caches=m.new_caches(ker), kernel=ker) - want).max() < 1e-3
    ker.sc.a_o *= 3.0
    ker.sc.b_o += 0.1
    assert np.abs(m.forward(ids, caches=m.new_caches(ker), kernel=ker) - want).max() > 0.1
    calibrate_output(m, [ids], ker, method)
    got = m.forward(ids, caches=m.new_caches(ker), kernel=ker)
    assert np.abs(got - want).max() < 1e-3


def test_channel_equalisation_is_exact_for_an_ideal_cell():
    q, k, v = _qkv()
    pos = np.arange(q.shape[1])
    want = IdealAttention()(q, k, v, pos, Mask(), KVCache(2, 16), 0)
    ker = ideal_kernel(1, 6, 2)
    rng = np.random.default_rng(3)
    ker.sc.k_chan = rng.uniform(0.5, 2.0, (1, 2, 16))
    ker.sc.v_chan = rng.uniform(0.5, 2.0, (1, 2, 16))
    ker.sc.a_q[:] = 0.5  # q x k_chan stays within one full pulse
    ker.sc.a_k[:] = ker.sc.a_v[:] = 0.5  # k / k_chan and v / v_chan stay within +-0.45 V of mid-rail
    got = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    assert np.abs(got - want).max() < 1e-5


def test_per_tile_pulse_scaling_hand_computed():
    """Softmax weights [0.5, 0.5 | 0.02, 0.01] on tiles of 2 rows, 4 pulse levels (0, 1/3, 2/3, 1):
    per tile the pulses span the tile's largest weight -> [1, 1] x 0.5 and [1, 2/3] x 0.02;
    scaled to the row's largest weight instead, the second tile's pulses round to zero."""
    cell = CellModel.ideal()
    vv = np.array([[0.55], [0.65], [0.75], [0.85]])  # stored voltages; current = g (v - 0.45)
    cur = 20e-6 * (vv[:, 0] - 0.45) * cell.t_max
    p = np.array([[0.5, 0.5, 0.02, 0.01]])
    cfg = GainCellConfig(input_levels=4, output_levels=0, token_period=0.0, rows=2, tile_scale=True)
    ker = GainCellAttention(cell, cfg, None)
    got = ker._values(p, vv, None, np.inf)[0, 0]
    want = 0.5 * (cur[0] + cur[1]) + 0.02 * (cur[2] + (2 / 3) * cur[3])
    assert abs(got - want) < 1e-6 * abs(want)  # float32 kernel: rounding ~1e-7
    ker2 = GainCellAttention(cell, dataclasses.replace(cfg, tile_scale=False), None)
    row = ker2._values(p / 0.5, vv, None, np.inf)[0, 0] * 0.5
    assert abs(row - 0.5 * (cur[0] + cur[1])) < 1e-6 * abs(want)


def test_ratiometric_tile_adc_hand_computed():
    """Tiles of 2 rows, pulses [1, 1] and [1, 0]: the ADC sees each tile's charge divided by its
    pulse sum (2 and 1), digitised on 4 codes over +-F (step F/2), then multiplied back; with a
    fixed reference the same charges are digitised directly."""
    cell = CellModel.ideal()
    vv = np.array([[0.60], [0.70], [0.80], [0.45]])
    cur = 20e-6 * (vv[:, 0] - 0.45) * cell.t_max  # charge of each cell at a full pulse
    F = 1.2 * cur[2]
    p = np.array([[0.5, 0.5, 0.25, 0.0]])
    cfg = GainCellConfig(input_levels=0, output_levels=4, token_period=0.0, rows=2, tile_scale=True, predistort=False)
    ker = GainCellAttention(cell, cfg, None)
    got = ker._values(p, vv, None, F)[0, 0]
    step = F / 2

    def code(x):
        return np.clip(np.round(x / step), -2, 1) * step
    want = 0.5 * 2 * code((cur[0] + cur[1]) / 2) + 0.25 * code(cur[2])
    assert abs(got - want) < 1e-6 * abs(want)  # float32 kernel
    fixed = GainCellAttention(cell, dataclasses.replace(cfg, ratiometric=False), None)._values(p, vv, None, F)[0, 0]
    assert abs(fixed - (0.5 * code(cur[0] + cur[1]) + 0.25 * code(cur[2]))) < 1e-6 * abs(want)
    assert abs(got - fixed) > 0.1 * abs(want)  # the two references really differ here


def test_decayed_read_of_a_nonlinear_cell_matches_the_exact_current():
    """A curved cell I(V) = g (V - 0.3) + h (V - 0.3)^3, retention towards V_eq = 0.3: the score of
    a query reading keys of several ages equals t_max sum_d u_d I(V_eq + (V_d - V_eq) D) computed
    directly, both for the three-term expansion in (D - 1) (D >= 0.75) and the polynomial one
    (older keys)."""
    g, h, veq = 20e-6, 60e-6, 0.3

    def cur(v):
        x = np.asarray(v, float) - veq
        return g * x + h * x ** 3
    tau, period = 1e-6, 1e-8
    cell = CellModel(0.9, 0.45, cur, lambda v: np.asarray(v, float), tau, veq)
    for n_old in (20, 150):  # oldest D = exp(-0.2) = 0.82 (Taylor) and exp(-1.5) = 0.22 (polynomial)
        cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=period, adc_bits=0,
                             window=0, activation="hardsigmoid", poly_degree=7, predistort=False)
        sc = Scalers.identity(1, 1, 1, cell)
        sc.s_sat[:] = 1e9
        ker = GainCellAttention(cell, cfg, sc)
        c = ker.new_cache(0, 1, 3)
        rng = np.random.default_rng(n_old)
        ks = rng.uniform(-0.35, 0.4, (n_old, 3)).astype(np.float32)
        pos = np.arange(n_old)
        ker(np.zeros((1, n_old, 3), np.float32), ks[None], ks[None], pos, Mask(), c, 0)
        u = np.array([[[0.7, -0.4, 0.9]]], np.float32)
        stored = c.keys[0].copy()  # V after the write (mid-rail + k)
        probe = WeightProbe(0, 0)
        reader = GainCellAttention(cell, cfg, sc, recorder=probe, readout=ker.readout)
        reader(u, np.zeros((1, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32), np.array([n_old]), Mask(), c, 0)
        p = probe.out[2][0, :n_old]  # hardsigmoid weights = score / s_sat
        D = np.exp(-(n_old - pos) * period / tau)[:, None]
        want = 15e-9 * (cur(veq + (stored - veq) * D) @ u[0, 0].astype(float)) / 1e9
        assert np.allclose(p, np.clip(want, 0, 1), rtol=2e-3, atol=2e-3 * np.abs(want).max()), n_old


def test_mismatch_is_a_fixed_per_cell_current_deviation():
    """With mismatch on, each written cell gets a deviation sigma(V) z (z ~ N(0, 1), drawn once and
    kept in the cache); a read adds t_max sum_d u_d dev_d to the score, the same on every read."""
    g, s0 = 20e-6, 0.4e-6
    cell = CellModel(0.9, 0.45, lambda v: g * (np.asarray(v) - 0.45), lambda v: np.asarray(v, float), np.inf, 0.45,
                     sigma=lambda v: np.full(np.shape(v), s0))
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=0.0, adc_bits=0, window=0,
                         activation="hardsigmoid", predistort=False, mismatch=True, seed=5)
    sc = Scalers.identity(1, 1, 1, cell)
    sc.s_sat[:] = 1e9
    ker = GainCellAttention(cell, cfg, sc)
    c = ker.new_cache(0, 1, 64)
    rng = np.random.default_rng(0)
    k = rng.uniform(-0.3, 0.3, (1, 200, 64)).astype(np.float32)
    ker(np.zeros((1, 200, 64), np.float32), k, k, np.arange(200), Mask(), c, 0)
    dev = c.mismatch_k[0].copy()
    assert abs(dev.std() / s0 - 1) < 0.03 and abs(dev.mean()) < 0.03 * s0
    u = rng.uniform(0.1, 1.0, (1, 1, 64)).astype(np.float32)
    for _ in range(2):  # fixed: the same deviations on every read
        probe = WeightProbe(0, 0)
        reader = GainCellAttention(cell, cfg, sc, recorder=probe, rng=ker.rng)
        reader(u, np.zeros((1, 1, 64), np.float32), np.zeros((1, 1, 64), np.float32), np.array([200]), Mask(), c, 0)
        p = probe.out[2][0, :200]
        want = 15e-9 * ((g * (c.keys[0, :200] - 0.45) + dev) @ u[0, 0].astype(float)) / 1e9
        assert np.allclose(p, np.clip(want, 0, 1), rtol=1e-4, atol=1e-6 * np.abs(want).max())
    assert np.array_equal(c.mismatch_k[0, :200], dev)


def _curved_cell(tau=1e-6):
    """A cell whose current has kinks (piecewise linear on a coarse grid, like a bilinear table)
    and curvature, retention towards V_eq = 0.3."""
    knots = np.linspace(0.0, 0.9, 23)
    vals = 20e-6 * (knots - 0.3) + 60e-6 * (knots - 0.3) ** 3
    return CellModel(0.9, 0.45, lambda v: np.interp(v, knots, vals), lambda v: np.asarray(v, float), tau, 0.3)


def test_term_tables_match_the_cell_functions():
    """The expansion terms are read from tables; against the functions themselves (kinked current,
    Taylor and polynomial expansions, no decay) they agree to 1e-5 of the largest term."""
    ker = GainCellAttention(_curved_cell(), GainCellConfig(predistort=False, poly_degree=5), None)
    v = np.concatenate([np.linspace(0, 0.9, 997), np.random.default_rng(0).uniform(0, 0.9, 3000)])[:, None]
    for d_min in (1.0, 0.9, 0.5):
        kind, fs = ker.readout.decay_terms(d_min)
        got = ker.readout.terms(v, kind)[:, :, 0]
        want = np.stack([f(v[:, 0] - 0.3) for f in fs], axis=1)
        assert np.abs(got - want).max() < 1e-5 * np.abs(want).max(), kind
    kind, fs = ker.readout.decay_terms(0.9)
    off = ker.readout.terms(np.array([[1.5]]), kind)[0, :, 0]  # off the table: evaluated directly
    assert np.allclose(off, [f(np.array(1.5 - 0.3)) for f in fs], rtol=1e-6)


@pytest.mark.parametrize("activation", ["softmax", "hardsigmoid"])
def test_query_blocks_do_not_change_the_result(activation):
    """Blocks of queries (each with its own decay reference and key range) give what one block
    gives: decay, a curved cell, storage levels, a sliding window, per-tile pulse scaling and the
    ratiometric ADC (scores and tile outputs unquantised: few rounding ties to flip)."""
    q, k, v = _qkv(T=90, d=16)
    pos = np.arange(90)
    cell = _curved_cell(tau=2e-7)
    cfg = GainCellConfig(input_levels=16, storage_levels=16, output_levels=0, adc_bits=0, token_period=1e-8,
                         window=37, rows=8, activation=activation, predistort=False)
    sc = Scalers.identity(1, 6, 2, cell)
    sc.s_sat[:] = 0.2 * sc.score_scale
    outs = []
    for block in (256, 16, 5):
        ker = GainCellAttention(cell, cfg, sc, block=block)
        outs.append(ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0))
    scale = np.abs(outs[0]).max()
    assert np.abs(outs[1] - outs[0]).max() < 1e-5 * scale and np.abs(outs[2] - outs[0]).max() < 1e-5 * scale


def test_recording_path_equals_the_fused_value_path():
    """The value tiles' per-tile path (calibration records, read noise) and the fused one agree,
    ADCs included."""
    q, k, v = _qkv(T=50, d=16)
    pos = np.arange(50)
    cell = _curved_cell(tau=1e-6)
    cfg = GainCellConfig(storage_levels=16, output_levels=32, token_period=1e-8, rows=8, predistort=False)
    sc = Scalers.identity(1, 6, 2, cell)
    sc.out_scale[:] *= 0.5
    ker = GainCellAttention(cell, cfg, sc)
    fused = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    tiles = TileQuantiles(0.99)
    rec = GainCellAttention(cell, cfg, sc, recorder=tiles)
    slow = rec(q, k, v, pos, Mask(), rec.new_cache(0, 2, 16), 0)
    assert len(tiles.per_head) == 6 and all(len(x) > 0 for x in tiles.per_head.values())
    assert np.abs(slow - fused).max() < 1e-5 * np.abs(fused).max()


def test_zero_code_stays_inside_the_range_when_v_eq_is_at_a_rail():
    """A retention equilibrium at the rail (a write device that barely leaks) must not leave the
    pre-distorted code range one-sided: the zero sits mid-range, both signs keep full scale, and
    a stored zero reads zero current. With V_eq inside the range nothing changes."""
    import numpy as np

    from analogattn.attention.gaincell.device import CellModel, CellReadout
    for v_eq, want_zero in ((0.9, 0.45), (1.3, 0.45), (0.3, 0.3)):
        c = CellModel.ideal(vdd=0.9)
        c.v_eq = v_eq
        r = CellReadout(c, True, 32, 5)
        assert r.v_zero == pytest.approx(want_zero)
        assert r.unit_charge() > 0
        assert abs(float(r.read_current(np.array([r.v_zero]))[0])) < 1e-15
        i = r.read_current(np.array([0.0, 0.9]))
        assert i[0] < 0 < i[1]


@pytest.mark.parametrize("case", ["taylor", "poly_mismatch", "off_grid"])
def test_decode_keeps_each_tokens_terms_with_the_same_outputs(case, monkeypatch):
    """Decode token by token (after a prefill) with each stored token's expansion terms kept in the
    cache gives bit for bit what recomputing every token's terms on every call gives: decay on (the
    expansion kind changes with the oldest key's age), per-cell mismatch and read noise on, and a
    write transfer that puts late tokens' voltages off the term tables' grid (every token then
    evaluated directly: the keeping turns off)."""
    from analogattn.attention.gaincell import kernel as kmod
    rng = np.random.default_rng(3)
    H, KV, T, d = 4, 2, 40, 16
    q = rng.uniform(-1, 1, (H, T, d)).astype(np.float32)
    k, v = (rng.uniform(-0.4, 0.4, (KV, T, d)).astype(np.float32) for _ in range(2))
    cell = dataclasses.replace(_curved_cell(tau=3e-6 if case == "taylor" else 2e-7),  # oldest D 0.88 / 0.14
                               noise_q=lambda x: np.full(np.shape(x), 3e-16),
                               sigma=lambda x: np.full(np.shape(x), 0.2e-6))
    if case == "off_grid":  # a transfer that writes above 1.05 VDD once a value is large
        k[:, 30:] *= 2.5
        cell = dataclasses.replace(cell, write=lambda x: np.asarray(x, float) * 1.2)
    cfg = GainCellConfig(storage_levels=16, output_levels=32, token_period=1e-8, predistort=False, rows=8,
                         mismatch=case == "poly_mismatch", seed=2)
    sc = Scalers.identity(1, H, KV, cell)
    pos = np.arange(T)
    kept = {}
    for keep in (True, False):
        if not keep:
            monkeypatch.setattr(kmod.GainCellCache, "terms", lambda self, ro, kind, which, j, mismatch, new: ro.terms(
                (self.keys if which == "k" else self.values)[j], kind,
                (self.mismatch_k if which == "k" else self.mismatch_v)[j] if mismatch else None))
        ker = GainCellAttention(cell, cfg, sc, block=16)
        c = ker.new_cache(0, KV, d)
        out = [ker(q[:, :10], k[:, :10], v[:, :10], pos[:10], Mask(), c, 0)]
        out += [ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], pos[t:t + 1], Mask(), c, 0) for t in range(10, T)]
        kept[keep] = (np.concatenate(out, axis=1), c)
    assert np.array_equal(kept[True][0], kept[False][0])
    c = kept[True][1]
    if case == "off_grid":
        assert c.keys.max() > 1.05 * 0.9 and c._terms["k"]["direct"]
    else:
        assert c._terms["k"]["arr"] is not None and np.all(c._terms["k"]["filled"] == T)
        assert kept[True][0].std() > 0


@pytest.mark.parametrize("levels", [0, 16, 255])
def test_query_pulses_equal_the_numpy_dac(levels):
    """The compiled query DAC against sign(u) pulse(|u| / u_max) in float64 (u = a q + b, some
    beyond full scale: clipped), then float32: bit for bit."""
    from analogattn.attention._fused.gaincell import query_pulses
    from analogattn.attention.peripherals import pulse
    rng = np.random.default_rng(4)
    g, T, d = 3, 50, 16
    qh = rng.uniform(-2, 2, (g, T, d)).astype(np.float32)
    a, b = rng.uniform(0.3, 1.2, g), rng.uniform(-0.1, 0.1, g)
    u_max = rng.uniform(0.5, 2, (g, T)).astype(np.float32)
    u = a[:, None, None] * qh + b[:, None, None]
    ref = (np.sign(u) * pulse(np.abs(u) / u_max[:, :, None], levels)).astype(np.float32)
    out = np.empty((g, T, d), np.float32)
    query_pulses(qh, a, b, u_max, levels, out)
    assert np.array_equal(out, ref) and (np.abs(ref) == 1).any() and (np.abs(ref) < 1).any()
