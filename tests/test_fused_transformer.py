"""The transformer's compiled passes and the blocked ideal kernel against their NumPy references
on random inputs (correctness only: no timing here)."""
import numpy as np
import pytest

from analogattn.attention import base
from analogattn.attention.cache import KVCache
from analogattn.transformer import fused, ops

rng = np.random.default_rng(11)


def test_rms_norm_equals_numpy():
    x = rng.standard_normal((37, 579)).astype(np.float32) * 3
    w = rng.standard_normal(579).astype(np.float32)
    out = np.empty_like(x)
    fused.rms_norm_into(x, w, np.float32(1e-5), out)
    np.testing.assert_allclose(out, ops.rms_norm(x, w, 1e-5), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("n_q,n_kv,d", [(9, 3, 64), (4, 4, 8), (6, 2, 6)])
def test_rope_split_is_bit_identical_to_numpy(n_q, n_kv, d):
    T = 23
    qkv = rng.standard_normal((T, (n_q + 2 * n_kv) * d)).astype(np.float32)
    cos, sin = ops.rope_tables(np.arange(5, 5 + T), d, 10000.0)
    q = np.empty((n_q, T, d), np.float32)
    k = np.empty((n_kv, T, d), np.float32)
    v = np.empty((n_kv, T, d), np.float32)
    fused.rope_split(qkv, cos, sin, n_q, n_kv, d, q, k, v)
    split = lambda a, n: a.reshape(T, n, d).transpose(1, 0, 2)  # noqa: E731
    nq, nk = n_q * d, n_kv * d
    assert np.array_equal(q, ops.rope_interleaved(split(qkv[:, :nq], n_q), cos, sin))
    assert np.array_equal(k, ops.rope_interleaved(split(qkv[:, nq:nq + nk], n_kv), cos, sin))
    assert np.array_equal(v, split(qkv[:, nq + nk:], n_kv))


def test_swiglu_equals_numpy():
    f = 301
    gu = (rng.standard_normal((19, 2 * f)) * 8).astype(np.float32)
    gu[0, :4] = [-100, 100, 0, -87.5]
    out = np.empty((19, f), np.float32)
    fused.swiglu_into(gu, f, out)
    np.testing.assert_allclose(out, ops.silu(gu[:, :f]) * gu[:, f:], rtol=3e-6, atol=1e-30)


@pytest.mark.parametrize("mask", [base.Mask("causal"), base.Mask("sliding", 7), base.Mask("bidirectional")])
@pytest.mark.parametrize("past,new", [(0, 150), (40, 1), (0, 1), (30, 70), (10, 300)])  # 300: the two-thread path
def test_blocked_ideal_equals_reference(mask, past, new):
    H, n_kv, d = 6, 2, 16
    cache = KVCache(n_kv, d)
    ker = base.IdealAttention()
    ker.block = 32  # several blocks, one partial
    if past:
        k0 = rng.standard_normal((n_kv, past, d)).astype(np.float32)
        v0 = rng.standard_normal((n_kv, past, d)).astype(np.float32)
        cache.append(k0, v0, np.arange(past))
    q = (rng.standard_normal((H, new, d)) * 3).astype(np.float32)
    k = (rng.standard_normal((n_kv, new, d)) * 3).astype(np.float32)
    v = rng.standard_normal((n_kv, new, d)).astype(np.float32)
    pos = np.arange(past, past + new)
    out = ker(q, k, v, pos, mask, cache, 0)
    ref = base.reference_attention(q, cache.keys, cache.values, pos, cache.positions, mask)
    assert out.shape == (H, new, d)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5)


def test_compiled_llama_equals_numpy_reference(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import write_tiny_gguf

    from analogattn.transformer import models
    from analogattn.transformer.loaders import load
    write_tiny_gguf(tmp_path / "tiny.gguf")
    m = load(str(tmp_path / "tiny.gguf"))
    ids = np.arange(40) % m.config.vocab
    got = m.forward(ids, logits="none")
    ref = models._llama_reference(m, ids, np.arange(ids.size), m.new_caches(base.IdealAttention()),
                                  base.IdealAttention(), m.default_mask())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
def test_decode_store_gemv_equals_dequantised_product(kind):
    from analogattn.transformer.decode_store import QuantMatrix
    n_out, n_in = 70, 96
    if kind == "Q4_1":
        qs = rng.integers(0, 256, (n_out, n_in // 32, 16), dtype=np.uint8)
        sc = (rng.standard_normal((n_out, n_in // 32, 2)) * 0.05).astype(np.float16).astype(np.float32)
    else:
        qs = rng.integers(-128, 128, (n_out, n_in // 32, 32)).astype(np.int8)
        sc = (rng.random((n_out, n_in // 32)) * 0.01).astype(np.float16).astype(np.float32)
    m = QuantMatrix(kind, qs, sc, n_in)
    w = m.dequantized()
    assert w.shape == (n_in, n_out)
    x = rng.standard_normal(n_in).astype(np.float32)
    y = m.gemv(x, np.empty(n_out, np.float32))
    np.testing.assert_allclose(y, (x.astype(np.float64) @ w.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_quantmatrix_reads_gguf_blocks_as_gguf_dequantises():
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize, quantize

    from analogattn.transformer.decode_store import QuantMatrix
    w = rng.standard_normal((48, 64)).astype(np.float32)
    for t in (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0):
        raw = quantize(w, t)

        class T:  # the two attributes of a reader tensor that QuantMatrix reads
            tensor_type, data = t, raw
        m = QuantMatrix.from_gguf(T)
        assert np.array_equal(m.dequantized(), dequantize(raw, t).astype(np.float32).T)
