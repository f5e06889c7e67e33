"""Benchmark: surrogate evaluation speed on 10^7 inputs against a plain a*b multiply over the
same arrays (the memory-bound floor), measured in this run. Target: the gain-cell surface within
4x of the floor.

    .venv/bin/python benchmarks/surrogates.py [bundle.h5]

Without a bundle argument it characterizes and fits a small design in a temporary folder.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _timing import best_of, paired_ratio




def main():
    from analogattn.surrogates import bundle
    with tempfile.TemporaryDirectory() as d:
        if len(sys.argv) > 1:
            path = Path(sys.argv[1])
        else:
            char, path = Path(d) / "c.h5", Path(d) / "s.h5"
            for args in (["characterize", "-o", char, "-q", "--only", "gaincell,reram"], ["fit", char, "-o", path]):
                subprocess.run([sys.executable, "-m", "analogattn.cli", *map(str, args)], check=True,
                               capture_output=True)
        b = bundle.load(path)
    n = 10 ** 7
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 0.9, n), rng.uniform(0.45, 0.9, n)
    floor = best_of(lambda: x * y)
    print(f"floor a*b on 1e7 float64: {floor * 1e3:7.1f} ms ({n / floor / 1e6:7.1f} M/s)")
    from analogattn.surrogates import _accel
    print(f"compiled kernels (numba): {'yes' if _accel.AVAILABLE else 'no (NumPy path)'}; ratio = median over "
          "7 rounds of model time / a*b time measured back to back")
    for name in ("gaincell.read_surface", "gaincell.read_surface_table", "gaincell.read_surface_poly"):
        if name in b:
            r, t, _ = paired_ratio(lambda: b[name](x, y), lambda: x * y)
            tgt = (" (target <= 4x: " + ("PASS" if r <= 4 else "MISS") + ")") if name == "gaincell.read_surface" else ""
            print(f"{name:30s} [{b[name].kind:7s}] {t * 1e3:7.1f} ms ({n / t / 1e6:7.1f} M evals/s) "
                  f"= {r:5.2f}x floor{tgt}")
    if _accel.AVAILABLE:  # the same on one core
        keep, _accel.PARALLEL_MIN = _accel.PARALLEL_MIN, 1 << 62
        r, t, _ = paired_ratio(lambda: b["gaincell.read_surface"](x, y), lambda: x * y)
        _accel.PARALLEL_MIN = keep
        print(f"{'gaincell.read_surface, 1 core':30s} [{b['gaincell.read_surface'].kind:7s}] {t * 1e3:7.1f} ms "
              f"({n / t / 1e6:7.1f} M evals/s) = {r:5.2f}x floor")
    if "reram.column" in b:
        col = b["reram.column"]
        rows = col.weights.size
        m = n // rows
        lv = rng.integers(0, col.iv_current.shape[0], (m, rows))
        v = rng.uniform(0, col.iv_v[-1], (m, rows))
        t = best_of(lambda: col(lv, v))
        fl = best_of(lambda: lv * v)
        print(f"reram.column ({rows} rows x {m} columns = 1e7 cell inputs): {t * 1e3:7.1f} ms "
              f"({m / t / 1e6:6.2f} M columns/s, {n / t / 1e6:6.1f} M cells/s) = {t / fl:5.2f}x the a*b floor")


if __name__ == "__main__":
    main()
