"""Benchmark: what bounds the SmolLM2 prefill's share of the weight-GEMM ceiling at a window (issue
#17; default 1024), and whether Intel MKL's packed-weight products would lift it. Every figure is
a ratio measured in this run (median of paired rounds: these machines are noisy).

    .venv/bin/python benchmarks/bounds.py [--rounds N] [--window T]

1. The ideal attention at window T (causal, SmolLM2's 9 query / 3 KV heads of 64, the
   kernel's own blocks of 128 queries), its parts timed on one thread per layer: the score
   product, the compiled softmax pass, the value product, the normalised scatter. Against the
   model's own weight products at the same window (one thread, all rows), timed back to back in
   each round, this gives an upper bound on the share of the weight-product time a prefill can
   reach even if everything else (norms, rotary embedding, SwiGLU, logits' loss, hand-offs) were
   free and the two lanes split the attention perfectly: W / (W + A).
   Then the compiled passes every forward pass makes between its products, timed the same way on
   the same rows with the model's own functions (per layer: two RMSNorms, the rotary embedding
   with the head split, SwiGLU, the two residual adds; per window: the final norm and the loss's
   log-sum-exp over the vocabulary, in the forward pass's chunks of 64 rows), and with them the
   tighter bound W / (W + A + P); and each pass's bytes (its arrays read once, written once) at
   this thread's copy speed for buffers of the same size, the least such a pass could take: the
   bound if every pass ran at that speed, W / (W + A + P_copy). Each bound is on the share of the
   model's own weight-product time. ``benchmarks/transformer.py``'s row is the share of its
   ceiling: (1024 x 576) @ (576 x 3072) products on both cores, timed as that script does, for the
   weight FLOPs. Two perfect lanes take half the one-thread time at best, so that share is at most
   f x each bound, f = 2 x the model's one-thread product speed / the ceiling's (above 1 when the
   model's products, timed on layer 0's weights over and over, outrun the ceiling's on two lanes).
2. MKL's packed-B products (cblas_sgemm_pack / cblas_sgemm_compute: the weights packed once
   instead of on every call) against the plain cblas_sgemm the forward pass uses, per layer
   product at T / 2 rows (a lane's half of the window): the speed ratio, whether the outputs are
   bit-identical, and the packed buffers' size against the weights' (the peak-memory floor of a
   window-1024 evaluation is 1.0 GB; the float32 weights alone are ~0.54 GB).
Needs the mkl extra for part 2 (skipped cleanly without it).
"""
from __future__ import annotations

import collections
import ctypes
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from analogattn.attention._fused import scatter_normalised, softmax_ranges  # noqa: E402
from analogattn.transformer import fused, gemm, ops  # noqa: E402
from analogattn.transformer.loaders import load  # noqa: E402
from analogattn.transformer.models import blas_single_thread  # noqa: E402
from transformer import REF_FLOPS, flops_per_token, gemm_time  # noqa: E402  (benchmarks/transformer.py: the
#                                 ceiling's product's FLOPs, the weight FLOPs a token, the ceiling's time for some)
from _timing import median_time  # noqa: E402
from _args import Parser  # noqa: E402

PRODUCTS = ("w_qkv", "wo", "w_gate_up", "w_down")
CEILING_FLOPS = 8 * REF_FLOPS  # the ceiling timed for 8 of benchmarks/transformer.py's products


def attention_parts(T, n_heads, n_kv, d, block, rng):
    """A function timing one layer's ideal attention at T tokens on this thread, by part; and the
    layer's product FLOPs and softmax elements (as the kernel computes them: whole blocks)."""
    g = n_heads // n_kv
    q = rng.standard_normal((n_heads, T, d)).astype(np.float32)
    k = rng.standard_normal((n_kv, T, d)).astype(np.float32)
    v = rng.standard_normal((n_kv, T, d)).astype(np.float32)
    a, b = np.zeros(T, np.int64), np.arange(1, T + 1, dtype=np.int64)
    out = np.empty((T, n_heads, d), np.float32)
    work = np.empty(g * block * (T + d), np.float32)
    scale = np.float32(1 / math.sqrt(d))
    elems = sum(g * min(block, T - b0) * min(T, b0 + block) for b0 in range(0, T, block)) * n_kv

    def run():
        t = [0.0] * 4
        for b0 in range(0, T, block):
            b1 = min(T, b0 + block)
            tb, s = b1 - b0, b1
            for j in range(n_kv):
                sc = work[:g * tb * s].reshape(g * tb, s)
                ob = work[g * tb * s:g * tb * (s + d)].reshape(g * tb, d)
                qj = q[j * g:(j + 1) * g, b0:b1].reshape(g * tb, d)
                c0 = time.perf_counter()
                np.matmul(qj, k[j, :s].T, out=sc)
                c1 = time.perf_counter()
                tot = softmax_ranges(sc, a[b0:b1], b[b0:b1], tb, scale)
                c2 = time.perf_counter()
                np.matmul(sc, v[j, :s], out=ob)
                c3 = time.perf_counter()
                scatter_normalised(ob, tot, out, b0, j * g, g, tb)
                c4 = time.perf_counter()
                for i, x in enumerate((c1 - c0, c2 - c1, c3 - c2, c4 - c3)):
                    t[i] += x
        return t
    return run, 2 * elems * d, elems


