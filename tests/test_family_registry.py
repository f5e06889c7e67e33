"""The circuit-family registry: every family is wired everywhere, and a new family (a toy RC
low-pass in tests/toy_rc_family.py) reaches the design file, --only, the characterization, the
fit and the plots through one register call."""
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from analogattn import cli
from analogattn.characterize import families, tasks
from analogattn.characterize.design import Design
from analogattn.characterize.runner import run_local, task_weight
from analogattn.errors import AnalogAttnError
from analogattn.params import Validated
from analogattn.surrogates import models as M

BUILTIN = ("gaincell", "reram", "comparator")
ROOT = Path(__file__).resolve().parents[1]

# tiny sweeps: every analysis of every built-in family, in seconds
TINY = {
    "gaincell": {"sweep": {"n_store": 7, "n_in": 3, "n_write": 4, "retention_time": 1e-6, "mc_samples": 4,
                           "mc_store": 4, "mc_in": 2, "mc_per_task": 4}},
    "reram": {"rows": 4, "sweep": {"n_iv": 5, "ir_positions": [0, 3], "ir_counts": [1, 4], "n_patterns": 10,
                                   "per_task": 10, "mc_patterns": 1, "mc_samples": 2}},
    "comparator": {"sweep": {"mc_samples": 4, "per_task": 4, "iterations": 3, "noise_reps": 2,
                             "noise_dv": [-0.002, 0.002], "overdrives": [0.01, 0.1]}},
}


def test_builtin_families_registered_in_order():
    assert families.names()[:3] == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_family_wired_everywhere(name):
    fam = families.get(name)
    # design tables: the parameter and sweep classes, defaults and a TOML table of each
    assert issubclass(fam.params, Validated) and issubclass(fam.sweep, Validated)
    d = Design()
    assert isinstance(getattr(d, name), fam.params) and isinstance(getattr(d, f"{name}_sweep"), fam.sweep)
    assert isinstance(Design.from_mapping({name: {"sweep": {}}}).sweeps[name], fam.sweep)
    # --only offers exactly the registered analyses
    assert cli._only(name) == {name: None}
    for a in fam.analysis_names:
        assert cli._only(f"{name}.{a}") == {name: {a}}
    with pytest.raises(AnalogAttnError, match=re.escape(", ".join(f"{name}.{a}" for a in fam.analysis_names))):
        cli._only(f"{name}.nonexistent")
    # workers exist, and the default analyses run only the workers their specs name
    for spec in fam.analyses:
        for w in spec.workers:
            assert callable(tasks.resolve(w)) and w in tasks.WORKERS
    built = fam.analyses_of(getattr(d, name), getattr(d, f"{name}_sweep"))
    assert {a.name for a in built} == {a.name for a in fam.analyses if a.default}  # opt-in ones when named
    spec_of = {s.name: s for s in fam.analyses}
    weights = families.scheduling_weights()
    for a in built:
        assert a.family == name and a.tasks
        for t in a.tasks:
            assert t.func in spec_of[a.name].workers
            assert task_weight(t, weights) == max(s.weight for s in fam.analyses if t.func in s.workers)
    # the fit reads only registered analyses; its models have the kinds bundles insist on
    fit = fam.fit_spec()
    assert fit is not None and callable(families.resolve(fit.fit))
    assert set(fit.reads) <= set(fam.analysis_names)
    assert set(fit.parameters) <= set(fit.reads)
    assert set(fit.targets) <= set(fit.models)
    for model, kinds in fit.models.items():
        assert model.startswith(name + ".") and set(kinds) <= set(M.KINDS)
        assert tuple(kinds) == M.EXPECTED_KINDS.get(model, tuple(kinds))
    assert {m for m in M.EXPECTED_KINDS if m.startswith(name + ".")} <= set(fit.models)
    # cost terms are fitted models; plots are hooked
    assert {c.model for c in fam.cost_terms} <= set(fit.models)
    assert callable(fam.plot_hook())


def test_scheduling_weights_reach_real_workers():
    """The runner's ordering applies: the comparator's offset tasks (the longest) first. (It
    named 'comparator_decisions', a worker that no longer existed.)"""
    w = families.scheduling_weights()
    assert all(k in tasks.WORKERS or tasks.resolve(k) for k in w)
    assert w["analogattn.characterize.comparator:comparator_offsets"] == max(w.values())
    d = Design()
    offs = d.analyses({"comparator": {"decision"}})[0].tasks[0]
    dc = d.analyses({"gaincell": {"read_surface"}})[0].tasks[0]
    assert task_weight(offs) > task_weight(dc) == 1


