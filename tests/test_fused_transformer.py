"""The transformer's compiled passes and the blocked ideal kernel against their NumPy references
on random inputs (correctness only: no timing here)."""
import contextlib

import numpy as np
import pytest

from analogattn.attention import base
from analogattn.attention.cache import KVCache
from analogattn.attention._fused.common import exp_rows
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


def test_swiglu_rounds_as_before():
    """Bit for bit what the compiled one-loop formula has always given (exp32, then, fast-math
    reassociated, (gate x up) / (1 + e) in float32), on a row slice of a wider block as the
    forward pass passes it: a faster form that rounds otherwise (e.g. a vectorised reciprocal,
    or gate / (1 + e) first) would move every perplexity."""
    f = 1536
    big = (rng.standard_normal((40, 2 * f + 8)) * 6).astype(np.float32)
    gu = big[3:35, :2 * f]
    e = np.empty_like(gu[:, :f])
    exp_rows(np.ascontiguousarray(-gu[:, :f]), e)
    want = (gu[:, :f] * gu[:, f:]) / (np.float32(1.0) + e)
    out = np.empty((60, f), np.float32)[10:42]
    fused.swiglu_into(gu, f, out)
    assert np.array_equal(out, want)


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
    for n in (5, 40, 77):  # 5: one piece on this thread; 40, 77: rows split over two lanes (77: uneven)
        ids = (np.arange(n) * 7) % m.config.vocab
        got = m.forward(ids, logits="none")
        ref = models._llama_reference(m, ids, np.arange(ids.size), m.new_caches(base.IdealAttention()),
                                      base.IdealAttention(), m.default_mask())
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(m.forward(ids), ref @ m.w["lm_head"], rtol=1e-4, atol=1e-4)


def test_lanes_split_covers_every_row_once_and_reraises():
    from analogattn.transformer import lanes
    for n in (0, 1, 31, 32, 33, 1000):
        hits = np.zeros(n, int)

        def mark(r0, r1):
            hits[r0:r1] += 1
        lanes.split(mark, n)
        assert (hits == 1).all(), n

    seen = []

    def fail_helper(r0, r1):
        if r0 > 0:
            raise ValueError("helper lane")
        seen.append((r0, r1))
    with pytest.raises(ValueError, match="helper lane"):
        lanes.split(fail_helper, 100)
    assert seen == [(0, 50)]  # this lane finished its rows before the helper's error surfaced

    done = []

    def fail_here(r0, r1):
        if r0 == 0:
            raise KeyError("this lane")
        import time
        time.sleep(0.05)
        done.append(r0)
    with pytest.raises(KeyError):
        lanes.split(fail_here, 100)
    after = list(done)  # [50] if the helper had started (split waited for it), [] if taken back
    import time
    time.sleep(0.1)
    assert done == after and after in ([], [50])  # nothing of split's still running after it raised


def test_lanes_take_back_work_the_busy_helper_has_not_started():
    import threading
    from analogattn.attention.base import helper_thread
    from analogattn.transformer import lanes
    if base.lanes() < 2:
        pytest.skip("one lane in this process")
    gate = threading.Event()
    blocker = helper_thread("lane").submit(gate.wait, 10)  # the helper lane is busy (another process)
    try:
        who = []
        lanes.split(lambda r0, r1: who.append((r0, r1, threading.current_thread().name)), 1000)
        me = threading.current_thread().name
        assert sorted(who) == [(0, 500, me), (500, 1000, me)]  # both halves here, without waiting
        assert not blocker.done()
    finally:
        gate.set()
        blocker.result()


