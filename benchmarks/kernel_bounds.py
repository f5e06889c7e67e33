"""Benchmark: what bounds the circuit kernels' prefill speed against the ideal kernel's (issue #17's
floors: pruning >= 0.85x, gain cell >= 0.7x), every figure measured in this run.

    .venv/bin/python benchmarks/kernel_bounds.py [--surrogates FILE] [--text FILE] [--window N] [--rounds N]

A kernel's prefill cannot take less than the forward pass outside attention (the same for every
kernel) plus the work its own arithmetic cannot avoid. Here that work is:
- its matrix products at the shapes it issues them (captured from a real call of each kernel: the
  pruning kernel's chunks, the gain cell's score strips and value tiles, with their decay terms);
- for the gain cell, the read-noise deviates it draws (NumPy's stream bit for bit: the compiled
  generator the kernel uses, at the kernel's own shapes).
Both are timed on one thread with random operands (the fastest of 3 in each round), then halved
(the two lanes assumed to split them perfectly). The bound on a kernel's ratio is

    (rest + ideal attention) / (rest + unavoidable work / 2)

with ``rest`` and ``ideal attention`` split from a real 2-window ideal prefill (the kernel's calls
timed inside it), all in the same round. Every compiled pass, every hand-off and all of Python's
time count as free, so the bound is generous: a kernel cannot beat it without changing its
arithmetic (fewer products, fewer or other random draws), which changes its numbers. Each round
also times the real kernels' prefills; the median ratios are printed beside the bounds.
"""
from __future__ import annotations

import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from analogattn.attention.base import blas_single_thread  # noqa: E402
from analogattn.attention._fused.normals import standard_normal_f32, standard_normal_f64  # noqa: E402
from analogattn.attention.gaincell import kernel as gaincell_kernel  # noqa: E402
from analogattn.attention.sprint import SprintAttention  # noqa: E402
from analogattn.errors import AnalogAttnError  # noqa: E402
from analogattn.evaluate.perplexity import perplexity  # noqa: E402
from _args import Parser  # noqa: E402
from attention import FLOORS, check_protocol, load_protocol, speed_kernels  # noqa: E402  (benchmarks/attention.py)


def timed_calls(kernel):
    """The kernel with its __call__ timed: returns (kernel, [seconds inside its calls], its own class
    to put back)."""
    acc = [0.0]
    base = type(kernel)
    orig = base.__call__

    class Timed(base):
        def __call__(self, *a, **kw):
            t = time.perf_counter()
            try:
                return orig(self, *a, **kw)
            finally:
                acc[0] += time.perf_counter() - t
    kernel.__class__ = Timed
    return kernel, acc, base


def _first_layer_call(kernel, run, patches):
    """Run ``run(kernel)`` with ``patches`` [(owner, name, wrapper maker)] in place, clearing and
    keeping what they record around the kernel's first call on layer 0; returns that call's
    records (a list per patch). Everything is put back afterwards. A kernel reuses the previous
    call's layout (the pruning kernel's block masks, the gain cell's blocks and runs) in a call
    with the same positions: it is forgotten before each call, so the recorded call makes its own
    whatever ran before it."""
    logs = [[] for _ in patches]
    first = []
    cls = type(kernel)
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    orig_call = cls.__call__

    def call(self, q, k, v, positions, mask, cache, layer):
        for log in logs:
            log.clear()
        self.forget_layout()
        r = orig_call(self, q, k, v, positions, mask, cache, layer)
        if layer == 0 and not first:
            first.append([list(log) for log in logs])
        return r
    try:
        for (owner, name, make), log, (_, _, orig) in zip(patches, logs, saved):
            setattr(owner, name, make(orig, log))
        cls.__call__ = call
        run(kernel)
    finally:
        cls.__call__ = orig_call
        for owner, name, orig in saved:
            setattr(owner, name, orig)
    if not first:
        raise RuntimeError("the kernel was never called on layer 0")
    return first[0]


