"""``benchmarks/bounds.py``'s accounting of the forward pass's compiled passes: the bytes it charges
each pass are those of the arrays the pass reads and writes (hand count on a small model), the
passes it times are the forward pass's own functions run on those arrays, and its verdict on the
0.85 floor follows the two bounds."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from analogattn.transformer import ops

ROOT = Path(__file__).resolve().parents[1]


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bounds", ROOT / "benchmarks" / "bounds.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


def _model():
    cfg = SimpleNamespace(d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=16, vocab=100, rope_base=10000.0,
                          norm_eps=1e-5)
    return SimpleNamespace(config=cfg, w={"l0.attn_norm": np.linspace(0.5, 1.5, 8).astype(np.float32)})


def test_pass_traffic_is_the_bytes_of_the_arrays_each_pass_reads_and_writes():
    layer, window, lb, wb, _ = _module().pass_parts(_model(), 100, np.random.default_rng(0))
    # x, y (100, 8) float32 = 3200 B each; an add reads x and y and writes x; a norm reads x, writes h
    # rotary: qkv (100, 8 + 2 x 4) read, q (2, 100, 4), k, v (1, 100, 4) written; SwiGLU: gu (100, 32) in,
    # act (100, 16) out
    assert lb == [9600, 9600, 6400, 6400, 6400 + 3200 + 1600 + 1600, 12800 + 6400]
    # the final norm; the loss reads the logits in chunks of 64 rows: 64 x 100 and 36 x 100 float32
    assert wb == [6400, 25600, 14400]
    assert layer() > 0 and window() > 0


def test_the_timed_layer_runs_the_forward_pass_functions_on_its_arrays():
    """One layer's passes leave x + 2 y in x, h = RMSNorm of it (the NumPy reference) and SwiGLU's
    output in act (the NumPy reference)."""
    m = _model()
    layer, _, _, _, a = _module().pass_parts(m, 100, np.random.default_rng(1))
    x0, y0, gu0 = a["x"].copy(), a["y"].copy(), a["gu"].copy()
    layer()
    np.testing.assert_array_equal(a["x"], (x0 + y0) + y0)
    np.testing.assert_allclose(a["h"], ops.rms_norm((x0 + y0) + y0, m.w["l0.attn_norm"], 1e-5), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(a["act"], ops.silu(gu0[:, :16]) * gu0[:, 16:], rtol=2e-6, atol=1e-6)


def test_verdict_on_the_floor_follows_both_bounds():
    v = _module().verdict
    assert v(0.86, 0.9) == "reachable with these passes"
    assert v(0.83, 0.852).startswith("NOT reachable with these passes, reachable only if")
    assert v(0.80, 0.84) == "NOT reachable with these passes, nor with every pass at copy speed"


def test_bounds_script_prints_bounds_that_follow_from_its_own_parts():
    """``bounds.py --window 128 --rounds 1`` (real SmolLM2 weights, ~10 s): the bounds on the share
    of the own products' time fall as terms are added (attention alone >= at copy speed >= with
    the passes at their speed), and the share-of-ceiling line is f times each of them, f the
    printed ratio of two perfect lanes of the model's products to the ceiling."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bounds.py"), "--window", "128", "--rounds", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    alone = float(re.search(r"all else free, perfect lanes\): ([0-9.]+)", out).group(1))
    present, copy = map(float, re.search(r"present speed: ([0-9.]+); with every pass at copy speed: ([0-9.]+)",
                                         out).groups())
    f = float(re.search(r"on two perfect lanes ([0-9.]+) of the ceiling", out).group(1))
    c_alone, c_present, c_copy = map(float, re.search(
        r"at most: ([0-9.]+) with the attention alone, ([0-9.]+) with the passes at their present speed, "
        r"([0-9.]+) with every pass at copy speed", out).groups())
    assert 0 < present < copy < alone < 1
    for c, b in ((c_alone, alone), (c_present, present), (c_copy, copy)):
        assert abs(c - f * b) <= 0.006, (c, f, b)  # f printed to 2 decimals, the bounds to 3
