"""Physics of the ReRAM column and the comparator, from real ngspice runs."""
import h5py
import numpy as np
import pytest

from analogattn.characterize import comparator, reram
from analogattn.characterize.runner import run_local
from analogattn.circuits.comparator import ComparatorParams
from analogattn.circuits.reram import ReramColumnParams

from conftest import run_cli

IR = reram.ReramSweep(ir_positions=(0, 5, 15), ir_counts=(1, 4, 16), ir_levels=(3, 15), n_patterns=1,
                      mc_patterns=0)


def ir(p):
    return run_local(reram.analyses(p, IR, {"ir_drop"}))["reram/ir_drop"]


@pytest.fixture(scope="module")
def ir_default():
    return ir(ReramColumnParams(rows=16))


def test_output_grows_with_active_rows_and_conductance(ir_default):
    c = ir_default["current_vs_count"]  # [level, count]
    assert np.all(np.diff(c, axis=1) > 0)
    assert np.all(c[1] > c[0])
    assert (ir_default["status"] == 0).all()


def test_ir_drop_far_cell_contributes_less_more_with_wire_resistance(ir_default):
    r = ir_default["current_vs_position"]  # [level, position 0, 5, 15]
    assert np.all(np.diff(r, axis=1) < 0)
    far_loss = lambda d: 1 - d["current_vs_position"][:, -1] / d["current_vs_position"][:, 0]  # noqa: E731
    big = ir(ReramColumnParams(rows=16, r_wire=50.0))
    assert np.all(far_loss(big) > 5 * far_loss(ir_default))


def test_ideal_column_equals_dot_product_within_1pct():
    p = ReramColumnParams(rows=32, r_wire=0.0, v0=1e5, w_access=500.0)
    s = reram.ReramSweep(n_patterns=20, per_task=20, mc_patterns=0)
    d = run_local(reram.analyses(p, s, {"patterns"}))["reram/patterns"]
    assert np.abs(d["current"] / d["ideal"] - 1).max() < 0.01
    # and the default, non-ideal column is measurably off (sinh non-linearity)
    d2 = run_local(reram.analyses(ReramColumnParams(rows=32), s, {"patterns"}))["reram/patterns"]
    assert np.abs(d2["current"] / d2["ideal"] - 1).mean() > 0.01


def test_cell_iv_sinh_and_levels():
    p = ReramColumnParams(rows=4, levels=4, w_access=500.0)
    d = run_local(reram.analyses(p, reram.ReramSweep(n_iv=11), {"cell_iv"}))["reram/cell_iv"]
    i, v, g = d["current"], d["v"], d["g"]
    assert np.all(np.diff(i, axis=0)[:, 1:] > 0)  # more current at higher level
    # with a wide access device the cell follows G V0 sinh(V/V0) closely at low current
    want = g[0] * p.v0 * np.sinh(v / p.v0)
    assert np.allclose(i[0, 1:], want[1:], rtol=0.01)


def _offsets(w_in, l_in, n=40):
    p = ComparatorParams(w_in=w_in, l_in=l_in)
    s = comparator.ComparatorSweep(mc_samples=n, per_task=n, iterations=8, dv_range=0.06)
    return run_local(comparator.analyses(p, s, {"decision"}))["comparator/decision"]


@pytest.fixture(scope="module")
def decision_default():
    return _offsets(4.0, 0.2)


def test_keep_probability_shape(decision_default):
    d = decision_default
    dv, pk = d["dv"], d["p_keep"]
    assert pk[dv < -0.04].max() <= 0.02 and pk[dv > 0.04].min() >= 0.98
    sig = float(d["offset_sigma"])
    assert 0.002 < sig < 0.03  # a few mV (Pelgrom, 4 um x 0.2 um input pair)
    mid = np.interp(float(d["offset_mean"]), dv, pk)
    assert abs(mid - 0.5) < 0.15


def test_offset_sigma_shrinks_with_larger_input_devices(decision_default):
    big = _offsets(16.0, 0.8)
    assert float(big["offset_sigma"]) < 0.7 * float(decision_default["offset_sigma"])


def test_cli_only_selects_families(tmp_path):
    design = tmp_path / "d.toml"
    design.write_text("""
[reram]
rows = 8
[reram.sweep]
n_patterns = 10
per_task = 10
mc_patterns = 2
mc_samples = 3
ir_positions = [0, 7]
ir_counts = [1, 8]
[comparator.sweep]
mc_samples = 6
per_task = 6
iterations = 4
noise_reps = 4
noise_dv = [-0.002, 0.0, 0.002]
overdrives = [0.01, 0.1]
""")
    out = tmp_path / "c.h5"
    r = run_cli("characterize", "--design", design, "--only", "reram,comparator", "-o", out,
                "--cache-dir", tmp_path / "cache", "-q")
    assert r.returncode == 0, r.stderr
    with h5py.File(out) as f:
        assert set(f) == {"reram", "comparator"}
        assert set(f["reram"]) == {"cell_iv", "ir_drop", "patterns", "reference", "monte_carlo", "transient"}
        assert set(f["comparator"]) == {"decision", "noise", "delay", "energy"}
        pt = f["reram/patterns"]
        assert pt.attrs["seed"] == 1 and pt["held_out"].dtype == bool and pt["current"].attrs["units"] == "A"
        d = f["comparator/delay/delay"][()]
        assert d[1] < d[0]  # larger overdrive decides faster
        assert f["comparator/energy/mean"][()] > 0
        assert f["reram/transient/energy"][()] > 0
    r = run_cli("characterize", "--design", design, "--only", "gaincell.read_surface", "-o", out,
                "--cache-dir", tmp_path / "cache", "-q")
    with h5py.File(out) as f:  # earlier families kept
        assert {"reram", "comparator", "gaincell"} <= set(f)


def test_guided_offset_search_matches_full_search():
    """The guided search (window around the probe-predicted offset) finds the same offsets as a
    bisection over the full range, to the search's resolution."""
    p = ComparatorParams()
    kw = dict(mc_samples=20, per_task=10, iterations=9, dv_range=0.05)
    guided = run_local(comparator.analyses(p, comparator.ComparatorSweep(**kw), {"decision"}))["comparator/decision"]
    full = run_local(comparator.analyses(p, comparator.ComparatorSweep(guide_shift=0, **kw), {"decision"}))["comparator/decision"]
    res = 2 * 0.05 / 2 ** 9
    assert np.array_equal(guided["dvt"], full["dvt"])
    assert full["full_search"].all() and not guided["full_search"].all()
    assert np.max(np.abs(guided["offset"] - full["offset"])) <= 2 * res
    # the linear prediction from probe slopes explains > 99% of the SPICE offsets' variance
    assert np.var(full["offset"] - full["offset_linear"]) < 0.01 * np.var(full["offset"])