def sprint_plan(kernel, run, n_heads, n_kv, d):
    """The pruning kernel's products in its first layer call of ``run(kernel)``: a list of
    (M, K, N, transposed right operand) as _task issues them per (block, KV head, chunk)."""
    g = n_heads // n_kv

    def chunks(orig, log):
        def wrapper(self, *a, **kw):
            out = orig(self, *a, **kw)
            log.append(out["chunks"])
            return out
        return wrapper
    blocks, = _first_layer_call(kernel, run, [(SprintAttention, "_block_arrays", chunks)])
    prods = []
    for block in blocks:
        for _ in range(n_kv):
            for t0, t1, lk, hk in block:
                M, L = g * (t1 - t0), hk - lk
                prods += [(M, d, L, True), (2 * M, d, L, True), (M, L, d, False)]  # e, both (column currents), o
    return prods


def gaincell_plan(kernel, run, n_heads, n_kv, d):
    """The gain cell's products and normal deviates in its first layer call of ``run(kernel)``:
    (products [(M, K, N, transposed)], draws [(shape, dtype)]), from the blocks' visible-key runs
    (gaincell.kernel._runs: score strips, value tiles) and its noise plan, as attend makes them."""
    g = n_heads // n_kv
    rows = kernel.cfg.array.rows
    if rows < d:  # pragma: no cover - SmolLM2's heads (64) fit one array column (rows 64)
        raise AnalogAttnError(f"rows {rows} < head dim {d}: this bound assumes one head-dim tile")

    def runs(orig, log):
        def wrapper(al, strip, rows_, g_, K):
            out = orig(al, strip, rows_, g_, K)
            log.append((K, out[2], out[3]))
            return out
        return wrapper

    def plan(orig, log):
        def wrapper(self, *a, **kw):
            items = list(orig(self, *a, **kw))
            log.extend(items)
            return iter(items)
        return wrapper
    blocks, items = _first_layer_call(kernel, run, [(gaincell_kernel, "_runs", runs),
                                                    (gaincell_kernel.GainCellAttention, "_noise_plan", plan)])
    prods = []
    for _ in range(n_kv):
        for K, strips, tiles in blocks:
            n = K // d  # the decay terms (K = n d with one head-dim tile)
            for t0, t1, ks, ke in strips:
                if ke > ks:
                    prods.append((g * (t1 - t0), K, ke - ks, True))  # the score strip, n decay terms in K
            for t0, t1 in tiles:
                if t1 > t0:
                    prods.append((g * (t1 - t0), rows, n * d, False))  # a value tile's charge terms
    return prods, [(shape, dtype) for _, shape, dtype in items]


class Work:
    """Random operands for a list of products (shared buffers, one per shape) and a timer of them
    on this thread."""

    def __init__(self, prods, draws=(), seed=0):
        rng = np.random.default_rng(seed)
        self.prods = []
        cache = {}
        for M, K, N, tr in prods:
            key = (M, K, N, tr)
            if key not in cache:
                a = rng.standard_normal((M, K)).astype(np.float32)
                b = rng.standard_normal((N, K) if tr else (K, N)).astype(np.float32)
                cache[key] = (a, b.T if tr else b, np.empty((M, N), np.float32))
            self.prods.append(cache[key])
        self.flops = sum(2 * M * K * N for M, K, N, _ in prods)
        self.draws = [(np.empty(s, dt), dt) for s, dt in draws]
        self.n_draws = sum(x.size for x, _ in self.draws)
        self.rng = np.random.default_rng(seed + 1)

    def products(self):
        t = time.perf_counter()
        for a, b, o in self.prods:
            np.matmul(a, b, out=o)
        return time.perf_counter() - t

    def normals(self):
        t = time.perf_counter()
        for x, dt in self.draws:
            (standard_normal_f32 if dt == np.float32 else standard_normal_f64)(self.rng, x.shape, x)
        return time.perf_counter() - t


