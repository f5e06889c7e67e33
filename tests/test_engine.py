"""The stderr handler: ngspice 42+'s harmless lines must not fail a simulation."""
import pytest

from analogattn.characterize.engine import SimulationFailed, Simulator, classify_stderr


@pytest.mark.parametrize("line", [
    "Using SPARSE 1.3 as Direct Linear Solver",
    "Using KLU as Direct Linear Solver",
    "Note: can't find init file.",
    "Note: Compatibility modes selected: hs a",
    "Warning: singular matrix:  check node x",
    "Trying gmin =   1.0000E-10 Note: One successful gmin step",
    "Supplies reduced to   5.0000% Note: One successful source step",
    "Note: Dynamic gmin stepping completed",
    "",
])
def test_benign_lines(line):
    assert classify_stderr(line) == "benign"


@pytest.mark.parametrize("line", [
    "doAnalyses: TRAN:  Timestep too small; time = 1e-9, timestep = 1e-22",
    "tran simulation(s) aborted",
    "Error: no convergence in DC sweep",
])
def test_failure_lines(line):
    assert classify_stderr(line) == "failure"


def test_other_lines_are_errors():
    assert classify_stderr("Error on line 3 : m1 a b c d nch w=1u") == "error"
    assert classify_stderr("Unknown model type zz - ignored") == "error"
    assert classify_stderr("Could not find a valid modelname") == "error"


def test_handler_inside_pyspice_callback():
    """Feed the lines through PySpice's real callback path and run a simulation after."""
    from PySpice.Spice.NgSpice.Shared import ffi
    sim = Simulator.get()
    sim.load("* t\nv1 a 0 1\nr1 a 0 1k\n.end\n")
    sim.ng.clear_output()
    sim.ng._failed = False
    for text in (b"stderr Using SPARSE 1.3 as Direct Linear Solver", b"stderr Note: something"):
        sim.ng._send_char(ffi.new("char[]", text), 0, sim.ng._self_c)
    assert not sim.ng._error_in_stderr and not sim.ng._failed
    sim.command("op")  # does not raise
    assert abs(sim.vectors(["v1#branch"])["v1#branch"][0] + 1e-3) < 1e-9
    sim.ng._send_char(ffi.new("char[]", b"stderr Error: unknown thing"), 0, sim.ng._self_c)
    assert sim.ng._error_in_stderr


def test_real_non_convergence_raises_simulation_failed():
    from analogattn.circuits.gaincell import GainCellParams
    sim = Simulator.get()
    sim.load(GainCellParams().write_read_netlist([0.2]))
    for o in ("reltol=1e-12", "abstol=1e-22", "vntol=1e-15", "itl4=1"):
        sim.command("option " + o)
    with pytest.raises(SimulationFailed):
        sim.command("tran 1e-11 3e-8 0 5e-11")
