"""Surrogates fitted on a real (small) characterization: held-out scores, bundle round trip,
damaged bundles, out-of-domain rule."""
import shutil

import h5py
import numpy as np
import pytest

from analogattn.surrogates import bundle
from analogattn.surrogates.fit import TARGETS, fit_all, file_digest

from conftest import run_cli

DESIGN = """
[gaincell.sweep]
n_store = 25
n_in = 11
n_write = 16
retention_time = 2e-3
mc_samples = 40
mc_per_task = 20
[reram]
rows = 16
[reram.sweep]
n_patterns = 120
per_task = 60
mc_patterns = 2
mc_samples = 8
ir_positions = [0, 15]
ir_counts = [1, 16]
[comparator.sweep]
mc_samples = 400
per_task = 10
noise_reps = 8
noise_dv = [-0.001, 0.0, 0.001]
overdrives = [0.002, 0.01, 0.05]
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("sur")
    (d / "d.toml").write_text(DESIGN)
    char = d / "char.h5"
    r = run_cli("characterize", "--design", d / "d.toml", "-o", char, "--cache-dir", d / "cache", "-q")
    assert r.returncode == 0, r.stderr
    out = d / "sur.h5"
    r = run_cli("fit", char, "-o", out, "--plot", d / "plots")
    assert r.returncode == 0, r.stderr
    return char, out, d, r.stdout


def test_held_out_scores_meet_targets(fitted):
    char, out, d, stdout = fitted
    b = bundle.load(out)
    assert b["gaincell.read_surface"].scores["nrmse"] <= TARGETS["gaincell.read_surface"][1]
    assert b["gaincell.read_surface"].scores["held_out_points"] > 100
    assert b["reram.column"].scores["nrmse"] <= TARGETS["reram.column"][1]
    # the column model is better than the ideal dot product it replaces
    assert b["reram.column"].scores["nrmse"] < 0.5 * b["reram.column"].scores["nrmse_ideal_dot"]
    pr = b["comparator.probit"].scores
    # 200 held-out latches: the plain fraction deciding keep is good to 1.36/sqrt(200) = 0.096
    # (95% Kolmogorov band); the control-variate estimate to far less
    assert pr["estimator"] == "control variates" and pr["sampling_floor_95"] < 0.25 * 1.36 / np.sqrt(pr["held_out_samples"])
    assert pr["max_abs_error"] <= TARGETS["comparator.probit"][1]
    assert b.info["source_digest"] == file_digest(char)
    assert {p.name for p in (d / "plots").iterdir()} >= {"gaincell_read_surface.png", "reram_column_scatter.png",
                                                         "comparator_probit.png", "gaincell_retention.png",
                                                         "gaincell_write_transfer.png"}


def test_comparator_control_variates_are_unbiased(fitted):
    """The held-out keep probability estimated with control variates agrees with the plain
    fraction of held-out SPICE latches deciding keep, within the plain estimate's own 99%
    Kolmogorov band; and the probe-measured slopes predict each latch's SPICE offset to a small
    fraction of the offset spread."""
    from math import erf, sqrt
    char, out, *_ = fitted
    with h5py.File(char) as f:
        d = f["comparator/decision"]
        off, lin, dv = d["offset"][()], d["offset_linear"][()], d["dv"][()]
        m_lin = float(d["offset_nominal"][()])
        s_lin = float(np.sqrt(np.sum((d["sensitivity"][()] * d["dvt_sigma"][()]) ** 2)))
    b_off, b_lin = off[1::2], lin[1::2]
    plain = (dv[None, :] > b_off[:, None]).mean(axis=0)
    cv = plain - (dv[None, :] > b_lin[:, None]).mean(axis=0) + np.array([0.5 * (1 + erf((x - m_lin) / s_lin / sqrt(2))) for x in dv])
    assert np.max(np.abs(cv - plain)) <= 1.63 / np.sqrt(b_off.size)
    assert np.var(off - lin) < 0.01 * np.var(off)
    # the stored score is this comparison (probit without decision noise: mismatch only)
    pm = _no_noise(bundle.load(out)["comparator.probit"])
    assert np.isclose(pm.scores["max_abs_error"], np.max(np.abs(pm(dv) - cv)))


def _no_noise(m):
    import copy
    m = copy.copy(m)
    m.noise_sigma = np.asarray(0.0)
    return m


def test_scores_recomputed_independently(fitted):
    char, out, *_ = fitted
    b = bundle.load(out)
    with h5py.File(char) as f:
        pt = f["reram/patterns"]
        held = pt["held_out"][()]
        pred = b["reram.column"](pt["k_levels"][()][held], pt["v_in"][()][held])
        true = pt["current"][()][held]
        g = f["gaincell/read_surface"]
        I, vs, vi = g["current"][()], g["v_store"][()], g["v_in"][()]
    assert np.isclose(np.sqrt(np.mean((pred - true) ** 2)) / np.ptp(true), b["reram.column"].scores["nrmse"])
    # the chosen surface reproduces SPICE at the held-out midpoints (odd, odd)
    VS, VI = np.meshgrid(vs[1:-1:2], vi[1:-1:2], indexing="ij")
    err = b["gaincell.read_surface"](VS, VI) - I[1:-1:2, 1:-1:2]
    assert np.abs(err).max() / np.ptp(I) < 0.01


def test_export_load_round_trip_identical(fitted, tmp_path):
    char, out, *_ = fitted
    models = fit_all(char)
    p = tmp_path / "b.h5"
    bundle.save(p, models, "x")
    b = bundle.load(p)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 0.9, (3, 7)), rng.uniform(0.45, 0.9, (3, 7))
    for name in ("gaincell.read_surface", "gaincell.read_surface_poly", "gaincell.variation"):
        assert np.array_equal(models[name](x, y), b[name](x, y))
    assert np.array_equal(models["gaincell.write"](x), b["gaincell.write"](x))
    lv, v = rng.integers(0, 16, (5, 16)), rng.uniform(0, 0.2, (5, 16))
    assert np.array_equal(models["reram.column"](lv, v), b["reram.column"](lv, v))
    dv = np.linspace(-0.02, 0.02, 9)
    assert np.array_equal(models["comparator.probit"](dv), b["comparator.probit"](dv))
    assert models["gaincell.retention"].params_at(50.0) == b["gaincell.retention"].params_at(50.0)


def test_out_of_domain_is_clipped(fitted):
    b = bundle.load(fitted[1])
    s = b["gaincell.read_surface"]
    (xl, xh), (_, yh) = s.domain["x"], s.domain["y"]
    assert s(np.array([xh + 1.0]), np.array([yh + 0.5]))[0] == s(np.array([xh]), np.array([yh]))[0]
    assert s(np.array([xl - 1.0]), np.array([0.6]))[0] == s(np.array([xl]), np.array([0.6]))[0]
    w = b["gaincell.write"]
    assert w(5.0) == w(w.x[-1])
    assert b["gaincell.retention"].params_at(500.0) == b["gaincell.retention"].params_at(85.0)


def test_damaged_bundles_are_refused(fitted, tmp_path):
    char, out, *_ = fitted
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(out.read_bytes()[:2000])
    with pytest.raises(bundle.BundleError, match="truncated or corrupted"):
        bundle.load(trunc)
    with pytest.raises(bundle.BundleError, match="not a surrogate bundle"):
        bundle.load(char)  # a characterization file, wrong schema
    wrongv = tmp_path / "v.h5"
    shutil.copy(out, wrongv)
    with h5py.File(wrongv, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(bundle.BundleError, match="schema version 99"):
        bundle.load(wrongv)
    wrongk = tmp_path / "k.h5"
    shutil.copy(out, wrongk)
    with h5py.File(wrongk, "a") as f:
        f["gaincell.write"].attrs["kind"] = "neural-net"
    with pytest.raises(bundle.BundleError, match="unknown kind"):
        bundle.load(wrongk)
    lack = tmp_path / "l.h5"
    shutil.copy(out, lack)
    with h5py.File(lack, "a") as f:
        del f["reram.column/weights"]
    with pytest.raises(bundle.BundleError, match="damaged or incomplete"):
        bundle.load(lack)
    for e in (bundle.BundleError("x"),):
        assert "\n" not in str(e)


def test_fit_cli_errors(tmp_path):
    r = run_cli("fit", tmp_path / "none.h5", "-o", tmp_path / "s.h5")
    assert r.returncode == 2 and "no such characterization file" in r.stderr and "none.h5" in r.stderr
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    r = run_cli("fit", bad, "-o", tmp_path / "s.h5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_vectorised_any_shape(fitted):
    b = bundle.load(fitted[1])
    s = b["gaincell.read_surface"]
    for shape in [(), (4,), (2, 3, 5)]:
        x = np.full(shape, 0.7)
        assert np.shape(s(x, np.full(shape, 0.9))) == shape


def test_compiled_and_numpy_paths_agree(fitted, monkeypatch):
    """The numba kernels (serial and split over cores) compute what the NumPy-only path computes,
    clipping included."""
    from analogattn.surrogates import _accel
    if not _accel.AVAILABLE:
        pytest.skip("numba not importable: only the NumPy path exists")
    b = bundle.load(fitted[1])
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.2, 1.2, (1 << 20) + 17), rng.uniform(0.2, 1.2, (1 << 20) + 17)
    for name in ("gaincell.read_surface_table", "gaincell.read_surface_poly"):
        m = b[name]
        par = m(x, y)
        monkeypatch.setattr(_accel, "PARALLEL_MIN", 1 << 62)
        ser = m(x[:5000].reshape(50, 100), y[:5000].reshape(50, 100))
        monkeypatch.setattr(_accel, "AVAILABLE", False)
        ref = m(x, y)
        monkeypatch.undo()
        scale = np.ptp(ref)
        assert np.max(np.abs(par - ref)) <= 1e-5 * scale, name
        assert ser.shape == (50, 100) and np.array_equal(ser.reshape(-1), par[:5000])