def main():
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--surrogates", default=str(ROOT / "analogattn-demo" / "surrogates.h5"))
    ap.add_argument("--text", default=str(ROOT.parent / "shared" / "data" / "wikitext2_valid.txt"))
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3, help="paired rounds (median reported)")
    a = ap.parse_args()
    ap.within("--rounds", a.rounds, 1, 100)
    W = a.window
    try:  # every input checked before any work; nothing is written
        check_protocol(a.surrogates, a.text, W)
        model, cal, score, b = load_protocol(a.surrogates, a.text, W)
    except AnalogAttnError as e:
        print(f"kernel_bounds.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    c = model.config
    makers = speed_kernels(model, cal, b, W)
    gk = makers["gaincell"]()

    def one_window(k):
        perplexity(model, score, W, kernel=k, max_scored=W, progress=False)
    dims = (c.n_heads, c.n_kv_heads, c.head_dim)
    sprods = sprint_plan(makers["sprint"](), one_window, *dims)
    gprods, gdraws = gaincell_plan(gk, one_window, *dims)
    work = {"sprint": Work(sprods), "gaincell": Work(gprods, gdraws)}
    calls = c.n_layers * 2  # layer calls in a 2-window prefill (every layer's shapes are the first's)
    print(f"SmolLM2, window {W}, 2-window prefills; {a.rounds} paired rounds, medians")
    for name, wk in work.items():
        print(f"  {name}: a layer call issues {len(wk.prods)} products, {wk.flops / 1e9:.2f} GFLOP"
              + (f", draws {wk.n_draws / 1e6:.1f} M read-noise deviates" if wk.n_draws else ""))
    for make in makers.values():  # warm: compilation, first-touch pages
        perplexity(model, score, W, kernel=make(), max_scored=W, progress=False)
    rows = collections.defaultdict(list)
    for _ in range(a.rounds):
        tot = {}
        for name, make in makers.items():
            k, acc, base = timed_calls(make())
            t = time.perf_counter()
            perplexity(model, score, W, kernel=k, max_scored=2 * W, progress=False)
            tot[name] = time.perf_counter() - t
            k.__class__ = base
            if name == "ideal":
                rows["ideal_attn"].append(acc[0])
                rows["rest"].append(tot[name] - acc[0])
            else:
                rows[name].append(tot["ideal"] / tot[name])
        rest, ai = rows["rest"][-1], rows["ideal_attn"][-1]
        with blas_single_thread():
            for name, wk in work.items():
                p = min(wk.products() for _ in range(3)) * calls  # the fastest of 3: a bound's generous side
                nrm = min(wk.normals() for _ in range(3)) * calls
                rows[name + "_p"].append(p)
                if wk.n_draws:
                    rows[name + "_n"].append(nrm)
                rows[name + "_bound"].append((rest + ai) / (rest + (p + nrm) / 2))
                rows[name + "_pbound"].append((rest + ai) / (rest + p / 2))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nideal prefill: rest of the forward pass {med['rest']:.2f} s, ideal attention {med['ideal_attn']:.2f} s "
          "(wall, two lanes)")
    print(f"\n{'kernel':9s} {'products':>9s} {'normals':>8s} {'bound (products)':>17s} {'bound (+normals)':>17s} "
          f"{'measured':>9s} {'floor':>6s}  verdict")
    for name, label in (("sprint", "pruning"), ("gaincell", "gain cell")):
        wk = work[name]
        nrm = f"{med[name + '_n']:.2f} s" if name + "_n" in med else "-"
        bound = med[name + "_bound"]
        fl = FLOORS[name][0]
        print(f"{label:9s} {med[name + '_p']:7.2f} s {nrm:>8s} {med[name + '_pbound']:16.2f}x {bound:16.2f}x "
              f"{med[name]:8.2f}x {fl:5.2f}x  floor {'reachable' if bound >= fl else 'NOT reachable'} "
              f"({wk.flops * calls / med[name + '_p'] / 1e9:.0f} GFLOP/s one thread)")
    print("(products and normals: one thread's seconds over the 2 windows, halved in the bounds; a bound "
          "counts every compiled pass, hand-off and Python as free)")


if __name__ == "__main__":
    main()
