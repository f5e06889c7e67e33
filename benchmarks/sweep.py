"""Sweep throughput and the Dask executor's overhead (issue #15).

1. Points per hour of a characterization-dominated sweep (gain-cell designs over c_store, each a
   new circuit variant on an empty task cache; tiny GGUF model, few scored tokens) on a
   LocalCluster of 1 and of 2 workers; the scaling is the ratio (target >= 1.7x on 2 cores).
2. One cold default characterization (every family, default grids, empty cache) through the
   recycled process pool and through a 2-worker LocalCluster's executor; overhead target <= 10%.

    .venv/bin/python benchmarks/sweep.py [--designs 4] [--skip-char]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SPEC = """
[sweep]
strategy = "grid"
include_default = false
[design.gaincell.sweep]
n_store = 25
n_in = 11
n_write = 16
mc_samples = 48
mc_per_task = 12
[axes]
"gaincell.c_store" = {values}
[evaluation]
model = "{d}/tiny.gguf"
text = "{d}/text.txt"
window = 32
max_scored = 64
[evaluation.kernel]
mismatch = true
"""


def sweep_rate(d: Path, workers: int, caps: list) -> float:
    from analogattn.explore import cluster, spec
    from analogattn.explore.sweep import run
    (d / f"s{workers}.toml").write_text(SPEC.format(values=caps, d=d))
    sp = spec.load(d / f"s{workers}.toml")
    backend = cluster.make(None, workers)
    try:
        t0 = time.perf_counter()
        rep = run(sp, d / f"out{workers}", backend, d / f"cache{workers}", progress=False)
        dt = time.perf_counter() - t0
    finally:
        backend.close()
    assert rep.counts["failed"] == 0, rep.counts
    return len(caps) / dt * 3600, dt


def char_overhead(d: Path):
    from analogattn.characterize.design import Design
    from analogattn.characterize.runner import characterize
    from analogattn.explore.cluster import DaskBackend
    analyses = Design().analyses({f: None for f in ("gaincell", "reram", "comparator")})
    t0 = time.perf_counter()
    characterize(analyses, d / "pool.h5", jobs=2, cache_dir=d / "cpool", progress=False)
    pool = time.perf_counter() - t0
    b = DaskBackend(None, 2)
    try:
        t0 = time.perf_counter()
        characterize(analyses, d / "dask.h5", jobs=2, cache_dir=d / "cdask", progress=False, executor=b.char)
        dask = time.perf_counter() - t0
    finally:
        b.close()
    return pool, dask


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--designs", type=int, default=4)
    ap.add_argument("--skip-char", action="store_true")
    a = ap.parse_args()
    from cli_cases import PROSE
    from tiny_models import write_tiny_gguf
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_tiny_gguf(d / "tiny.gguf")
        (d / "text.txt").write_text("\n".join(PROSE * 3 for _ in range(60)))
        caps = [float(f"{x:.3g}") for x in [5e-15 * 1.37 ** i for i in range(a.designs)]]
        r1, t1 = sweep_rate(d, 1, caps)
        r2, t2 = sweep_rate(d, 2, caps)
        print(f"sweep, {a.designs} characterization-dominated designs: 1 worker {r1:.0f} points/h ({t1:.1f} s), "
              f"2 workers {r2:.0f} points/h ({t2:.1f} s): scaling {r2 / r1:.2f}x (target >= 1.7x)")
        if not a.skip_char:
            pool, dask = char_overhead(d)
            print(f"cold default characterization: process pool {pool:.1f} s, Dask executor {dask:.1f} s: "
                  f"overhead {100 * (dask / pool - 1):+.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
