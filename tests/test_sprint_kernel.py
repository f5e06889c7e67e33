"""ReRAM pruning kernel: exact limits, the empty-survivor rule, masks against an independent
evaluation of the column and comparator models, key codes, the oracle, calibration files."""
import math

import numpy as np
import pytest

from analogattn.attention.base import IdealAttention, Mask
from analogattn.attention.cache import KVCache
from analogattn.attention.recorders import KeepLog
from analogattn.attention.sprint import Crossbar, SprintAttention, SprintConfig, SprintScales, _mass_keep
from analogattn.errors import AnalogAttnError, ParameterError

QUIET = dict(variation=False, circuit_noise=False)


def _qkv(H=6, KV=2, T=40, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((H, T, d)).astype(np.float32), rng.standard_normal((KV, T, d)).astype(np.float32),
            rng.standard_normal((KV, T, d)).astype(np.float32))


def _scales(theta, KV=2, H=6, step=0.5):
    return SprintScales(np.full((1, KV), step), None, np.full((1, H), theta))


@pytest.mark.parametrize("rule,theta", [("none", 0.0), ("fixed", -np.inf), ("anchor", np.inf)])
def test_threshold_minus_infinity_equals_ideal_attention(rule, theta):
    q, k, v = _qkv()
    pos = np.arange(q.shape[1])
    want = IdealAttention()(q, k, v, pos, Mask(), KVCache(2, 16), 0)
    ker = SprintAttention(Crossbar.ideal(), SprintConfig(rule=rule), _scales(theta), block=16)  # several blocks
    got = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    assert np.abs(got - want).max() < 1e-5
    assert ker.stats.summary()["kept_fraction"] == 1.0
    assert abs(ker.stats.summary()["softmax_mass_kept"] - 1.0) < 1e-9


