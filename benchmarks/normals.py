"""Speed of the compiled standard normals (``analogattn.attention._fused.normals``) against an
older copy of that module (e.g. a git worktree of an earlier commit) and NumPy's own draw: paired
rounds (old and new timed back to back in each round, in this thread's CPU time, so that time the
thread spends descheduled on a busy machine does not count), the median of the ratios and each
one's median ns per deviate, for float32 and float64 draws of several shapes (4e6 and the
gain-cell kernel's read-noise shapes).

Usage:
    python benchmarks/normals.py --old OLD_FUSED_DIR [--rounds 7]
where OLD_FUSED_DIR holds the old normals.py and common.py, e.g.
    git worktree add /tmp/base HEAD~1
    python benchmarks/normals.py --old /tmp/base/src/analogattn/attention/_fused
"""
from __future__ import annotations

import importlib
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
from _args import Parser


def _load_old(fused_dir):
    """The old normals module, imported from ``fused_dir`` as ``_old_fused.normals`` (a package
    made by hand, so that the directory's __init__ and the rest of the old package are not run)."""
    pkg = types.ModuleType("_old_fused")
    pkg.__path__ = [fused_dir]
    sys.modules["_old_fused"] = pkg
    return importlib.import_module("_old_fused.normals")


def _paired(fn, baseline, rounds):
    """Median of time(fn) / time(baseline) over rounds (thread CPU time, back to back, which one
    runs first alternating) and the median time of each."""
    fn(), baseline()  # warm
    tf, tb = [], []
    for r in range(rounds):
        for f, acc in ((fn, tf), (baseline, tb)) if r % 2 else ((baseline, tb), (fn, tf)):
            t = time.thread_time()
            f()
            acc.append(time.thread_time() - t)
    return statistics.median(a / b for a, b in zip(tf, tb)), statistics.median(tf), statistics.median(tb)


def main():
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="directory of the old normals.py and common.py")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--shapes", default="4000000;768,1024;16,768,64;1000")
    a = ap.parse_args()
    ap.within("--rounds", a.rounds, 1, 1000)
    if not all((Path(a.old) / f).is_file() for f in ("normals.py", "common.py")):
        ap.error(f"--old {a.old}: not a directory holding normals.py and common.py (an older _fused package)")
    try:
        shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";")]
    except ValueError:
        shapes = []
    if not shapes or any(not s or min(s) < 1 or int(np.prod(s)) > 10 ** 8 for s in shapes):
        ap.error(f"--shapes {a.shapes!r}: shapes of positive integers, dims by ',', shapes by ';' "
                 "(e.g. '4000000;768,1024'), each at most 10^8 elements")
    from analogattn.attention._fused import normals as new
    old = _load_old(a.old)
    print(f"{'dtype':8s}{'shape':>16s}{'old ns':>9s}{'new ns':>9s}{'numpy ns':>10s}{'new/old':>9s}{'old/new':>9s}")
    for name in ("f32", "f64"):
        f_new, f_old = getattr(new, "standard_normal_" + name), getattr(old, "standard_normal_" + name)
        dt = np.float32 if name == "f32" else np.float64
        for shape in shapes:
            size = int(np.prod(shape))
            reps = max(1, 400_000 // size)  # small draws repeated: a measurable time
            r_new, r_old, r_np = (np.random.default_rng(1) for _ in range(3))

            def run_new():
                for _ in range(reps):
                    f_new(r_new, shape)

            def run_old():
                for _ in range(reps):
                    f_old(r_old, shape)

            def run_np():
                for _ in range(reps):
                    r_np.standard_normal(shape, dtype=dt)

            ratio, t_new, t_old = _paired(run_new, run_old, a.rounds)
            _, _, t_np = _paired(run_new, run_np, 3)
            per = 1e9 / (reps * size)
            print(f"{name:8s}{str(shape):>16s}{t_old * per:9.2f}{t_new * per:9.2f}{t_np * per:10.2f}"
                  f"{ratio:9.3f}{1 / ratio:9.2f}", flush=True)


if __name__ == "__main__":
    main()