def test_share_does_every_item_once_and_reraises():
    """base.share: every item done exactly once, by lane 0 (this thread) or 1 (the helper), with
    each lane's own index; an error in either lane surfaces and the other takes nothing more; a
    busy helper leaves every item to this thread, which does not wait for it."""
    import threading
    import time
    if base.lanes() < 2:
        pytest.skip("one lane in this process")
    me = threading.current_thread().name
    done = []

    def work(lane, item):
        time.sleep(0.002)  # long enough that both lanes get items
        done.append((item, lane, threading.current_thread().name))
        return item * 10
    out = base.share(work, range(40))
    assert sorted(out) == [i * 10 for i in range(40)]
    assert sorted(i for i, _, _ in done) == list(range(40))
    assert all((lane == 0) == (name == me) for _, lane, name in done)
    assert {lane for _, lane, _ in done} == {0, 1}

    taken = []

    def fail_helper(lane, item):
        if lane == 1:
            raise ValueError("helper lane")
        time.sleep(0.01)
        taken.append(item)
    with pytest.raises(ValueError, match="helper lane"):
        base.share(fail_helper, range(200))
    assert len(taken) < 199  # this lane stopped taking items once the helper failed

    import gc
    import weakref
    gate = threading.Event()
    blocker = base.helper_thread("lane").submit(gate.wait, 10)  # the helper is busy
    try:
        buf = np.zeros(5)
        ref = weakref.ref(buf)

        def mark(lane, item, out=buf):
            out[item] = 1.0
            return item, lane
        who = base.share(mark, range(5))
        assert sorted(who) == [(i, 0) for i in range(5)] and not blocker.done()
        assert buf.sum() == 5.0
        del buf, mark
        gc.collect()
        assert ref() is None, "the cancelled hand-off still holds the work's buffer"
    finally:
        gate.set()
        blocker.result()


def test_ideal_two_lanes_equal_one_lane_bit_for_bit():
    """The ideal kernel's blocks shared over two lanes (largest first, as they come free) give the
    one-lane numbers exactly: each block is computed whole by one lane, in its own scratch."""
    H, n_kv, d, T = 6, 2, 32, 700
    q = rng.standard_normal((H, T, d)).astype(np.float32)
    k = rng.standard_normal((n_kv, T, d)).astype(np.float32)
    v = rng.standard_normal((n_kv, T, d)).astype(np.float32)
    outs = []
    for one in (True, False):
        ker = base.IdealAttention()
        ker.block = 64
        with base.single_lane() if one else contextlib.nullcontext():
            outs.append(ker(q, k, v, np.arange(T), base.Mask("causal"), KVCache(n_kv, d), 0).copy())
    assert np.array_equal(outs[0], outs[1])
    ref = base.reference_attention(q, k, v, np.arange(T), np.arange(T), base.Mask("causal"))
    np.testing.assert_allclose(outs[1], ref, rtol=1e-4, atol=2e-5)


def test_taken_back_work_does_not_keep_its_buffers_alive():
    """A hand-off the busy helper never started stays in its queue until the helper gets there;
    it must not keep the work's closure (and the buffer it writes: a forward pass's logits, which
    the next call reuses only when nobody else holds them) alive meanwhile."""
    import gc
    import threading
    import weakref
    from analogattn.attention.base import helper_thread
    from analogattn.transformer import lanes
    if base.lanes() < 2:
        pytest.skip("one lane in this process")
    gate = threading.Event()
    blocker = helper_thread("lane").submit(gate.wait, 10)
    try:
        buf = np.zeros(1000)
        ref = weakref.ref(buf)

        def fill(r0, r1, out=buf):
            out[r0:r1] = 1.0
        lanes.split(fill, 1000)  # both halves here: the helper is busy
        assert buf.sum() == 1000.0
        del buf, fill
        gc.collect()
        assert ref() is None, "the cancelled hand-off still holds the work's buffer"
        assert not blocker.done()
    finally:
        gate.set()
        blocker.result()


