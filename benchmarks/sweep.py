"""Sweep throughput and the Dask executor's overhead (issue #15), as ratios measured in one run.

1. Points per hour of a characterization-dominated sweep: gain-cell designs over c_store, each a
   new circuit variant (default gain-cell grids, 18 ngspice tasks) characterized on an empty task
   cache (tiny GGUF model, 64 scored tokens: the evaluation takes well under a second), on a LocalCluster of 1 worker and of 2 workers.
   Both clusters are started (and warmed with one untimed design) before timing; each round runs
   the same designs on both, back to back, in alternating order, each on a fresh cache and output
   folder; the scaling is the median over rounds of rate(2 workers) / rate(1 worker). Target
   >= 1.7x on 2 cores.
2. One cold default characterization (every family, default grids, empty cache) through the
   recycled process pool (jobs=2) and through a 2-worker LocalCluster's executor (started before
   timing, as in a sweep); each round times both back to back in alternating order; the overhead
   is the median over rounds of time(Dask) / time(pool) - 1. Target <= 10%.

The defaults are sized for ~10-12 minutes on an idle 2-core machine, estimated from smoke runs on
the shared machine at load ~12 (a design: 34 s on 1 worker, 26 s per design on 2; a cold all-family
default characterization ~240 s, README), halved for an idle machine; the cold characterizations
dominate. Numbers measured on a loaded machine are not the machine's (the load average is printed
at start and end).

    .venv/bin/python benchmarks/sweep.py [--designs 3] [--rounds 2] [--char-rounds 2]
    .venv/bin/python benchmarks/sweep.py --designs 2 --rounds 1 --char-rounds 1 --families gaincell  # smoke
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _args import Parser  # noqa: E402

SPEC = """
[sweep]
strategy = "grid"
include_default = false
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
FAMILIES = ("gaincell", "reram", "comparator")


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sweep_once(d: Path, backend, caps: list, tag: str) -> float:
    """Wall time of one sweep of ``caps`` on ``backend``, fresh output folder and task cache."""
    from analogattn.explore import spec
    from analogattn.explore.sweep import run
    (d / f"{tag}.toml").write_text(SPEC.format(values=caps, d=d))
    sp = spec.load(d / f"{tag}.toml")
    t0 = time.perf_counter()
    rep = run(sp, d / f"out-{tag}", backend, d / f"cache-{tag}", progress=False, log=lambda *_: None)
    dt = time.perf_counter() - t0
    if rep.counts["failed"] or rep.counts["characterized"] != len(caps):
        raise SystemExit(f"benchmark sweep {tag}: {rep.line()}")
    return dt


def sweep_scaling(d: Path, designs: int, rounds: int, log):
    from analogattn.explore import cluster
    b1, b2 = cluster.make(None, 1), cluster.make(None, 2)
    try:
        for b, w in ((b1, 1), (b2, 2)):  # warm: imports, model load on each worker
            _sweep_once(d, b, [3.3e-15], f"warm{w}")
        ratios, t1s, t2s = [], [], []
        for r in range(rounds):
            # new capacitances every round: every design a new circuit variant, caches empty anyway
            caps = [float(f"{5e-15 * 1.21 ** (i + designs * r):.4g}") for i in range(designs)]
            order = [(b1, 1), (b2, 2)] if r % 2 == 0 else [(b2, 2), (b1, 1)]
            t = {}
            for b, w in order:
                t[w] = _sweep_once(d, b, caps, f"r{r}w{w}")
            t1s.append(t[1])
            t2s.append(t[2])
            ratios.append(t[1] / t[2])
            log(f"  round {r + 1}/{rounds}: 1 worker {t[1]:.1f} s, 2 workers {t[2]:.1f} s ({designs} designs): "
                f"{t[1] / t[2]:.2f}x")
    finally:
        b1.close()
        b2.close()
    return statistics.median(ratios), statistics.median(t1s), statistics.median(t2s)


