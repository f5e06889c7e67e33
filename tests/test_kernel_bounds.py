"""``benchmarks/kernel_bounds.py``: the products it charges each circuit kernel are the ones the
kernel issues (checked against a hand count), and bad input gets one line and exit code 2 before
any work."""
from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analogattn.attention.base import Mask
from analogattn.attention.gaincell import ideal_kernel
from analogattn.attention.sprint import Crossbar, SprintAttention, SprintConfig, SprintScales

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "kernel_bounds.py"
H, KV, d, T = 6, 2, 64, 256


def _module():
    spec = importlib.util.spec_from_file_location("kernel_bounds", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _qkv():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((H, T, d)).astype(np.float32), rng.standard_normal((KV, T, d)).astype(np.float32),
            rng.standard_normal((KV, T, d)).astype(np.float32))


def _prefill(q, k, v):
    def run(ker):
        for layer in (0, 1):  # the plan is the first layer-0 call's; a later layer must not add to it
            ker(q, k, v, np.arange(T), Mask(), ker.new_cache(layer, KV, d), 0 if layer == 0 else 1)
    return run


def test_sprint_products_are_the_kernels_chunks():
    """A causal prefill of T queries in blocks of 64 and chunks of 16: chunk c (queries 16c ..
    16c + 15) sees keys 0 .. 16(c + 1), so each KV head's chunk issues three products over
    L = 16(c + 1) keys: scores (g 16 x d) @ (d x L), column currents (2 g 16 x d) @ (d x L),
    values (g 16 x L) @ (L x d); 8 g 16 d L FLOPs, summed by hand here."""
    mb = _module()
    x = dataclasses.replace(Crossbar.ideal(rows=64), sigma_g=0.05, noise_rel=0.004, cmp_noise=3e-4)
    sc = SprintScales(np.full((2, KV), 0.5), None, np.full((2, H), 1.5))
    ker = SprintAttention(x, SprintConfig(), sc, 2, block=64)
    ker.chunk = 16
    _prefill(*_qkv())(ker)  # a call before (the benchmark's calibration): its layout is not reused
    prods = mb.sprint_plan(ker, _prefill(*_qkv()), H, KV, d)
    g = H // KV
    want = sum(8 * g * 16 * d * 16 * (c + 1) for c in range(T // 16)) * KV
    assert sum(2 * M * K * N for M, K, N, _ in prods) == want
    assert len(prods) == 3 * (T // 16) * KV
    assert SprintAttention._block_arrays.__name__ == "_block_arrays"  # put back
    assert type(ker).__call__ is SprintAttention.__call__


def test_gaincell_strips_cover_every_visible_score():
    """The ideal cell (no decay: one term, K = d; no ADC or noise: no draws). Each KV head's
    score strips cover every causal (query, key) pair at least once and at most their own
    strip's key span; every value tile's product has d outputs a row."""
    mb = _module()
    ker = ideal_kernel(2, H, KV)
    _prefill(*_qkv())(ker)  # a call before (the benchmark's calibration): its layout is not reused
    prods, draws = mb.gaincell_plan(ker, _prefill(*_qkv()), H, KV, d)
    g = H // KV
    strips = [p for p in prods if p[3]]
    tiles = [p for p in prods if not p[3]]
    assert all(K == d for _, K, _, _ in strips)
    covered = sum(M * N for M, _, N, _ in strips)
    visible = KV * g * T * (T + 1) // 2
    assert visible <= covered <= KV * g * T * T
    assert tiles and all(K == ker.cfg.array.rows and N == d for _, K, N, _ in tiles)
    assert draws == []


@pytest.mark.parametrize("args, words", [
    (["--rounds", "0"], ["--rounds 0", "1-100"]),
    (["--rounds", "nan"], ["--rounds", "invalid int value: 'nan'"]),
    (["--window", "64"], ["--window 64", "128-8192"]),
    (["--surrogates", "/nonexistent/s.h5"], ["--surrogates", "s.h5"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_input_is_one_line(tmp_path, args, words):
    """Checked before the model loads (a stand-in bundle: the option checks run before it is read)."""
    bundle, text = tmp_path / "s.h5", tmp_path / "t.txt"
    bundle.write_bytes(b"\x89HDF")
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    res = subprocess.run([sys.executable, str(SCRIPT), "--surrogates", str(bundle), "--text", str(text), *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and res.stdout == "", res.stderr
    assert lines[0].startswith("kernel_bounds.py: error: ") and all(w in lines[0] for w in words), lines[0]
