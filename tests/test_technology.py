"""The technology layer: model-card and subcircuit processes, device roles, Monte Carlo hooks.

The subcircuit path is exercised for real with a toy "PDK" whose devices are subcircuits
wrapping the built-in card's models (instantiated ``X... toy_nfet W=<um> L=<um>`` as SKY130's
are): its netlists contain no M lines, and ngspice gives the same currents as the built-in card.
"""
import re

import numpy as np
import pytest

from analogattn.characterize import comparator, gaincell, reram
from analogattn.characterize.design import Design
from analogattn.characterize.runner import run_local
from analogattn.circuits.comparator import ComparatorParams
from analogattn.circuits.gaincell import GainCellParams, GainCellSweep
from analogattn.circuits.reram import ReramColumnParams
from analogattn.circuits.technology import (BUILTIN_CORNERS, MODEL_CARD, PROCESSES, SUBCIRCUIT, Mosfet,
                                            PdkMismatchSwitch, Process, Technology, builtin_process,
                                            register_process)
from analogattn.errors import AnalogAttnError, ParameterError

TOY_LIB = """* toy PDK: subcircuit devices wrapping the built-in 65-nm card; W and L in um
.param dvthn=0 dvthp=0
.include '{card}'
.subckt toy_nfet d g s b W=1 L=1
m0 d g s b nch W={{W*1e-6}} L={{L*1e-6}}
.ends
.subckt toy_pfet d g s b W=1 L=1
m0 d g s b pch W={{W*1e-6}} L={{L*1e-6}}
.ends
"""


@pytest.fixture
def toypdk(tmp_path):
    lib = tmp_path / "toy.spice"
    lib.write_text(TOY_LIB.format(card=Technology().path))
    proc = Process(name="toypdk", instantiation=SUBCIRCUIT, devices={"nmos": "toy_nfet", "pmos": "toy_pfet"},
                   includes=(str(lib),), corners=("tt",), vdd_range=(0.5, 1.5),
                   mismatch=PdkMismatchSwitch("mc_mm_switch"), inner_device="m0")
    register_process("toypdk", proc)
    yield Technology(process="toypdk")
    PROCESSES.pop("toypdk", None)


def _mos_lines(net):
    return [ln for ln in net.splitlines() if ln[:1].lower() in "mx" and not ln.startswith("*")]


def test_builtin_header_and_model_card_lines():
    t = Technology()
    assert t.header() == f".param dvthn=0.0 dvthp=0.0\n.include '{t.path}'\n"
    assert Technology(corner="fs").header().startswith(".param dvthn=-0.03 dvthp=0.03\n")
    p = t.as_process()
    assert p.instantiation == MODEL_CARD and p.corners == tuple(BUILTIN_CORNERS)
    line = p.mos(Mosfet("mp0", "bl", "sn", "rwl", "rwl", "pmos", 0.6, 0.3))
    assert line == "mp0 bl sn rwl rwl pch W=6e-07 L=3e-07\n"
    assert p.mos(Mosfet("m1_0", "a", "b", "c", "0", "nmos", 4, 0.2, dvt=1e-3)).endswith(" delvto=0.001\n")
    assert p.alter_dvt("mp0", 2.5e-3) == ["alter mp0 delvto=0.0025"]
    assert p.op_vector(Mosfet("m1", "a", "b", "c", "0", "nmos", 1, 1), "gm") == "@m1[gm]"


def test_user_model_file_is_lib_or_include(tmp_path):
    f = tmp_path / "m.lib"
    f.write_text(".lib tt\n.model nch nmos level=54\n.model pch pmos level=54\n.endl tt\n")
    assert Technology(model_file=str(f)).header() == f".lib '{f.resolve()}' tt\n"
    assert Technology(model_file=str(f), corner="").header() == f".include '{f.resolve()}'\n"


def test_every_family_netlist_goes_through_the_process(toypdk):
    """With a subcircuit process every transistor is an X instance of the PDK's device, W and L in
    um, and no M card or built-in model name is left."""
    nets = [GainCellParams(technology=toypdk).read_surface_netlist(),
            GainCellParams(technology=toypdk).write_read_netlist([0.2, 0.7]),
            GainCellParams(technology=toypdk).retention_netlist([0.8], 27.0),
            ReramColumnParams(rows=3, technology=toypdk).cell_iv_netlist(),
            ReramColumnParams(rows=3, technology=toypdk).columns_netlist("t", [[0.1] * 3], [[1e-5] * 3]),
            ReramColumnParams(rows=3, technology=toypdk).transient_netlist([0.1] * 3, [1e-5] * 3, 1e-9, 2e-9, 3e-9),
            ComparatorParams(technology=toypdk).input_pair_op_netlist(),
            ComparatorParams(technology=toypdk).noise_netlist([0.0, 1e-3], 2, 1e-4, 4e-11, 1),
            ComparatorParams(technology=toypdk).delay_energy_netlist([0.01])]
    for net in nets:
        mos = _mos_lines(net)
        assert mos and all(ln.startswith("x") for ln in mos), net
        assert not re.search(r"\b(nch|pch)\b", net)
        assert ".include '" in net and "toy.spice" in net
        assert ".param mc_mm_switch=0" in net  # the PDK's mismatch switch, off in nominal netlists
    g = GainCellParams(technology=toypdk).read_surface_netlist()
    assert "xmw0 wbl wwl sn 0 toy_nfet W=0.12 L=0.12\n" in g
    assert "xmp0 bl sn rwl rwl toy_pfet W=0.6 L=0.3\n" in g
    c = ComparatorParams(technology=toypdk)
    assert c.input_gm_vector() == "@m.xm1.m0[gm]"


