"""The circuit kernels' compiled per-element passes, each called whole on window-1024 shapes,
timed against a streaming copy of its main operand in the same round (median of paired rounds).

    .venv/bin/python benchmarks/passes.py [--rounds N]

Why: a helper loop that LLVM vectorises when compiled alone can run scalar once inlined into a
larger pass (round 14: the pruning kernel's kept-row maximum, a masked select, was turned into
branches inside ``decide_chunk`` and cost 1.3 ns a key there against 0.18 alone). So every pass
is timed as the kernel calls it, on inputs of the kernel's shapes: the last causal block of a
window-1024 prefill (3 heads x 256 queries x 1024 keys; the pruning kernel's chunk of 64 queries
over 1024 keys). Prints ns per element and the ratio to copying the pass's main input once
(``np.copyto`` of the same bytes: what one streaming pass over it costs here); a pass several
times its usual ratio has lost its vector loop (ns: the best of the rounds; ratio: their median). Numbers on this machine (round 14, quiet):
``tile_pulses_t`` ~1.0 ns an element, ``score_strip`` ~0.6, ``softmax_block`` ~0.8,
``interp_terms`` ~1.0, ``decide_chunk`` ~1.8.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from analogattn.attention._fused import gaincell as G  # noqa: E402
from analogattn.attention._fused import sprint as SP  # noqa: E402
from _args import Parser  # noqa: E402
from _timing import paired_ratio  # noqa: E402


def gaincell_cases(rng):
    g, tb, S, rows = 3, 256, 1024, 64
    c0 = S - tb  # the block's first query sees keys 0 .. c0
    last = (c0 + np.arange(tb) + 1).astype(np.int64)
    first = np.zeros(tb, np.int64)
    bias = np.where(np.arange(S)[None, :] < last[:, None], 0, -np.inf).astype(np.float32)
    n_vis = int(last.sum()) * g
    p = rng.random((g, tb, S), dtype=np.float32) ** 8
    ntl = S // rows
    pq = np.empty((ntl, g * tb, rows), np.float32)
    m = np.empty((g * tb, ntl), np.float32)
    ps = np.empty((g * tb, ntl), np.float32)
    inv_sat = np.ones(g, np.float32)
    yield "gaincell.tile_pulses_t (tile scale, 32 levels)", n_vis, p, \
        lambda: G.tile_pulses_t(p, bias, 2, inv_sat, 32, rows, first, last, pq, m, ps)
    z0 = rng.standard_normal((g, tb, S), dtype=np.float32)
    z = z0.copy()
    inv_r = rng.uniform(1, 1.1, tb).astype(np.float32)
    inv_k = rng.uniform(0.9, 1.1, S).astype(np.float32)
    lim = np.full(g, 3.0, np.float32)
    yield "gaincell.softmax_block (ADC, decay undone)", z.size, z, \
        lambda: G.softmax_block(z, lim, 16, inv_r, inv_k, True, bias)
    out = np.zeros((g, tb, S), np.float32)
    full = np.full(g, 2.0, np.float32)
    scale = rng.random((g, tb), dtype=np.float32)
    hmax = np.zeros(g, np.float32)
    strips = [(t0, c0 + t0 + 32) for t0 in range(0, tb, 32)]
    xs = [rng.standard_normal((32 * g, ke), dtype=np.float32) for _, ke in strips]
    n_strip = sum(x.size for x in xs)

    def strips_():
        for (t0, _), x in zip(strips, xs):
            G.score_strip(x, t0, 0, full, scale, out, False, bias, True, hmax)
    yield "gaincell.score_strip (with the largest |logit|)", n_strip, np.concatenate([x.ravel() for x in xs]), strips_
    n, dd = 3, 64
    M = rng.standard_normal((g * tb, n * dd), dtype=np.float32)
    rw = rng.random((n, tb), dtype=np.float32)
    psum = rng.random((g * tb, ntl), dtype=np.float32) + np.float32(0.1)
    part = np.empty((g * tb, dd), np.float32)
    yield "gaincell.tile_parts_rows (one value tile)", M.size, M, \
        lambda: G.tile_parts_rows(M, 0, g, tb, rw, psum, 3, True, part)
    z1 = rng.standard_normal((g * tb, dd), dtype=np.float32)
    s1 = rng.random(g * tb, dtype=np.float32)
    fl = rng.random(g * tb, dtype=np.float32) + np.float32(1.0)
    back = rng.random(g * tb, dtype=np.float32)
    acc = np.zeros((g * tb, dd), np.float32)
    none = np.empty((0, 0), np.float32)
    yield "gaincell.noisy_tile_rows (one value tile)", part.size, part, \
        lambda: G.noisy_tile_rows(part, 0, g, tb, z1, s1, none, s1, fl, 16, back, acc)
    y = rng.uniform(-0.1, 1.9, (S, dd)).astype(np.float32)  # a window's stored voltages of one head
    table = rng.standard_normal((n, 4001)).astype(np.float32)
    terms = np.empty((S, n, dd), np.float32)
    yield "gaincell.interp_terms (3 terms, per output)", terms.size, terms, \
        lambda: G.interp_terms(y, -0.05, 4000 / 1.9, table, terms)


def sprint_case(rng):
    """decide_chunk on the last chunk of a causal block (queries 960..1023 of a window, keys
    0..1023), the anchor rule, comparator noise from a pool, as the kernel calls it."""
    g, T, S, C = 3, 256, 1024, 64
    qpos = np.arange(S - T, S, dtype=np.int64)
    kpos = np.arange(S, dtype=np.int64)
    allowed, forced, bias, ptr, cols, _, _, lks, hks = SP.block_masks(qpos, kpos, 0, 0, 0, True, 4, 16, C)
    t0 = T - C
    lk, hk = int(lks[-1]), int(hks[-1])
    M, L = g * C, hk - lk
    e0 = rng.normal(-4, 2, (M, L)).astype(np.float32)
    e = e0.copy()
    both = rng.normal(0, 1, (2 * M, L)).astype(np.float32)
    n = g * T
    pool = rng.standard_normal(n * S + 1, dtype=np.float32)
    theta = np.full(g, 3.0)
    base = rng.normal(0, 0.1, n).astype(np.float32)
    vpl = rng.uniform(0.5, 1.5, n).astype(np.float32)
    off = rng.normal(0, 0.05, S).astype(np.float32)
    keep = np.zeros((n, S), np.bool_)
    tot = np.empty(n, np.float32)
    mass = np.empty(n, np.float64)
    kept = np.empty(n, np.int64)
    new = np.empty(n, np.int64)

    def run():
        e[:] = e0  # decide_chunk overwrites the scores with the kept weights (the copy is timed too)
        SP.decide_chunk(e, both, t0, g, T, S, lk, True, ptr, cols, theta, base, vpl, np.float32(0.0), off,
                        1.0, 0.1, 0.01, 0.001, pool, 0, bias, allowed, forced, keep, tot, mass, kept, new)
    return "sprint.decide_chunk (anchor rule, + one copy of e)", M * L, both, run


def main():
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="paired rounds per pass (1-1000)")
    a = ap.parse_args()
    if not 1 <= a.rounds <= 1000:
        print(f"passes.py: error: --rounds {a.rounds}: must be 1-1000", file=sys.stderr)
        sys.exit(2)
    rng = np.random.default_rng(0)
    cases = list(gaincell_cases(rng)) + [sprint_case(rng)]
    print(f"{'pass':52s} {'ns/elem':>8s} {'x copy':>7s}")
    for name, n_elem, main_in, fn in cases:
        dst = np.empty_like(main_in)
        ratio, t, _ = paired_ratio(fn, lambda: np.copyto(dst, main_in), a.rounds)  # t: the best round
        print(f"{name:52s} {t / n_elem * 1e9:8.2f} {ratio:7.1f}")


if __name__ == "__main__":
    main()