@pytest.mark.parametrize("seed", range(3))
def test_softmax_ranges_equals_numpy(seed):
    from analogattn.attention._fused import softmax_ranges
    r = np.random.default_rng(seed)
    tb, g, S = 13, 3, 45
    a = r.integers(0, S, tb)
    b = np.minimum(a + r.integers(0, 30, tb), S)
    a[0], b[0] = 5, 5  # a row that sees nothing
    a[1], b[1] = 0, S  # every key
    a[2], b[2] = 44, 45  # one key, at the end (no 8-wide part)
    sc = (r.standard_normal((g * tb, S)) * 20).astype(np.float32)
    scale = np.float32(0.37)
    ref = np.full_like(sc, -np.inf)
    for i in range(g * tb):
        t = i % tb
        ref[i, a[t]:b[t]] = sc[i, a[t]:b[t]] * scale
    m = ref.max(axis=1, keepdims=True)
    m[~np.isfinite(m)] = 0
    e = np.exp(ref - m)
    tot = softmax_ranges(sc, a.astype(np.int64), b.astype(np.int64), tb, scale)
    # float32 rounding of arguments up to |x| ~ 40 (2.4e-6) plus exp32 itself (1e-6)
    np.testing.assert_allclose(sc, e, rtol=5e-6, atol=1e-30)
    want = e.sum(axis=1)
    want[want == 0] = 1
    np.testing.assert_allclose(tot, want, rtol=2e-6)


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


def test_nll_rows_equals_numpy_log_softmax():
    r = np.random.default_rng(5)
    V = 1003  # not a multiple of the 8 lanes
    z = (r.standard_normal((37, V)) * 6).astype(np.float32)
    z[3, 17] = 60.0  # a dominant logit (its own NLL ~ 0)
    tgt = r.integers(0, V, 37)
    tgt[3] = 17
    out = np.empty(37)
    fused.nll_rows(z, tgt, out)
    want = -ops.log_softmax(z.astype(np.float64))[np.arange(37), tgt]
    # float32 logits, exp32 (1e-6 relative), float64 sum: the NLL to ~1e-6 absolute
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=2e-6)
    assert out[3] < 1e-6