def char_overhead(d: Path, rounds: int, families, log):
    from analogattn.characterize.design import Design
    from analogattn.characterize.runner import characterize
    from analogattn.explore import cluster
    analyses = Design().analyses({f: None for f in families})
    b = cluster.make(None, 2)
    ratios, tp, td = [], [], []
    try:
        def pool(tag):
            t0 = time.perf_counter()
            s = characterize(analyses, d / f"pool{tag}.h5", jobs=2, cache_dir=d / f"cpool{tag}", progress=False)
            assert not s.errors and s.cached == 0, (s.errors[:1], s.cached)
            return time.perf_counter() - t0

        def dask(tag):
            t0 = time.perf_counter()
            s = characterize(analyses, d / f"dask{tag}.h5", jobs=2, cache_dir=d / f"cdask{tag}", progress=False,
                             executor=b.char)
            assert not s.errors and s.cached == 0, (s.errors[:1], s.cached)
            return time.perf_counter() - t0

        for r in range(rounds):
            if r % 2 == 0:
                p, k = pool(r), dask(r)
            else:
                k, p = dask(r), pool(r)
            tp.append(p)
            td.append(k)
            ratios.append(k / p)
            log(f"  round {r + 1}/{rounds}: process pool {p:.1f} s, Dask executor {k:.1f} s: {100 * (k / p - 1):+.1f}%")
    finally:
        b.close()
    return statistics.median(ratios) - 1, statistics.median(tp), statistics.median(td)


def main(argv=None):
    ap = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--designs", type=int, default=3, help="designs per timed sweep (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="paired 1-/2-worker sweep rounds (default 2)")
    ap.add_argument("--char-rounds", type=int, default=2,
                    help="paired pool/Dask cold characterization rounds (default 2; 0 skips the comparison)")
    ap.add_argument("--families", default=",".join(FAMILIES),
                    help="families of the cold characterization (default: all, the default design)")
    a = ap.parse_args(argv)
    for name, lo, hi in (("designs", 1, 100), ("rounds", 1, 50), ("char_rounds", 0, 50)):
        v = getattr(a, name)
        if not lo <= v <= hi:
            ap.error(f"--{name.replace('_', '-')} {v}: allowed {lo} to {hi}")
    fams = tuple(f for f in a.families.split(",") if f)
    if not fams or set(fams) - set(FAMILIES):
        ap.error(f"--families {a.families!r}: a comma-separated subset of {', '.join(FAMILIES)}")
    from analogattn.explore import need
    need("pandas", "pyarrow", "dask", "distributed")
    from cli_cases import PROSE
    from tiny_models import write_tiny_gguf

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    log(f"benchmarks/sweep.py on {os.cpu_count()} cores, {_load()}")
    with tempfile.TemporaryDirectory(prefix="analogattn-bench-sweep-") as tmp:
        d = Path(tmp)
        write_tiny_gguf(d / "tiny.gguf")
        (d / "text.txt").write_text("\n".join(PROSE * 3 for _ in range(60)))
        log(f"1. sweep points/hour, {a.designs} characterization-dominated designs, {a.rounds} paired round(s):")
        s, t1, t2 = sweep_scaling(d, a.designs, a.rounds, log)
        log(f"sweep: 1 worker {a.designs / t1 * 3600:.0f} points/h, 2 workers {a.designs / t2 * 3600:.0f} points/h "
            f"(median times); scaling {s:.2f}x, median of {a.rounds} paired round(s) (target >= 1.7x)")
        if a.char_rounds:
            log(f"2. cold characterization ({', '.join(fams)}; default design and grids), "
                f"{a.char_rounds} paired round(s):")
            o, tp, td = char_overhead(d, a.char_rounds, fams, log)
            log(f"cold characterization: process pool {tp:.1f} s, Dask executor {td:.1f} s (median times); "
                f"Dask overhead {100 * o:+.1f}%, median of {a.char_rounds} paired round(s) (target <= 10%)")
    log(f"total {time.perf_counter() - t_start:.0f} s; {_load()}")


if __name__ == "__main__":
    main()