def test_cost_terms_cover_what_the_kernels_read():
    """Every measured constant the kernels' cost models read from the bundle is a registered
    cost term of some family."""
    terms = {c.model for f in families.families().values() for c in f.cost_terms}
    read = set()
    for p in (ROOT / "src/analogattn/attention").rglob("cost.py"):
        read |= set(re.findall(r"""bundle_value\(bundle,\s*["']([\w.]+)["']""", p.read_text()))
        read |= set(re.findall(r"""["']([a-z]+\.(?:energy|delay|time|t_read)\w*)["']\s+in\s+bundle""", p.read_text()))
    assert read and read <= terms, read - terms


@pytest.fixture(scope="module")
def tiny_runs():
    d = Design.from_mapping(TINY)
    return {name: run_local(d.analyses({name: None})) for name in BUILTIN}


@pytest.mark.parametrize("name", BUILTIN)
def test_fit_reads_datasets_the_family_writes(tiny_runs, name):
    fit = families.get(name).fit_spec()
    got = tiny_runs[name]
    opt_in = {a.name for a in families.get(name).analyses if not a.default}
    for analysis, (required, optional) in fit.reads.items():
        if analysis in opt_in:  # not in a default run (the gain-cell tile: minutes of ngspice)
            continue
        have = set(got[f"{name}/{analysis}"])
        assert set(required) <= have, (analysis, set(required) - have)
        assert set(optional) <= have


# -- a fourth family: one module + one registration ---------------------------------------------
@pytest.fixture
def toy():
    import toy_rc_family
    spec = toy_rc_family.register_toy()
    yield spec
    families.unregister("rc")


def test_toy_family_design_only_characterize_fit_plot(toy, tmp_path):
    from analogattn.characterize.runner import characterize
    from analogattn.surrogates import bundle
    from analogattn.surrogates.fit import fit_all, validation_rows
    from analogattn.surrogates.plots import write_all

    assert "rc" in families.names() and "rc" in Design().circuits
    design = Design.from_mapping({"rc": {"r": 20e3, "sweep": {"points": 200}}})
    assert design.rc.r == 20e3 and design.rc_sweep.points == 200
    with pytest.raises(AnalogAttnError, match="rc.r"):
        Design.from_mapping({"rc": {"r": -1.0}})
    assert cli._only("rc") == {"rc": None} and cli._only("rc.step") == {"rc": {"step"}}
    assert "rc" in cli._only(None)
    # characterize through the real runner (a spawned worker process, the task cache)
    out = tmp_path / "rc.h5"
    s = characterize(design.analyses(cli._only("rc")), out, jobs=1, cache_dir=tmp_path / "cache", progress=False)
    assert s.failed == 0 and s.analyses_written == ["rc/step"]
    with h5py.File(out) as f:
        v, t = f["rc/step/v_out"][()], f["rc/step/time"][()]
        assert f["rc/step"].attrs["netlist"].startswith("* rc_")
    tau = 20e3 * 100e-15
    assert np.allclose(v, 1 - np.exp(-t / tau), atol=0.01)  # the RC law, through ngspice
    # fit, validate, save and load the bundle, plot
    models = fit_all(out)
    assert set(models) == {"rc.tau"} and abs(models["rc.tau"]() / tau - 1) < 0.02
    rows = [r for r in validation_rows(models) if r[0] == "rc.tau"]
    assert rows and rows[0][3] == 0.02 and rows[0][4]
    bundle.save(tmp_path / "b.h5", models, "0" * 64)
    assert bundle.load(tmp_path / "b.h5")["rc.tau"]() == pytest.approx(models["rc.tau"]())
    assert [p.name for p in write_all(out, models, tmp_path / "plots")] == ["rc_step.png"]
    # through the CLI entry point, in this process (where the family is registered)
    out2 = tmp_path / "rc2.h5"
    assert cli.main(["characterize", "--only", "rc.step", "-o", str(out2), "--cache-dir",
                     str(tmp_path / "cache"), "-q"]) == 0
    with h5py.File(out2) as f:
        assert list(f) == ["rc"]


def test_unregistered_family_is_gone(toy):
    families.unregister("rc")
    assert "rc" not in families.names()
    with pytest.raises(AnalogAttnError, match="unknown family"):
        cli._only("rc")
