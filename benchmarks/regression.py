"""Regression record of the circuit kernels: every output array and statistic of a fixed set of
runs, saved to one .npz, and a comparison of two such files.

Runs (given a surrogate bundle):
- gain cell on fixed seeded random q, k, v (identity scalers scaled into range): softmax and
  hardsigmoid, 8 and 32 storage levels, per-cell mismatch, read noise, a sliding window;
- pruning kernel on fixed seeded random q, k, v: anchor, fixed, oracle and none rules, variation
  on and off (key step and thresholds set by hand);
- SmolLM2 windows with calibration: calibrated scalers / scales and the final hidden states of a
  scored window for several gain-cell and pruning configurations, and the pruning statistics.

Usage:
    python benchmarks/regression.py record SURROGATES.h5 OUT.npz [--no-model]
    python benchmarks/regression.py compare A.npz B.npz

The script uses only names that exist before and after the attention restructuring (issue #13),
so the same file records both.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from _args import Parser


def _keep_recorder(sprint_mod, ker):
    """A list that collects (layer, kv head, positions, key positions, keep), old or new API."""
    log = []
    rec_cls = getattr(sprint_mod, "KeepLog", None)
    if rec_cls is not None:
        return log, rec_cls(log)
    ker.keep_log = log
    return log, None


def _arrays(prefix, obj, out):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is not None:
            out[f"{prefix}.{f.name}"] = np.asarray(v)


def record_random(bundle, out):
    from analogattn.attention import gaincell as G
    from analogattn.attention import sprint as P
    from analogattn.attention.base import Mask

    rng = np.random.default_rng(1234)
    H, KV, T, d = 6, 2, 300, 64
    q = rng.standard_normal((H, T, d)).astype(np.float32)
    k = rng.standard_normal((KV, T, d)).astype(np.float32)
    v = rng.standard_normal((KV, T, d)).astype(np.float32)
    pos = np.arange(T)
    cell = G.CellModel.from_bundle(bundle)
    gcfgs = {
        "soft8": dict(storage_levels=8),
        "soft32": dict(storage_levels=32),
        "hard8": dict(activation="hardsigmoid", storage_levels=8),
        "hard32": dict(activation="hardsigmoid", storage_levels=32),
        "soft32_mismatch": dict(storage_levels=32, mismatch=True, seed=3),
        "soft8_noise": dict(storage_levels=8, read_noise=0.02, seed=4),
        "soft32_window": dict(storage_levels=32, window=50),
        "soft16_nopredistort": dict(storage_levels=16, predistort=False, token_period=1e-7),
    }
    for name, kw in gcfgs.items():
        cfg = G.GainCellConfig(**kw)
        sc = G.Scalers.identity(1, H, KV, cell)
        sc.a_q[:] = 0.3
        sc.a_k[:] = sc.a_v[:] = 0.2 if cfg.predistort else 0.08
        sc.s_sat[:] = 0.3 * sc.score_scale
        sc.score_scale[:] *= 0.3
        sc.out_scale[:] *= 0.5
        ker = G.GainCellAttention(cell, cfg, sc)
        cache = ker.new_cache(0, KV, d)
        out[f"gc.{name}.prefill"] = ker(q[:, :200], k[:, :200], v[:, :200], pos[:200], Mask(), cache, 0)
        steps = [ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], pos[t:t + 1], Mask(), cache, 0)
                 for t in range(200, 210)]
        out[f"gc.{name}.decode"] = np.concatenate(steps, axis=1)
        out[f"gc.{name}.stored_k"] = cache.keys.copy()
    xbar = P.Crossbar.from_bundle(bundle)
    scales = P.SprintScales(np.full((1, KV), 0.5), None, np.full((1, H), 0.5))
    quiet = dict(variation=False, read_noise=False, comparator_offset=False, comparator_noise=False)
    scfgs = {
        "anchor": dict(rule="anchor"),
        "fixed": dict(rule="fixed"),
        "oracle": dict(rule="oracle", mass=0.95),
        "none": dict(rule="none"),
        "anchor_quiet": dict(rule="anchor", **quiet),
        "fixed_novar": dict(rule="fixed", variation=False, comparator_offset=False, seed=7),
        "anchor_window": dict(rule="anchor", window=64, key_bits=3, dac_bits=5),
    }
    for name, kw in scfgs.items():
        cfg = P.SprintConfig(**kw)
        sc = dataclasses.replace(scales, theta=scales.theta.copy() * (3.0 if cfg.rule == "anchor" else 1.0))
        probe = P.SprintAttention(xbar, cfg, sc, 1)
        log, rec = _keep_recorder(P, probe)
        ker = probe if rec is None else P.SprintAttention(xbar, cfg, sc, 1, recorder=rec)
        ker.block = 64
        cache = ker.new_cache(0, KV, d)
        out[f"sp.{name}.prefill"] = ker(q, k, v, pos, Mask(), cache, 0)
        out[f"sp.{name}.keep"] = np.concatenate([x[4].ravel() for x in log])
        _arrays(f"sp.{name}.stats", ker.stats, out)


def record_model(bundle, out, W=128):
    from analogattn.attention import gaincell as G
    from analogattn.attention import sprint as P
    from analogattn.evaluate.perplexity import stream_tokens
    from analogattn.evaluate.texts import default_text_path
    from analogattn.transformer.loaders import load

    model = load("smollm2")
    ids = np.concatenate(list(stream_tokens(default_text_path(), model.tokenizer, max_chars=20000)))
    cal = [ids[-2 * W:-W], ids[-W:]]
    score = ids[:W]
    out["model.ideal"] = model.forward(score, logits="none")
    cell = G.CellModel.from_bundle(bundle)
    ranges = None
    for name, kw, method in (("soft32", dict(storage_levels=32), "meanstd"),
                             ("hard8", dict(activation="hardsigmoid", storage_levels=8), "lstsq"),
                             ("soft8_mm", dict(storage_levels=8, mismatch=True, read_noise=0.01, seed=2), "meanstd"),
                             ("soft16_none", dict(storage_levels=16, window=64), "none")):
        cfg = G.GainCellConfig(**kw)
        ker, ranges = G.calibrated_kernel(model, cal, cell, cfg, method, ranges=ranges)
        _arrays(f"mg.{name}.sc", ker.sc, out)
        out[f"mg.{name}.hidden"] = model.forward(score, caches=model.new_caches(ker), kernel=ker, logits="none")
    xbar = P.Crossbar.from_bundle(bundle)
    for rule, budget in (("anchor", "global"), ("fixed", "head")):
        cfg = P.SprintConfig(rule=rule, budget=budget)
        cals = P.calibrate_sprint(model, cal, xbar, cfg, keeps=(0.2, 0.3))
        for kp, sc in cals.items():
            _arrays(f"ms.{rule}{kp}.sc", sc, out)
            ker = P.SprintAttention(xbar, dataclasses.replace(cfg, keep=kp), sc, model.config.n_layers)
            out[f"ms.{rule}{kp}.hidden"] = model.forward(score, caches=model.new_caches(ker), kernel=ker,
                                                         logits="none")
            _arrays(f"ms.{rule}{kp}.stats", ker.stats, out)
    for name, kw in (("oracle", dict(rule="oracle", mass=0.95)), ("none_novar", dict(rule="none", variation=False,
                                                                                      comparator_offset=False))):
        cfg = P.SprintConfig(**kw)
        sc = P.calibrate_sprint(model, cal, xbar, cfg)
        _arrays(f"ms.{name}.sc", sc, out)
        ker = P.SprintAttention(xbar, cfg, sc, model.config.n_layers)
        out[f"ms.{name}.hidden"] = model.forward(score, caches=model.new_caches(ker), kernel=ker, logits="none")
        _arrays(f"ms.{name}.stats", ker.stats, out)


def compare(a_path, b_path) -> int:
    a, b = np.load(a_path), np.load(b_path)
    ka, kb = set(a.files), set(b.files)
    for k in sorted(ka ^ kb):
        print(f"only in {'A' if k in ka else 'B'}: {k}")
    same = 0
    worst = (0.0, "")
    for k in sorted(ka & kb):
        x, y = a[k], b[k]
        if x.shape != y.shape:
            print(f"{k}: shape {x.shape} vs {y.shape}")
            continue
        if x.dtype == bool or y.dtype == bool:
            n = int((x != y).sum())
            if n:
                print(f"{k}: {n} of {x.size} decisions differ")
            else:
                same += 1
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        if np.array_equal(x, y, equal_nan=True):
            same += 1
            continue
        fin = np.isfinite(x) & np.isfinite(y)
        d = np.abs(x - y)[fin]
        scale = max(np.abs(x[fin]).max() if fin.any() else 0.0, 1e-300)
        rel = float(d.max() / scale) if d.size else 0.0
        bad = int((np.isfinite(x) != np.isfinite(y)).sum())
        print(f"{k}: max abs {d.max() if d.size else 0:.3e}, max rel (of max |A|) {rel:.3e}"
              + (f", {bad} finite/non-finite mismatches" if bad else ""))
        worst = max(worst, (rel, k))
    print(f"{same} of {len(ka & kb)} arrays bit-identical; worst relative difference {worst[0]:.3e} {worst[1]}")
    return 0


def main(argv=None):
    ap = Parser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("surrogates")
    r.add_argument("out")
    r.add_argument("--no-model", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    a = ap.parse_args(argv)
    for name in (("a", "b") if a.cmd == "compare" else ("surrogates",)):
        if not Path(getattr(a, name)).is_file():
            ap.error(f"{a.cmd} {getattr(a, name)}: no such file")
    from analogattn.atomic import replacing
    from analogattn.errors import AnalogAttnError
    from analogattn.userio import check_output_file
    if a.cmd == "compare":
        for path in (a.a, a.b):  # a truncated or foreign file: one line, before any output
            if not zipfile.is_zipfile(path):
                ap.error(f"compare {path}: not a regression record (.npz), or truncated")
        return compare(a.a, a.b)
    # np.savez adds .npz to a name without it; the record replaces only another .npz (a zip)
    out_path = a.out if a.out.endswith(".npz") else a.out + ".npz"
    try:  # every input and the output checked before the minutes of work; nothing written yet
        check_output_file(a.out, "record", "regression record")
        check_output_file(out_path, "record", "regression record", zipfile.is_zipfile)
        from analogattn.surrogates import bundle as bundle_mod
        b = bundle_mod.load(a.surrogates)
    except AnalogAttnError as e:
        ap.error(str(e))
    out = {}
    t = time.perf_counter()
    record_random(b, out)
    if not a.no_model:
        record_model(b, out)
    with replacing(out_path) as tmp, open(tmp, "wb") as fh:  # whole or not at all
        np.savez(fh, **out)
    import analogattn  # the code recorded: the installed package, or what PYTHONPATH puts first
    print(f"wrote {out_path}: {len(out)} arrays in {time.perf_counter() - t:.0f} s, the code of "
          f"{Path(analogattn.__file__).parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