def test_nothing_survives_gives_the_own_value():
    """Rule: the query's own key is always kept; when every comparator prunes, the output is the
    query token's own value vector (hand-computed: softmax over one key)."""
    q, k, v = _qkv()
    pos = np.arange(q.shape[1])
    ker = SprintAttention(Crossbar.ideal(), SprintConfig(rule="fixed"), _scales(np.inf))
    got = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    own = np.repeat(v, 3, axis=0)  # query head h reads KV head h // 3
    assert np.abs(got - own).max() < 1e-6
    s = ker.stats.summary()
    assert s["kept_scores"] == 6 * 40  # one key per row
    # scores hundreds of logits apart: the own key's weight underflows against the pruned
    # maximum, and the rule still holds (weights taken relative to the kept keys)
    ker = SprintAttention(Crossbar.ideal(), SprintConfig(rule="fixed"), _scales(np.inf))
    got = ker(300 * q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    assert np.isfinite(got).all() and np.abs(got - own).max() < 1e-6


def _reference_scores(ker, xbar, q, k, layer=0):
    """Independent evaluation of the modelled column: codes -> levels -> cells, DAC per query,
    two phases with s+ and s- kept apart, loss c2 s^2 per phase and column, reference column."""
    half = 2 ** (ker.cfg.converters.key_bits - 1)
    codes = np.clip(np.round(k / ker.sc.k_step[layer][:, None, None]), -half, half - 1).astype(int)
    M = 2 ** ker.cfg.converters.dac_bits - 1
    out = []
    for h in range(q.shape[0]):
        j = h // (q.shape[0] // k.shape[0])
        rows = []
        for t in range(q.shape[1]):
            u = q[h, t]
            um = np.abs(u).max()
            mcode = np.rint(np.abs(u) / um * M)
            bvals = np.array([xbar.b(mm / M * xbar.v_read) for mm in mcode])
            bp, bn = np.where(u > 0, bvals, 0), np.where(u < 0, bvals, 0)
            ref = np.full(u.size, xbar.a[ker._ref_level])

            def col(cells):
                sp, sn = bp @ cells, bn @ cells
                wp, wn = (bp * xbar.weights[:u.size]) @ cells, (bn * xbar.weights[:u.size]) @ cells
                return (wp + xbar.c2 * sp * sp) - (wn + xbar.c2 * sn * sn)

            i_ref = col(ref)
            i_key = np.array([col(xbar.a[ker._level[codes[j, s] + half]]) for s in range(k.shape[1])])
            volts = xbar.r_f * (i_key - i_ref)
            vpl = xbar.r_f * ker.kappa * math.sqrt(u.size) / ker.sc.k_step[layer, j] / um
            rows.append(volts / vpl)  # modelled score in logits
        out.append(rows)
    return np.array(out)


def test_noiseless_mask_equals_thresholding_the_modelled_scores():
    q, k, v = _qkv(T=24)
    pos = np.arange(24)
    xbar = Crossbar.ideal()
    xbar.c2 = -60.0  # a current-dependent loss, so the column is non-linear
    xbar.b = lambda vv: np.sinh(np.asarray(vv) / 0.15) / np.sinh(0.2 / 0.15)  # non-linear cell I-V
    theta = 0.3
    log = KeepLog()
    ker = SprintAttention(xbar, SprintConfig(rule="fixed", **QUIET), _scales(theta), recorder=log)
    ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    got = np.zeros((6, 24, 24), bool)
    for layer, j, qp, kp, keep in log.log:
        got[3 * j:3 * j + 3][:, qp[:, None], kp[None, :]] = keep
    z = _reference_scores(ker, xbar, q, k)
    allowed = np.tril(np.ones((24, 24), bool))
    want = ((z > theta) & allowed) | np.eye(24, dtype=bool)
    close = np.abs(z - theta) < 1e-3
    assert (got == want)[~close].all()
    assert want.sum() > 0.2 * allowed.sum() and (~want & allowed).sum() > 0.2 * allowed.sum()  # a real split


def test_key_codes_are_the_rounded_msbs():
    ker = SprintAttention(Crossbar.ideal(), SprintConfig(key_bits=4), _scales(0.0, KV=1, H=1, step=0.25))
    k = np.array([[[0.0, 0.12, 0.13, -0.3, 1.74, 5.0, -5.0]]])
    assert ker._codes(k, 0)[0, 0].tolist() == [0, 0, 1, -1, 7, 7, -8]
    ker2 = SprintAttention(Crossbar.ideal(), SprintConfig(key_bits=2), _scales(0.0, KV=1, H=1, step=0.25))
    assert ker2._codes(k, 0)[0, 0].tolist() == [0, 0, 1, -1, 1, 1, -2]
    # 2-bit codes -2..1 spread over the 16 levels: 0, 5, 10, 15; zero code at level 10
    assert ker2._level.tolist() == [0, 5, 10, 15] and ker2._ref_level == 10


def test_oracle_keeps_the_smallest_set_holding_the_mass():
    s = np.log(np.array([[[0.5, 0.3, 0.15, 0.05]]], np.float32))
    allowed = np.ones((1, 4), bool)
    assert _mass_keep(s, allowed, 0.79)[0, 0].tolist() == [True, True, False, False]
    assert _mass_keep(s, allowed, 0.81)[0, 0].tolist() == [True, True, True, False]
    assert _mass_keep(s, allowed, 0.999)[0, 0].tolist() == [True, True, True, True]


def test_decay_free_sliding_window_and_locality_statistics():
    q, k, v = _qkv(T=30)
    pos = np.arange(30)
    ker = SprintAttention(Crossbar.ideal(), SprintConfig(rule="none", window=8), _scales(0.0))
    got = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
    want = IdealAttention()(q, k, v, pos, Mask("sliding", 8), KVCache(2, 16), 0)
    assert np.abs(got - want).max() < 1e-5
    s = ker.stats.summary()
    # keep-all in a sliding window: each query fetches exactly one key the previous did not see
    assert abs(s["newly_fetched_fraction"] - 6 * 29 / (6 * sum(min(t + 1, 8) for t in range(1, 30)))) < 1e-12


def test_noise_and_offsets_change_decisions_reproducibly():
    q, k, v = _qkv(T=32)
    pos = np.arange(32)
    xbar = Crossbar.ideal()
    xbar.noise_rel, xbar.cmp_offset, xbar.cmp_noise, xbar.sigma_g = 0.05, 2e-3, 1e-3, 0.05

    def run(cfg):
        log = KeepLog()
        ker = SprintAttention(xbar, cfg, _scales(0.2), recorder=log)
        out = ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 16), 0)
        return out, np.concatenate([x[4].ravel() for x in log.log])

    o1, m1 = run(SprintConfig(rule="fixed", seed=1))
    o2, m2 = run(SprintConfig(rule="fixed", seed=1))
    o3, m3 = run(SprintConfig(rule="fixed", seed=2))
    _, m0 = run(SprintConfig(rule="fixed", **QUIET))
    assert np.array_equal(o1, o2) and np.array_equal(m1, m2)
    assert (m1 != m3).any() and (m1 != m0).any()
    assert (m1 != m0).mean() < 0.2  # noise flips decisions near the threshold, not all of them


def test_calibration_file_round_trip_and_refusals(tmp_path):
    sc = SprintScales(np.array([[0.5, 0.25]]), np.ones((1, 2, 16)), np.array([[0.1] * 6]), np.array([[1e4, 2e4]]))
    p = tmp_path / "cal.npz"
    sc.save(p, {"model": "tiny"})
    back = SprintScales.load(p)
    for f in ("k_step", "k_chan", "theta", "r_diff"):
        assert np.array_equal(getattr(back, f), getattr(sc, f))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(p.read_bytes()[:100])
    with pytest.raises(AnalogAttnError, match="not a readable calibration"):
        SprintScales.load(bad)
    with pytest.raises(AnalogAttnError, match="no such calibration"):
        SprintScales.load(tmp_path / "missing.npz")


def test_bad_config_names_field():
    with pytest.raises(ParameterError, match="key_bits"):
        SprintConfig(key_bits=6)
    with pytest.raises(ParameterError, match="rule"):
        SprintConfig(rule="magic")