def pass_parts(m, T, rng):
    """A function timing one layer's compiled passes at T rows on this thread (adds, norms,
    rotary, SwiGLU, as the forward pass calls them), and one timing a window's final norm and loss
    pass (the logits' chunks of 64 rows, made once here: their products are weight products);
    each with the bytes its passes read and write once; and the layer's arrays by name."""
    c = m.config
    d, nq, nk = c.head_dim, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    f32 = np.float32
    x = rng.standard_normal((T, c.d_model)).astype(f32)
    y = rng.standard_normal((T, c.d_model)).astype(f32)
    h = np.empty_like(x)
    qkv = rng.standard_normal((T, nq + 2 * nk)).astype(f32)
    gu = rng.standard_normal((T, 2 * c.d_ff)).astype(f32)
    act = np.empty((T, c.d_ff), f32)
    cos, sin = ops.rope_tables(np.arange(T), d, c.rope_base)
    q, k, v = (np.empty((n, T, d), f32) for n in (c.n_heads, c.n_kv_heads, c.n_kv_heads))
    eps = f32(c.norm_eps)
    wn = m.w["l0.attn_norm"]
    chunk = 64
    z = rng.standard_normal((chunk, c.vocab)).astype(f32)
    tgt = rng.integers(0, c.vocab, T)
    nll = np.empty(T, np.float64)
    # each pass's traffic (the arrays it reads once and writes once), in bytes: a layer's two adds
    # (x += y), two norms, the rotary split, SwiGLU; a window's final norm and its loss's chunks
    # of logits (read only)
    layer_bytes = [2 * x.nbytes + y.nbytes] * 2 + [x.nbytes + h.nbytes] * 2 + \
        [qkv.nbytes + q.nbytes + k.nbytes + v.nbytes, gu.nbytes + act.nbytes]
    window_bytes = [x.nbytes + h.nbytes] + [z[:min(chunk, T - r0)].nbytes for r0 in range(0, T, chunk)]

    def layer():
        c0 = time.perf_counter()
        np.add(x, y, out=x)
        fused.rms_norm_into(x, wn, eps, h)
        np.add(x, y, out=x)
        fused.rms_norm_into(x, wn, eps, h)
        fused.rope_split(qkv, cos, sin, c.n_heads, c.n_kv_heads, d, q, k, v)
        fused.swiglu_into(gu, c.d_ff, act)
        return time.perf_counter() - c0

    def window():
        c0 = time.perf_counter()
        fused.rms_norm_into(x, wn, eps, h)
        for r0 in range(0, T, chunk):
            r1 = min(T, r0 + chunk)
            fused.nll_rows(z[:r1 - r0], tgt[r0:r1], nll[r0:r1])
        return time.perf_counter() - c0
    return layer, window, layer_bytes, window_bytes, dict(x=x, y=y, h=h, gu=gu, act=act)