def test_token_nll_equals_full_logits(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import write_tiny_gguf

    from analogattn.transformer.loaders import load
    write_tiny_gguf(tmp_path / "tiny.gguf")
    m = load(str(tmp_path / "tiny.gguf"))
    for n in (3, 40, 150):  # one lane; two lanes; two lanes with several chunks each
        ids = (np.arange(n + 1) * 5) % m.config.vocab
        h = m.forward(ids[:-1], logits="none")
        got = m.token_nll(h, ids[1:], chunk=16)
        lp = ops.log_softmax((h @ m.w["lm_head"]).astype(np.float64))
        np.testing.assert_allclose(got, -lp[np.arange(n), ids[1:]], rtol=1e-6, atol=2e-6)


def test_lane_count_follows_the_process_core_budget(monkeypatch):
    from analogattn.transformer import lanes
    for env, want in (({"ANALOGATTN_LANES": "1"}, 1), ({"ANALOGATTN_LANES": "2", "OMP_NUM_THREADS": "1"}, 2),
                      ({"OMP_NUM_THREADS": "1"}, 1)):
        monkeypatch.delenv("ANALOGATTN_LANES", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert base._default_lanes() == want, env
    monkeypatch.setattr(base, "LANES", 1)
    import threading
    where = []
    lanes.split(lambda r0, r1: where.append((r0, r1, threading.current_thread().name)), 1000)
    assert where == [(0, 1000, threading.current_thread().name)]  # one lane: all rows here, no helper


@pytest.mark.parametrize("kind", ["Q4_1", "Q8_0"])
def test_decode_gemv_split_over_lanes_is_bit_identical(monkeypatch, kind):
    from analogattn.transformer import decode_store
    n_out, n_in = 301, 64  # not a whole number of row groups: the last group padded
    if kind == "Q4_1":
        qs = rng.integers(0, 256, (n_out, n_in // 32, 16), dtype=np.uint8)
        sc = (rng.standard_normal((n_out, n_in // 32, 2)) * 0.05).astype(np.float32)
    else:
        qs = rng.integers(-128, 128, (n_out, n_in // 32, 32)).astype(np.int8)
        sc = (rng.random((n_out, n_in // 32)) * 0.01).astype(np.float32)
    m = decode_store.QuantMatrix(kind, qs, sc, n_in)
    x = rng.standard_normal(n_in).astype(np.float32)
    monkeypatch.setattr(base, "LANES", 1)
    whole = m.gemv(x, np.full(n_out, np.nan, np.float32))
    monkeypatch.setattr(base, "LANES", 2)
    monkeypatch.setattr(decode_store, "LANE_ROWS", 100)  # 5 groups of 64 rows: split 3 / 2 over the lanes
    split = m.gemv(x, np.full(n_out, np.nan, np.float32))
    assert np.array_equal(split, whole) and np.isfinite(whole).all()
    # each row against its own float64 sum (rows of the padded last group included)
    want = x.astype(np.float64) @ m.dequantized().astype(np.float64)
    np.testing.assert_allclose(whole, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_single_lane_is_per_thread_and_restored():
    import threading
    from analogattn.transformer import lanes
    where = []
    with base.single_lane():
        assert base.lanes() == 1
        lanes.split(lambda r0, r1: where.append((r0, r1, threading.current_thread().name)), 1000)
        other = []
        t = threading.Thread(target=lambda: other.append(base.lanes()))
        t.start()
        t.join()
        assert other == [base.LANES]  # another thread keeps the process's count
    assert where == [(0, 1000, threading.current_thread().name)]
    assert base.lanes() == base.LANES


@pytest.mark.parametrize("mask", [base.Mask("causal"), base.Mask("sliding", 5), base.Mask("bidirectional")])
def test_decode_pass_equals_blocked_path(mask):
    H, n_kv, d, past = 6, 2, 16, 37
    k0 = rng.standard_normal((n_kv, past, d)).astype(np.float32)
    v0 = rng.standard_normal((n_kv, past, d)).astype(np.float32)
    q = (rng.standard_normal((H, 1, d)) * 3).astype(np.float32)
    k = rng.standard_normal((n_kv, 1, d)).astype(np.float32)
    v = rng.standard_normal((n_kv, 1, d)).astype(np.float32)
    outs = []
    for decode_max in (10 ** 6, 0):  # the one-pass decode, then the blocked path (BLAS products)
        cache = KVCache(n_kv, d)
        cache.append(k0, v0, np.arange(past))
        ker = base.IdealAttention()
        ker.decode_max = decode_max
        outs.append(ker(q, k, v, np.array([past]), mask, cache, 0))
    assert outs[0].shape == outs[1].shape == (H, 1, d)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)  # summation order only


def test_forward_never_overwrites_an_array_the_caller_holds(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import write_tiny_gguf

    from analogattn.transformer.loaders import load
    write_tiny_gguf(tmp_path / "tiny.gguf")
    m = load(str(tmp_path / "tiny.gguf"))
    ids = (np.arange(50) * 3) % m.config.vocab
    a = m.forward(ids)
    keep = a.copy()
    h = m.forward(ids, logits="none")
    hk = h.copy()
    b = m.forward(ids[::-1].copy())  # other logits while a and h are held
    assert b is not a and np.array_equal(a, keep) and np.array_equal(h, hk)
    row = b[-1]  # a view keeps b's buffer held too
    addr = b.__array_interface__["data"][0]
    del b
    c = m.forward(ids)
    assert c.__array_interface__["data"][0] != addr and row.base is not None
    addr = c.__array_interface__["data"][0]
    del c
    d = m.forward(ids)  # released: the same buffer again, the values of this call
    assert d.__array_interface__["data"][0] == addr
    np.testing.assert_array_equal(d, keep)
