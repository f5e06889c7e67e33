"""Benchmark: surrogate evaluation speed against a plain a*b multiply over the same arrays (the
memory-bound floor), as issue #17's table rows measured in this run: each ratio is the median over
paired rounds of (model time / a*b time), the two timed back to back in each round.

Rows (floor / goal): gain-cell read surface <= 2.0x / 1.5x the a*b floor on 10^7 inputs; ReRAM
column model <= 4x / 2x the floor of its own 10^7 cell inputs (level * voltage).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _args import Parser
from _timing import paired_ratio


def main():
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", help="surrogate bundle (.h5); without it a small design is characterized "
                                              "and fitted in a temporary folder (minutes)")
    ap.add_argument("--rounds", type=int, default=7, help="paired rounds per ratio (median reported)")
    ap.add_argument("-n", type=int, default=10 ** 7, help="inputs per evaluation")
    a = ap.parse_args()
    ap.within("--rounds", a.rounds, 1, 1000)
    ap.within("-n", a.n, 1000, 10 ** 8, " inputs")
    from analogattn.errors import AnalogAttnError
    from analogattn.surrogates import _accel, bundle
    from analogattn.userio import check_input_file
    if a.bundle:
        try:  # a missing, unreadable or corrupted bundle: one line before any timing
            check_input_file(a.bundle, "bundle", "surrogate bundle")
            bundle.load(a.bundle)
        except AnalogAttnError as e:
            ap.error(str(e))
    with tempfile.TemporaryDirectory() as d:
        if a.bundle:
            path = Path(a.bundle)
        else:
            char, path = Path(d) / "c.h5", Path(d) / "s.h5"
            for args in (["characterize", "-o", char, "-q", "--only", "gaincell,reram"], ["fit", char, "-o", path]):
                subprocess.run([sys.executable, "-m", "analogattn.cli", *map(str, args)], check=True,
                               capture_output=True)
        b = bundle.load(path)
    n = a.n
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 0.9, n), rng.uniform(0.45, 0.9, n)
    print(f"compiled kernels (numba): {'yes' if _accel.AVAILABLE else 'no (NumPy path)'}; ratio = median over "
          f"{a.rounds} rounds of model time / a*b time measured back to back")
    rows = []
    for name in ("gaincell.read_surface", "gaincell.read_surface_table", "gaincell.read_surface_poly"):
        if name in b:
            r, t, tf = paired_ratio(lambda: b[name](x, y), lambda: x * y, a.rounds)
            print(f"{name:30s} [{b[name].kind:7s}] {t * 1e3:7.1f} ms ({n / t / 1e6:7.1f} M evals/s); a*b "
                  f"{tf * 1e3:6.1f} ms; {r:5.2f}x floor")
            if name == "gaincell.read_surface":
                rows.append(("gain-cell read surface vs a*b floor", r, 2.0, 1.5))
    if _accel.AVAILABLE and "gaincell.read_surface" in b:  # the same on one core
        keep, _accel.PARALLEL_MIN = _accel.PARALLEL_MIN, 1 << 62
        r, t, _ = paired_ratio(lambda: b["gaincell.read_surface"](x, y), lambda: x * y, a.rounds)
        _accel.PARALLEL_MIN = keep
        print(f"{'gaincell.read_surface, 1 core':30s} [{b['gaincell.read_surface'].kind:7s}] {t * 1e3:7.1f} ms "
              f"({n / t / 1e6:7.1f} M evals/s); {r:5.2f}x floor")
    if "reram.column" in b:
        col = b["reram.column"]
        rows_ = col.weights.size
        m = n // rows_
        lv = rng.integers(0, col.iv_current.shape[0], (m, rows_))
        v = rng.uniform(0, col.iv_v[-1], (m, rows_))
        r, t, tf = paired_ratio(lambda: col(lv, v), lambda: lv * v, a.rounds)
        print(f"reram.column ({rows_} rows x {m} columns = {n:.0e} cell inputs): {t * 1e3:7.1f} ms "
              f"({m / t / 1e6:6.2f} M columns/s, {n / t / 1e6:6.1f} M cells/s); a*b {tf * 1e3:6.1f} ms; {r:5.2f}x floor")
        rows.append(("ReRAM column model vs a*b floor", r, 4.0, 2.0))
    print("\nissue #17 table (this run; lower is better)")
    print(f"{'figure':40s} {'measured':>9s} {'floor':>6s} {'goal':>6s}  verdict")
    for name, v, fl, goal in rows:
        print(f"{name:40s} {v:8.2f}x {fl:5.1f}x {goal:5.1f}x  {'PASS' if v <= fl else 'MISS'}")


if __name__ == "__main__":
    main()
