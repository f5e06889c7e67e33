"""The forward pass's weight products (analogattn.transformer.gemm): MKL when installed on an Intel
processor (or asked for), NumPy's BLAS otherwise, the same arithmetic to float32 rounding, rows
independent of the lane that computes them, and ANALOGATTN_GEMM checked before any work."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from analogattn.transformer import gemm

HAVE_MKL = gemm._mkl() is not None
AUTO_MKL = HAVE_MKL and gemm.cpu_vendor() == "GenuineIntel"  # what ANALOGATTN_GEMM=auto uses here
need_mkl = pytest.mark.skipif(not HAVE_MKL, reason="Intel MKL (the mkl extra) not installed")


def _bound(a, b):
    """Worst-case float32 error of a K-term sum of products: K eps sum_k |a_ik| |b_kj| (Higham)."""
    k = a.shape[1]
    return k * np.finfo(np.float32).eps * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))


@pytest.mark.parametrize("m, k, n", [(16, 576, 960), (37, 576, 3072), (128, 1536, 576), (257, 64, 513)])
@pytest.mark.parametrize("trans", [False, True])
def test_product_within_float32_rounding_of_float64(m, k, n, trans):
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    if trans:  # columns contiguous: a tied embedding's transpose (SmolLM2's logits)
        b = np.ascontiguousarray(b.T).T
        assert b.strides[0] == 4
    out = np.full((m, n), np.nan, np.float32)
    assert gemm.matmul(a, b, out) is out
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.all(np.abs(out - exact) <= _bound(a, b))
    # a wrong product (one term left out) is far outside that bound
    assert not np.all(np.abs(np.float32(exact - np.outer(a[:, 0], b[0])) - exact) <= _bound(a, b))


@need_mkl
def test_mkl_is_used_and_rows_do_not_depend_on_the_lane_split(monkeypatch):
    """Each lane multiplies its own rows: a row's result must not depend on where the split falls
    (lanes.split halves a window; odd windows give unequal halves)."""
    monkeypatch.setenv(gemm.ENV, "mkl")  # on any processor (auto takes MKL on Intel's only)
    assert gemm.engine() == "mkl"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((257, 576)).astype(np.float32)
    b = rng.standard_normal((576, 960)).astype(np.float32)
    whole = gemm.matmul(a, b, np.empty((257, 960), np.float32))
    for h in (16, 128, 129, 200, 241):
        parts = np.empty_like(whole)
        gemm.matmul(a[:h], b, parts[:h])
        gemm.matmul(a[h:], b, parts[h:])
        np.testing.assert_array_equal(parts, whole, err_msg=f"split at {h}")
    # MKL and OpenBLAS may block the sums differently, but stay within rounding of each other
    ref = np.matmul(a, b)
    assert np.abs(whole - ref).max() <= 2 * _bound(a, b).max()


def test_few_rows_overlap_and_strided_inputs_go_to_numpy():
    rng = np.random.default_rng(1)
    b = rng.standard_normal((64, 48)).astype(np.float32)
    one = rng.standard_normal((1, 64)).astype(np.float32)  # decoding: NumPy's BLAS, bit for bit
    np.testing.assert_array_equal(gemm.matmul(one, b, np.empty((1, 48), np.float32)), np.matmul(one, b))
    a = rng.standard_normal((40, 128)).astype(np.float32)[:, ::2]  # strided columns: not for sgemm
    np.testing.assert_array_equal(gemm.matmul(a, b, np.empty((40, 48), np.float32)), np.matmul(a, b))
    vec = rng.standard_normal(64).astype(np.float32)  # 1-D (64 >= MIN_ROWS elements): NumPy's semantics
    np.testing.assert_array_equal(gemm.matmul(vec, b, np.empty(48, np.float32)), np.matmul(vec, b))
    sq = rng.standard_normal((32, 32)).astype(np.float32)
    buf = sq.copy()
    gemm.matmul(buf, sq, buf)  # out is the input: NumPy copies first, sgemm would not
    np.testing.assert_array_equal(buf, np.matmul(sq, sq))


def test_numpy_engine_is_numpy_bit_for_bit(monkeypatch):
    monkeypatch.setenv(gemm.ENV, "numpy")
    assert gemm.engine() == "numpy"
    rng = np.random.default_rng(2)
    a = rng.standard_normal((300, 576)).astype(np.float32)
    b = rng.standard_normal((576, 960)).astype(np.float32)
    np.testing.assert_array_equal(gemm.matmul(a, b, np.empty((300, 960), np.float32)), np.matmul(a, b))


@pytest.mark.parametrize("value, must", [("bogus", "must be one of auto, mkl, numpy"), ("MKL!", "must be one of"),
                                         ("x" * 5000, "xxx...: must be one of")])
def test_cli_refuses_a_bad_engine_before_work(tmp_path, value, must):
    out = tmp_path / "r.json"
    env = dict(os.environ, ANALOGATTN_GEMM=value)
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", "run", "--model", "minilm", "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "ANALOGATTN_GEMM" in lines[0] and must in lines[0], r.stderr
    assert len(lines[0]) < 300  # a huge value is shown cut, not echoed whole
    assert not out.exists()


def test_asking_for_mkl_without_it_is_one_line(tmp_path):
    """ANALOGATTN_GEMM=mkl where MKL cannot load: exit 2 naming the variable (a fresh interpreter
    whose prefix has no libmkl_rt: sys.prefix pointed at an empty folder)."""
    code = ("import sys; sys.prefix = sys.base_prefix = %r\n"
            "from analogattn.transformer import gemm\n"
            "try:\n    gemm.check_environment()\nexcept gemm.GemmError as e:\n    print(e); raise SystemExit(2)\n"
            % str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ANALOGATTN_GEMM="mkl"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "ANALOGATTN_GEMM=mkl: Intel MKL is not installed" in r.stdout


def test_library_load_refuses_a_bad_engine_before_reading(tmp_path, monkeypatch):
    """A library caller gets the CLI's check too: loaders.load raises GemmError for a misspelt
    ANALOGATTN_GEMM before it opens the model (the file named does not even exist), and loads
    with a valid value."""
    from analogattn.transformer.loaders import load
    from tiny_models import write_tiny_gguf
    monkeypatch.setenv(gemm.ENV, "mlk")
    with pytest.raises(gemm.GemmError, match="ANALOGATTN_GEMM='mlk': must be one of auto, mkl, numpy"):
        load(str(tmp_path / "missing.gguf"))
    write_tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setenv(gemm.ENV, "numpy")
    assert load(str(tmp_path / "tiny.gguf")).weight_products == "numpy"


def test_run_reports_the_engine_and_both_engines_agree(tmp_path):
    """analogattn run names the BLAS of its weight products (JSON and last line); a Llama model's
    perplexity through MKL and through NumPy's BLAS agrees to float32 rounding. Rows of 40
    tokens: above gemm.MIN_ROWS, so the products do go to MKL when it is installed."""
    import json

    from conftest import run_cli
    from tiny_models import write_tiny_gguf
    write_tiny_gguf(tmp_path / "tiny.gguf")
    txt = tmp_path / "t.txt"
    txt.write_text("the cat sat in the hat and the dog ran to the log " * 30)
    got = {}
    for eng in ("auto", "numpy") + (("mkl",) if HAVE_MKL else ()):
        out = tmp_path / f"{eng}.json"
        r = run_cli("run", "--model", tmp_path / "tiny.gguf", "--text", txt, "--window", "40", "--json", out, "-q",
                    env_extra={gemm.ENV: eng})
        assert r.returncode == 0, r.stderr
        got[eng] = json.loads(out.read_text())
        assert r.stdout.strip().splitlines()[-1].endswith(f"weight products: {got[eng]['weight_products']}")
    assert got["auto"]["weight_products"] == ("mkl" if AUTO_MKL else "numpy")
    assert got["numpy"]["weight_products"] == "numpy"
    assert got["auto"]["perplexity"] == pytest.approx(got["numpy"]["perplexity"], rel=1e-5)
    if HAVE_MKL:
        assert got["mkl"]["weight_products"] == "mkl"
        assert got["mkl"]["perplexity"] == pytest.approx(got["numpy"]["perplexity"], rel=1e-5)
    assert got["auto"]["scored_tokens"] == got["numpy"]["scored_tokens"] > 100


def test_gpt2_reports_which_of_its_products_use_the_engine(tmp_path, monkeypatch):
    """GPT-2's layer products stay on NumPy's BLAS, its logits go through the engine: the label
    says so (and plainly 'numpy' with ANALOGATTN_GEMM=numpy)."""
    from tiny_models import write_tiny_gpt2

    from analogattn.transformer.loaders import load
    write_tiny_gpt2(tmp_path / "g")
    m = load(str(tmp_path / "g"))
    assert m.weight_products == ("mkl for the logits, numpy for the layers" if AUTO_MKL else "numpy")
    monkeypatch.setenv(gemm.ENV, "numpy")
    assert m.weight_products == "numpy"


@pytest.mark.parametrize("vendor, want", [("GenuineIntel", "mkl"), ("AuthenticAMD", "numpy"), ("", "numpy")])
def test_auto_takes_mkl_on_intel_processors_only(monkeypatch, vendor, want):
    """auto: MKL on an Intel processor when installed (on an AMD EPYC it was the slower engine,
    4.92 vs 4.38 s a prefill); mkl and numpy as asked whatever the processor. The product goes
    where engine() says: MKL's sgemm is called exactly when it is 'mkl'."""
    monkeypatch.setitem(gemm._state, "vendor", vendor)
    monkeypatch.delenv(gemm.ENV, raising=False)
    assert gemm.engine() == (want if HAVE_MKL else "numpy")
    calls = []
    if HAVE_MKL:
        real = gemm._mkl()
        monkeypatch.setitem(gemm._state, "sgemm", lambda *a: (calls.append(a[3:6]), real(*a))[1])
    a = np.ones((32, 8), np.float32)
    b = np.ones((8, 4), np.float32)
    np.testing.assert_array_equal(gemm.matmul(a, b, np.empty((32, 4), np.float32)), np.full((32, 4), 8.0))
    assert calls == ([(32, 4, 8)] if gemm.engine() == "mkl" else [])
    monkeypatch.setenv(gemm.ENV, "numpy")
    assert gemm.engine() == "numpy"
    if HAVE_MKL:
        monkeypatch.setenv(gemm.ENV, "mkl")
        assert gemm.engine() == "mkl"


def test_cpu_vendor_reads_proc_cpuinfo(monkeypatch):
    """The vendor is /proc/cpuinfo's first vendor_id (x86 Linux), read once."""
    monkeypatch.delitem(gemm._state, "vendor", raising=False)
    v = gemm.cpu_vendor()
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        assert v == ""
        return
    ids = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("vendor_id")]
    assert v == (ids[0] if ids else "")