def copy_time(traffic, rounds):
    """The least time this thread takes to move each pass's ``traffic`` (bytes read + written): a
    copy of half as many bytes between two buffers of that size (first-touched, so a buffer the
    size of a pass's arrays sits in the same cache level as they do), summed over the passes;
    median over ``rounds``."""
    total = 0.0
    for n, reps in collections.Counter(traffic).items():
        a = np.ones(n // 8, np.float32)
        o = np.empty_like(a)
        np.copyto(o, a)
        total += median_time(lambda: np.copyto(o, a), rounds) * reps
    return total


def verdict(present, at_copy):
    """The 0.85 floor's verdict for the bound with the passes at their present speed and at copy speed."""
    if present >= 0.85:
        return "reachable with these passes"
    if at_copy >= 0.85:
        return "NOT reachable with these passes, reachable only if every pass ran at copy speed"
    return "NOT reachable with these passes, nor with every pass at copy speed"


def mkl_packed():
    """(pack(w) -> packed buffer, compute(a, packed, n, out), size(w)) through MKL, or None."""
    if gemm._mkl() is None:
        return None
    lib = ctypes.CDLL(gemm._mkl_library())
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    size = lib.cblas_sgemm_pack_get_size
    size.argtypes, size.restype = [i, i, i, i], ctypes.c_size_t
    pack = lib.cblas_sgemm_pack
    pack.argtypes, pack.restype = [i, i, i, i, i, i, f, p, i, p], None
    comp = lib.cblas_sgemm_compute
    comp.argtypes, comp.restype = [i, i, i, i, i, i, p, i, p, i, f, p, i], None
    ROW, NOTRANS, PACKED, B = 101, 111, 151, 162  # mkl_cblas.h

    def nbytes(w, rows):
        return size(B, rows, w.shape[1], w.shape[0])

    def packed(w, rows):
        buf = np.empty(nbytes(w, rows) // 4 + 1, np.float32)
        pack(ROW, B, NOTRANS, rows, w.shape[1], w.shape[0], 1.0, w.ctypes.data, w.strides[0] // 4, buf.ctypes.data)
        return buf

    def compute(a, buf, n, out):
        comp(ROW, NOTRANS, PACKED, a.shape[0], n, a.shape[1], a.ctypes.data, a.strides[0] // 4, buf.ctypes.data, n,
             0.0, out.ctypes.data, out.strides[0] // 4)
    return packed, compute, nbytes


def main():
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="paired rounds per figure (median reported)")
    ap.add_argument("--window", type=int, default=1024, help="the prefill window (tokens) to bound, 128-2048")
    a = ap.parse_args()
    ap.within("--rounds", a.rounds, 1, 1000)
    ap.within("--window", a.window, 128, 2048)
    m = load("smollm2")
    c = m.config
    rng = np.random.default_rng(0)
    T = a.window
    run, flops, elems = attention_parts(T, c.n_heads, c.n_kv_heads, c.head_dim, 128, rng)
    layer_pass, window_pass, layer_bytes, window_bytes, _ = pass_parts(m, T, rng)
    hs = {n: rng.standard_normal((T, m.w[f"l0.{n}"].shape[0])).astype(np.float32) for n in PRODUCTS}
    outs = {n: np.empty((T, m.w[f"l0.{n}"].shape[1]), np.float32) for n in PRODUCTS}

    def weights_layer():
        for n in PRODUCTS:
            gemm.matmul(hs[n], m.w[f"l0.{n}"], outs[n])
    logits_in = rng.standard_normal((T, c.d_model)).astype(np.float32)
    logits = np.empty((T, c.vocab), np.float32)
    print(f"weight products: {gemm.engine()}; {a.rounds} paired rounds, one thread (BLAS limited to 1)")
    with blas_single_thread():
        run(), weights_layer(), layer_pass(), window_pass()  # warm
        gemm.matmul(logits_in, m.w["lm_head"], logits)  # warm (and the logits' pages touched)
        t_logits = median_time(lambda: gemm.matmul(logits_in, m.w["lm_head"], logits), 3)
    parts, ratio, tw, passes, wpasses, ceil = [], [], [], [], [], []
    for _ in range(a.rounds):
        with blas_single_thread():
            t0 = time.perf_counter()
            weights_layer()
            w = time.perf_counter() - t0
            p = run()
            parts.append(p)
            tw.append(w)
            ratio.append(sum(p) / w)
            passes.append(layer_pass())
            wpasses.append(window_pass())
        # benchmarks/transformer.py's ceiling (both cores), in the same round: its time for 8 of its
        # products (~30 GFLOP, ~0.2 s: one 20 ms product is too short a timing on this machine)
        ceil.append(gemm_time(CEILING_FLOPS) / CEILING_FLOPS)
    with blas_single_thread():
        # the passes' bytes (each read once and written once) at this thread's copy speed
        t_copy = copy_time(layer_bytes, 2 * a.rounds) * c.n_layers + copy_time(window_bytes, 2 * a.rounds)
    med = [statistics.median(p[i] for p in parts) for i in range(4)]
    names = ("scores q k^T", "softmax pass", "values p v", "scatter")
    print(f"\n1. ideal attention at window {T}, one layer, one thread (medians):")
    for nm, t in zip(names, med):
        rate = {"scores q k^T": f"{flops / t / 1e9:6.1f} GFLOP/s", "values p v": f"{flops / t / 1e9:6.1f} GFLOP/s",
                "softmax pass": f"{t / elems * 1e9:6.2f} ns/element"}.get(nm, "")
        print(f"   {nm:14s} {t * 1e3:7.2f} ms  {rate}")
    r = statistics.median(ratio)
    W = statistics.median(tw) * c.n_layers + t_logits
    A = r * statistics.median(tw) * c.n_layers
    bound = W / (W + A)
    print(f"   attention / the layer's weight products: median {r:.3f} (rounds {', '.join(f'{x:.3f}' for x in ratio)})")
    print(f"   => upper bound on prefill share of its own weight-product time (all else free, perfect lanes): "
          f"{bound:.3f} (floor 0.85: {'reachable' if bound >= 0.85 else 'NOT reachable'} with these attention "
          f"parts; the attention's two products, over the kernel's blocks, are "
          f"{2 * c.n_layers * flops / (T * flops_per_token(c)):.1%} of the weight FLOPs)")
    P = statistics.median(passes) * c.n_layers + statistics.median(wpasses)
    bound2 = W / (W + A + P)
    bound3 = W / (W + A + t_copy)
    print(f"   the compiled passes (a layer: 2 norms, rotary, SwiGLU, 2 adds; a window: final norm, loss): "
          f"{statistics.median(passes) * 1e3:.2f} ms a layer + {statistics.median(wpasses) * 1e3:.2f} ms a window "
          f"= {P / W:.3f} of the weight products; their bytes at this thread's copy speed: {t_copy / W:.3f}")
    print(f"   => with the passes at their present speed: {bound2:.3f}; with every pass at copy speed: {bound3:.3f} "
          f"(floor 0.85: {verdict(bound2, bound3)}; both with perfect lanes, no hand-offs, the attention as timed "
          "alone)")
    # the benchmark's row: the ceiling's time for the weight FLOPs (both cores) over the prefill's,
    # which two perfect lanes would bring to half the one-thread time at best: share <= f x bound
    ceil_rate = 1.0 / statistics.median(ceil)
    own_rate = flops_per_token(c) * T / W
    f = 2 * own_rate / ceil_rate
    print(f"   the ceiling (benchmarks/transformer.py's, both cores): {ceil_rate / 1e9:.1f} GFLOP/s; the model's "
          f"weight products at {T} rows on one thread: {own_rate / 1e9:.1f} GFLOP/s, on two perfect lanes {f:.2f} of "
          "the ceiling")
    print(f"   => share of the weight-GEMM ceiling (transformer.py's row) at most: {f * bound:.3f} with the "
          f"attention alone, {f * bound2:.3f} with the passes at their present speed, {f * bound3:.3f} with every "
          f"pass at copy speed (floor 0.85: {verdict(f * bound2, f * bound3)})")

    mk = mkl_packed()
    if mk is None:
        print("\n2. MKL packed products: skipped (MKL not installed: the mkl extra)")
        return
    packed, compute, nbytes = mk
    rows = T // 2
    print(f"\n2. MKL packed-B products at {rows} rows (a lane's half of window {T}), one thread:")
    tot_packed = 0
    with blas_single_thread():
        for n in PRODUCTS:
            wm = m.w[f"l0.{n}"]
            x = hs[n][:rows]
            o1, o2 = np.empty((rows, wm.shape[1]), np.float32), np.empty((rows, wm.shape[1]), np.float32)
            buf = packed(wm, rows)
            gemm.matmul(x, wm, o1)
            compute(x, buf, wm.shape[1], o2)
            same = np.array_equal(o1, o2)
            rs = []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                for _ in range(10):
                    gemm.matmul(x, wm, o1)
                t1 = time.perf_counter()
                for _ in range(10):
                    compute(x, buf, wm.shape[1], o2)
                t2 = time.perf_counter()
                rs.append((t1 - t0) / (t2 - t1))
            tot_packed += nbytes(wm, rows)
            print(f"   {n:10s} ({wm.shape[0]:4d} x {wm.shape[1]:4d}): packed {statistics.median(rs):.2f}x as fast, "
                  f"bit-identical {same}, packed buffer {nbytes(wm, rows) / wm.nbytes:.2f}x the weights' bytes")
    layer_bytes = sum(m.w[f"l0.{n}"].nbytes for n in PRODUCTS)
    print(f"   one layer's packed buffers {tot_packed / 1e6:.1f} MB against {layer_bytes / 1e6:.1f} MB of weights: "
          f"{c.n_layers * tot_packed / 1e9:.2f} GB for the {c.n_layers} layers (peak-memory floor 1.0 GB)")


if __name__ == "__main__":
    main()
