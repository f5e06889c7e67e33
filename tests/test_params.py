import dataclasses

import pytest

from analogattn.characterize.design import Design
from analogattn.circuits.gaincell import GainCellParams, GainCellSweep
from analogattn.circuits.technology import Technology
from analogattn.errors import DesignFileError, ParameterError

from conftest import run_cli


def test_bad_value_names_field_and_range():
    with pytest.raises(ParameterError) as e:
        GainCellParams(c_store=-1.0)
    msg = str(e.value)
    assert "c_store" in msg and "1e-17 to 1e-11 F" in msg and "\n" not in msg


def test_cross_field_rule():
    with pytest.raises(ParameterError, match="v_in"):
        GainCellParams(v_in=0.3)  # below the bit-line bias


def test_wrong_type_and_int_fields():
    with pytest.raises(ParameterError, match="n_store"):
        GainCellSweep(n_store=2.5)
    with pytest.raises(ParameterError, match="vdd"):
        GainCellParams(vdd="high")


def test_frozen_and_name_derives_from_parameters():
    a, b = GainCellParams(), GainCellParams()
    assert a.name == b.name and a.name.startswith("gaincell_")
    assert GainCellParams(c_store=3e-15).name != a.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.vdd = 1.0


def test_name_changes_with_model_file_content(tmp_path):
    lib = Technology().path.read_text()
    f = tmp_path / "my.lib"
    f.write_text(lib.replace("{0.423+dvthn}", "0.45"))
    t = Technology(model_file=str(f), corner="")
    p = GainCellParams(technology=t)
    first = p.name
    assert first != GainCellParams().name
    assert f".include '{f}'" in p.read_surface_netlist()
    f.write_text(lib.replace("{0.423+dvthn}", "0.46"))
    assert GainCellParams(technology=Technology(model_file=str(f), corner="")).name != first


def test_netlist_is_deterministic():
    assert GainCellParams().read_surface_netlist() == GainCellParams().read_surface_netlist()


def test_design_file_unknown_and_bad(tmp_path):
    with pytest.raises(DesignFileError, match="gaincell.bogus"):
        Design.from_mapping({"gaincell": {"bogus": 1}})
    with pytest.raises(DesignFileError, match="reram2"):
        Design.from_mapping({"reram2": {}})
    with pytest.raises(ParameterError, match="gaincell.sweep.n_in"):
        Design.from_mapping({"gaincell": {"sweep": {"n_in": 0}}})
    with pytest.raises(ParameterError, match="gaincell.technology.corner"):
        Design.from_mapping({"gaincell": {"technology": {"corner": "zz"}}})
    d = Design.from_mapping({"gaincell": {"c_store": 4e-15, "sweep": {"mc_samples": 3}}})
    assert d.gaincell.c_store == 4e-15 and d.gaincell_sweep.mc_samples == 3


@pytest.mark.parametrize("toml,needle", [
    ("[gaincell]\nc_store = -1\n", "gaincell.c_store"),
    ("[gaincell]\nnope = 1\n", "gaincell.nope"),
    ("[gaincell\n", "not valid TOML"),
    ("[gaincell.sweep]\nretention_temps = [27, 400]\n", "retention_temps[1]"),
])
def test_cli_bad_design_exit_2_one_line_and_file_kept(tmp_path, toml, needle):
    out = tmp_path / "c.h5"
    out.write_bytes(b"previous result")
    f = tmp_path / "d.toml"
    f.write_text(toml)
    r = run_cli("characterize", "--design", f, "-o", out, "--cache-dir", tmp_path / "cache")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert out.read_bytes() == b"previous result"


def test_cli_bad_flags_exit_2(tmp_path):
    assert run_cli("characterize", "--jobs", "0", "-o", tmp_path / "x.h5").returncode == 2
    r = run_cli("characterize", "--only", "bogus", "-o", tmp_path / "x.h5")
    assert r.returncode == 2 and "bogus" in r.stderr
