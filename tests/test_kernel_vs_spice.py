"""Kernel-vs-SPICE validations (issue 16): the pruning kernel's column path against column data,
and what makes them fail (a non-separable cell table read at rank 1)."""
import numpy as np
import pytest

from analogattn.attention.sprint.validation import TARGET, kernel_columns, validate
from analogattn.surrogates.models import ColumnModel


def _column(kind, rows=64, levels=16, n_v=41, v_read=0.2):
    """A column model with a chosen cell I-V table: ``separable`` I = G(L) V (rank 1 exactly),
    ``nonseparable``: the high levels saturate like a series-limited cell, the low levels are
    linear (the table's second singular value is a few % of the first)."""
    v = np.linspace(0, v_read, n_v)
    g = np.linspace(1e-6, 10e-6, levels)
    if kind == "separable":
        iv = g[:, None] * v[None, :]
    else:
        vsat = np.where(np.arange(levels) >= levels // 2, 0.08, 10.0)  # saturating vs linear cells
        iv = g[:, None] * vsat[:, None] * np.tanh(v[None, :] / vsat[:, None])
    w = 1 - 1e-3 * np.arange(rows)  # IR drop by row position
    col = ColumnModel(v, iv, w, -60.0, 0.0, 0.0, domain={}, units={},
                      meta={"rows": rows, "levels": levels, "input_levels": 16, "v_read": v_read, "r_f": 5e3})
    return col


def _patterns(col, n=300, seed=3):
    """Patterns whose 'SPICE' current is the column formula itself (sum w_i x_i + c2 (sum x_i)^2)
    with the full cell table: what the kernel's factorisation must reproduce."""
    rng = np.random.default_rng(seed)
    rows = col.weights.size
    q = rng.integers(0, 16, (n, rows))
    q[:, 0] = 15  # every query reaches the DAC's full scale
    k = rng.integers(0, 16, (n, rows))
    v = np.linspace(0, col.meta["v_read"], 16)[q]
    return {"q_levels": q, "k_levels": k, "current": col(k, v), "held_out": np.ones(n, bool)}


def test_separable_cells_pass_and_match_hand_computation():
    col = _column("separable")
    pt = _patterns(col)
    sc = validate(col, pt)
    assert sc["rank1_error"] < 1e-12
    assert sc["nrmse"] < 1e-3 < TARGET  # only the loss term's weighted-sum stand-in differs
    # hand computation for one pattern: all rows at level 3 and full-scale query
    rows = col.weights.size
    q = np.full((1, rows), 15)
    k = np.full((1, rows), 3)
    i_col, i_ref, used = kernel_columns(__import__("analogattn.attention.sprint.device", fromlist=["Crossbar"])
                                        .Crossbar.from_column(col), q, k, 16)
    x = col.iv_current[3, -1]
    want = x * col.weights.sum() + float(col.c2) * (x * col.weights.sum()) * (x * rows)
    assert used.all() and abs(i_col[0] - want) < 1e-6 * abs(want)


def test_rank1_on_a_nonseparable_table_fails_the_target():
    col = _column("nonseparable")
    sc = validate(col, _patterns(col))
    assert sc["rank1_error"] > 0.01
    assert sc["nrmse"] > TARGET  # the validation catches the kernel's approximation


def test_patterns_without_full_scale_query_are_left_out():
    col = _column("separable")
    pt = _patterns(col, n=50)
    pt["q_levels"][:10] = np.minimum(pt["q_levels"][:10], 14)
    sc = validate(col, pt)
    assert sc["left_out_not_full_scale"] == 10 and sc["held_out_patterns"] == 40


def test_tia_power_model_hand_computation_and_cost_entry():
    """Two-stage Miller TIA: beta = R_col/(R_col + R_f) with R_col = 1/(64 x 5.5 uS) = 2.84 kOhm,
    f_cl = ln(100)/(2 pi 5 ns) = 146.6 MHz, GBW = f_cl/beta = 404.6 MHz, gm1 = 2 pi GBW 50 fF =
    127.1 uS, 2 I1 = 16.9 uA, I2 = 2.2 gm1 (20/50) / 15 = 7.46 uA: 24.4 uW, 0.244 pJ per 10 ns."""
    import math

    from analogattn.attention.sprint.cost import sprint_cost
    from analogattn.attention.sprint.tia import TiaPower, tia_energy_from_bundle
    c = TiaPower().currents(5e3, 5.5e-6, 64, 10e-9)
    r_col = 1 / (64 * 5.5e-6)
    gbw = math.log(100) / (2 * math.pi * 5e-9) * (r_col + 5e3) / r_col
    gm1 = 2 * math.pi * gbw * 50e-15
    assert abs(c["power_W"] - (2 * gm1 / 15 + 2.2 * gm1 * 0.4 / 15)) < 1e-12
    assert 24e-6 < c["power_W"] < 25e-6
    e = tia_energy_from_bundle(None)
    assert abs(e - c["power_W"] * 10e-9) < 1e-18
    r = sprint_cost(2, 4, 2, 64, 100, 0.3, 0.02)
    assert abs(r["energy_parts_J"]["tia"] - 2 * 101 * 1 * e * 4 * 2) < 1e-18


# -- the gain-cell tile ---------------------------------------------------------------------------
def _cubic_cell(tau=0.5e-3):
    """The reference's cubic at V_in = 0.9 V (uA, y = V - 0.45), a retention tau and V_eq."""
    from analogattn.attention.gaincell import CellModel
    cur = lambda v: 1e-6 * (0.5214 + 13.612 * (np.asarray(v) - 0.45) - 2.6204 * (np.asarray(v) - 0.45) ** 2  # noqa
                            + 46.055 * (np.asarray(v) - 0.45) ** 3)
    return CellModel(0.9, 0.45, cur, lambda v: np.asarray(v, float), tau, 0.3, t_max=10e-9)


def _tile_data(cell, n=40, seed=5, tp=65e-9):
    """Draws whose 'SPICE' charge is the exact decayed read: sum_r u_r t_max I(V_eq + (V - V_eq) D)."""
    rng = np.random.default_rng(seed)
    u = rng.integers(-15, 16, (n, 64)) / 15
    v = rng.uniform(0.05, 0.72, (n, 64, 2))
    age = rng.integers(0, 1025, n)  # D >= 0.875: the Taylor expansion (as MAX_AGE at the default tau)
    D = np.exp(-age * tp / cell.tau)[:, None, None]
    i = cell.current(cell.v_eq + (v - cell.v_eq) * D)
    q = np.einsum("nr,nrc->nc", u * cell.t_max, i)
    return {"u": u, "v_written": v, "age_tokens": age, "token_period": tp, "charge": q}


def test_tile_kernel_matches_exact_decayed_reads():
    from analogattn.attention.gaincell.validation import TARGET as GC_TARGET, validate as gc_validate
    cell = _cubic_cell()
    sc = gc_validate(cell, _tile_data(cell))
    assert sc["nrmse_full_scale"] < 0.1 * GC_TARGET  # the expansion and tables: far inside 1%


def test_tile_validation_fails_when_a_decay_term_is_dropped(monkeypatch):
    """The Taylor expansion without its first-order decay term (f1): the validation fails."""
    from analogattn.attention.gaincell.device import CellReadout
    from analogattn.attention.gaincell.validation import TARGET as GC_TARGET, validate as gc_validate
    full = CellReadout.terms_taylor.func

    def dropped(self):
        f0, f1, f2 = full(self)
        return [f0, lambda y: 0 * y, f2]
    monkeypatch.setattr(CellReadout, "terms_taylor", property(dropped))
    cell = _cubic_cell()
    sc = gc_validate(cell, _tile_data(cell))
    assert sc["nrmse_full_scale"] > GC_TARGET


def test_refresh_resets_the_decay_hand_computed():
    """Refresh every N tokens: a key written at 0 and read at t has decayed for t mod N tokens."""
    from analogattn.attention.gaincell.validation import kernel_charges
    cell = _cubic_cell(tau=0.2e-3)
    rng = np.random.default_rng(2)
    u = rng.integers(-15, 16, (6, 64)) / 15
    v = rng.uniform(0.05, 0.72, (6, 64, 1))
    ages = np.array([0, 99, 100, 250, 399, 1000])
    tp, N = 65e-9, 100
    got = kernel_charges(cell, u, v, ages, tp, refresh_interval=N)[:, 0]
    D = np.exp(-(ages % N) * tp / cell.tau)[:, None]
    want = ((u * cell.t_max) * cell.current(cell.v_eq + (v[:, :, 0] - cell.v_eq) * D)).sum(axis=1)
    fs = 64 * cell.t_max * 10e-6
    assert np.max(np.abs(got - want)) < 1e-3 * fs
    never = kernel_charges(cell, u, v, ages, tp)[:, 0]
    assert np.abs(never[-1] - got[-1]) > 0.01 * fs  # 1000 tokens of decay vs none: visible


def test_refresh_costs_one_write_per_cell_per_interval():
    from analogattn.attention.gaincell.cost import gaincell_cost
    a = gaincell_cost(30, 9, 3, 64, 1024)
    b = gaincell_cost(30, 9, 3, 64, 1024, refresh_interval=256)
    assert "refresh" not in a["energy_parts_J"]
    assert abs(b["energy_parts_J"]["refresh"] - 30 * 3 * 2 * 64 * 1024 * 0.6e-15 / 256) < 1e-18
    assert abs(b["energy_per_token_J"] - a["energy_per_token_J"] - b["energy_parts_J"]["refresh"]) < 1e-15


def test_written_tile_goes_through_the_write_transfer():
    """Tiles written through the write transistors: the kernel stores the write transfer of the
    bit-line voltage (its own store path), so 'SPICE' charges made with a stored voltage of
    0.95 V_wbl + 12 mV match in the written mode and miss the target when the transfer is ignored."""
    from analogattn.attention.gaincell.validation import TARGET as GC_TARGET, validate as gc_validate
    cell = _cubic_cell()
    cell.write = lambda v: np.minimum(np.asarray(v, float), 0.4) - 0.004
    data = _tile_data(cell)
    stored = cell.write(data["v_written"])
    D = np.exp(-data["age_tokens"] * data["token_period"] / cell.tau)[:, None, None]
    i = cell.current(cell.v_eq + (stored - cell.v_eq) * D)
    data["charge"] = np.einsum("nr,nrc->nc", data["u"] * cell.t_max, i)
    data["v_stored"] = stored
    sc = gc_validate(cell, {**data, "through_write_transistor": np.asarray(1)})
    assert sc["nrmse_full_scale"] < 0.1 * GC_TARGET and sc["write_transfer_rms_V"] < 1e-12
    assert gc_validate(cell, data)["nrmse_full_scale"] > GC_TARGET  # stored = written: the validation fails


def test_tile_written_through_write_transistors_matches_the_write_transfer():
    """Real ngspice, built-in card: a 4-row x 2-column tile written through its write transistors
    (shared row bit lines, one word line per column, columns in turn) stores what the
    write-transfer analysis stores for the same bit-line voltages (both sampled 5 ns after the word
    line falls; 1 mV: the write_read cells each have their own bit line), and the column charge
    of an age-0 read equals sum_r u_r t_max I_DC(V_stored) to the read path's few % (transient
    edges and gate coupling against the DC surface)."""
    from analogattn.characterize import gaincell
    from analogattn.characterize.gaincell_tile import gaincell_tile
    from analogattn.characterize.runner import run_local
    from analogattn.characterize.tasks import Analysis, Dataset, make_task
    from analogattn.circuits.gaincell import GainCellParams, GainCellSweep
    from analogattn.circuits.gaincell_array import tile_netlist, tile_times
    p = GainCellParams()
    v = np.array([[0.1, 0.6], [0.3, 0.2], [0.5, 0.7], [0.65, 0.05]])
    u = np.array([1.0, -1.0, 0.6, -0.2])
    tm = tile_times(p, 0.0, p.t_read, 2)
    task = make_task("gaincell", "tile", 0, gaincell_tile.__module__ + ":gaincell_tile",
                     tile_netlist(p, v, u, p.t_read, 0.0, written=True), p.technology.digest(),
                     times=tm, cols=2, rows=4, tstep=p.t_edge, tmax=0.5e-9, options={})
    merge = lambda res: {k: Dataset(np.asarray(res[0][k]), "") for k in res[0]}  # noqa: E731
    r = run_local([Analysis("gaincell", "tile", [task], merge, "{}")])["gaincell/tile"]
    assert r["status"][0] == 0
    s = GainCellSweep(n_write=19)  # written voltages 0, 0.05 ... 0.9
    wr = run_local(gaincell.analyses(p, s, {"write_read"}))["gaincell/write_read"]
    want = np.interp(v, wr["v_written"], wr["v_stored"])
    np.testing.assert_allclose(r["v_stored"], want, atol=1e-3)
    assert np.all(np.abs(r["v_stored"] - v) > 1e-3)  # the write transfer is not the identity (feedthrough)
    rs = run_local(gaincell.analyses(p, GainCellSweep(n_store=91, n_in=2), {"read_surface"}))["gaincell/read_surface"]
    i_dc = lambda x: np.interp(x, rs["v_store"], rs["current"][:, -1])  # noqa: E731
    q_dc = (u[:, None] * p.t_read * i_dc(r["v_before"])).sum(axis=0)
    q = r["q1"] - r["q2"]
    fs = 4 * p.t_read * np.max(np.abs(rs["current"][:, -1]))
    assert np.all(np.abs(q - q_dc) < 0.03 * fs), (q, q_dc, fs)