def test_builtin_netlists_have_no_x_instances():
    for net in (GainCellParams().read_surface_netlist(), ReramColumnParams(rows=2).cell_iv_netlist(),
                ComparatorParams().delay_energy_netlist([0.01])):
        mos = _mos_lines(net)
        assert mos and all(ln.startswith("m") for ln in mos)


def test_subcircuit_process_simulates_like_the_builtin_card(toypdk):
    """Real ngspice: the gain cell's read surface and the comparator's input-pair noise run
    through X instances give the built-in card's numbers."""
    s = GainCellSweep(n_store=7, n_in=3)
    a = run_local(gaincell.analyses(GainCellParams(), s, {"read_surface"}))["gaincell/read_surface"]
    b = run_local(gaincell.analyses(GainCellParams(technology=toypdk), s, {"read_surface"}))["gaincell/read_surface"]
    assert np.abs(a["current"]).max() > 1e-6
    np.testing.assert_allclose(b["current"], a["current"], rtol=1e-6, atol=1e-15)
    cs = comparator.ComparatorSweep(noise_reps=2, noise_dv=(-0.002, 0.002))
    na = run_local(comparator.analyses(ComparatorParams(), cs, {"noise"}))["comparator/noise"]
    nb = run_local(comparator.analyses(ComparatorParams(technology=toypdk), cs, {"noise"}))["comparator/noise"]
    assert float(nb["gm_in"]) == pytest.approx(float(na["gm_in"]), rel=1e-6)  # gm read inside the subcircuit
    rs = reram.ReramSweep(n_iv=5)
    ra = run_local(reram.analyses(ReramColumnParams(rows=2, levels=2), rs, {"cell_iv"}))["reram/cell_iv"]
    rb = run_local(reram.analyses(ReramColumnParams(rows=2, levels=2, technology=toypdk), rs,
                                  {"cell_iv"}))["reram/cell_iv"]
    np.testing.assert_allclose(rb["current"], ra["current"], rtol=1e-6, atol=1e-15)


def test_pdk_mismatch_hook_is_explicit_about_what_it_lacks(toypdk):
    p = toypdk.as_process()
    assert not p.mismatch.explicit_shifts and p.mismatch.header() == ".param mc_mm_switch=0\n"
    assert p.mismatch.header(7) == ".param mc_mm_switch=1\n.option seed=7\n"  # Monte Carlo netlists, seeded
    with pytest.raises(NotImplementedError, match="per-device threshold shift"):
        GainCellParams(technology=toypdk).read_mismatch_commands(1e-3, 1e-3)
    # the comparator's decision netlist carries per-device shifts: a PDK process must adapt it
    with pytest.raises(NotImplementedError, match="per-device threshold shift"):
        ComparatorParams(technology=toypdk).decision_netlist(np.zeros((2, 7)), "t")
    assert builtin_process().mismatch.explicit_shifts


def test_process_selection_and_errors(toypdk, tmp_path):
    d = Design.from_mapping({"gaincell": {"technology": {"process": "toypdk"}}})
    assert d.gaincell.technology.as_process().name == "toypdk"
    with pytest.raises(ParameterError, match="gaincell.technology.process.*registered process"):
        Design.from_mapping({"gaincell": {"technology": {"process": "nope"}}})
    with pytest.raises(ParameterError, match="corner.*toypdk"):
        Technology(process="toypdk", corner="ff")
    f = tmp_path / "m.lib"
    f.write_text(".model nch nmos level=54\n.model pch pmos level=54\n")
    with pytest.raises(ParameterError, match="process"):
        Technology(process="toypdk", model_file=str(f), corner="")
    # a role the process lacks: one line naming the role
    with pytest.raises(ParameterError, match="nmos_hvt"):
        toypdk.as_process().mos(Mosfet("mw0", "a", "b", "c", "0", "nmos_hvt", 1, 1))
    with pytest.raises(ValueError, match="role"):
        Process(name="bad", devices={"nfet": "x"})
    # a process whose model file went missing: refused before any simulation
    register_process("gone", Process(name="gone", instantiation=SUBCIRCUIT, devices={"nmos": "n"},
                                     includes=(str(tmp_path / "missing.spice"),)))
    try:
        with pytest.raises(AnalogAttnError, match="missing.spice"):
            Technology(process="gone", corner="tt")
    finally:
        PROCESSES.pop("gone", None)


def test_digest_and_name_follow_the_process_files(toypdk, tmp_path):
    first = GainCellParams(technology=toypdk).name
    assert first != GainCellParams().name
    lib = toypdk.path
    lib.write_text(lib.read_text() + "* changed\n")
    assert GainCellParams(technology=toypdk).name != first
