"""The pruning kernel's fast path (comparator rules: (block, KV head) tasks on two lanes, each in
chunks of one head's queries that see only their causal key range) against the block-by-block
reference path (``fast = False``, the NumPy/compiled code it replaced), and its compiled pass
against the reference pass."""
import dataclasses

import numpy as np
import pytest

from analogattn.attention import _fused
from analogattn.attention._fused import normals
from analogattn.attention._fused import sprint as _fused_sprint
from analogattn.attention._fused.sprint import dac_pairs, decide_chunk
from analogattn.attention.base import Mask
from analogattn.attention.recorders import KeepLog
from analogattn.attention.sprint import Crossbar, SprintAttention, SprintConfig, SprintScales
from analogattn.attention.sprint import kernel as sprint_kernel

H, KV, d = 6, 2, 64


def _xbar():
    """A column with every modelled effect on (IR-drop weights, loss, variation, read noise,
    comparator offset and noise), so every term of the comparator input is exercised."""
    x = Crossbar.ideal(rows=64)
    rng = np.random.default_rng(5)
    return dataclasses.replace(x, weights=1 + 0.01 * rng.standard_normal(64), c2=-80.0, sigma_g=0.05,
                               noise_rel=0.004, cmp_mu=1e-4, cmp_offset=5e-3, cmp_noise=3e-4)


def _run(fast, cfg, mask, theta, block=64, chunk=16):
    rng = np.random.default_rng(1234)
    T = 300
    q = rng.standard_normal((H, T, d)).astype(np.float32)
    k = rng.standard_normal((KV, T, d)).astype(np.float32)
    v = rng.standard_normal((KV, T, d)).astype(np.float32)
    pos = np.arange(T)
    log = []
    sc = SprintScales(np.full((1, KV), 0.5), None, np.full((1, H), theta))
    ker = SprintAttention(_xbar(), cfg, sc, 1, recorder=KeepLog(log), block=block)
    ker.fast, ker.chunk = fast, chunk
    cache = ker.new_cache(0, KV, d)
    outs = [ker(q[:, :200], k[:, :200], v[:, :200], pos[:200], mask, cache, 0)]  # prefill, several blocks
    outs += [ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], pos[t:t + 1], mask, cache, 0) for t in range(200, 205)]
    outs.append(ker(q[:, 205:], k[:, 205:], v[:, 205:], pos[205:], mask, cache, 0))  # a second prefill
    return np.concatenate(outs, axis=1), log, ker.stats


CASES = [("anchor", {}, Mask(), 1.5), ("fixed", {}, Mask(), 0.5), ("anchor", dict(variation=False, circuit_noise=False),
                                                                    Mask(), 1.5),
         ("anchor", dict(window=64, key_bits=3, dac_bits=5), Mask(), 1.5), ("fixed", {}, Mask("sliding", 50), 0.5),
         ("anchor", dict(sink=2, local=8), Mask("sliding", 70), 1.5), ("anchor", {}, Mask("bidirectional"), 1.5)]


@pytest.mark.parametrize("rule,kw,mask,theta", CASES)
def test_fast_path_equals_the_block_path(rule, kw, mask, theta):
    """Same random draws in the same order, so the same decisions; the products run over other
    row/key partitions (chunks, the causal key range only) and the softmax sums over shorter
    rows, so outputs and the mass statistic agree to float32 rounding, not bit for bit: a
    float32 64-term dot product or a 300-term sum reordered moves by a few ulp, ~1e-6
    relative; 1e-5 of the largest output allows for the division by the row sum."""
    cfg = SprintConfig(rule=rule, **kw)
    ref, ref_log, ref_st = _run(False, cfg, mask, theta)
    got, log, st = _run(True, cfg, mask, theta)
    assert len(log) == len(ref_log)
    flips = 0
    flipped = np.zeros(ref.shape[:2], bool)  # (head, query) rows with a flipped decision
    g = H // KV
    for a, b in zip(ref_log, log):
        assert a[:2] == b[:2] and np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
        diff = a[4] != b[4]
        flips += int(diff.sum())
        flipped[a[1] * g:(a[1] + 1) * g, a[2]] |= diff.any(axis=2)
    # a decision may flip only where the comparator input is within rounding of the threshold:
    # of these 2-4 x 10^5 decisions at most one does (measured: one, in the noiseless case)
    assert flips <= 1
    kept = np.concatenate([a[4].ravel() for a in ref_log])
    assert 0.05 < kept.mean() < 0.95  # the comparators decide (neither all kept nor all pruned)
    ok = ~flipped
    assert np.abs(got - ref)[ok].max() <= 1e-5 * np.abs(ref).max()
    for f in dataclasses.fields(ref_st):
        a, b = getattr(ref_st, f.name), getattr(st, f.name)
        if f.name == "mass":  # a sum of per-row float32 ratios (a flip moves one row's share)
            np.testing.assert_allclose(b, a, rtol=1e-6 if flips == 0 else 1e-4)
        else:  # counts: equal, or off by the flipped decisions
            assert np.abs(a - b).max() <= flips, f.name


def test_two_lanes_equal_one_lane(monkeypatch):
    """Which lane runs a task (and which lane makes a block's masks) does not change it:
    bit-identical to every task on this thread. The calls here are below the work at which a
    call goes to two lanes, so that threshold is lowered; the helper lane must take tasks."""
    cfg = SprintConfig(rule="anchor")
    monkeypatch.setattr(SprintAttention, "LANE_MIN_WORK", 0)
    ran = []
    task = SprintAttention._task

    def spy(self, *a):
        ran.append(a[-2])  # the lane
        return task(self, *a)
    monkeypatch.setattr(SprintAttention, "_task", spy)
    two = _run(True, cfg, Mask(), 1.5)
    assert 1 in ran and 0 in ran
    ran.clear()

    class Inline:
        def submit(self, f, *a):
            class Done:
                def cancel(self):
                    return True  # never started: not waited for

                def result(self):
                    return None
            return Done()  # the helper takes nothing: this thread runs every task
    monkeypatch.setattr(sprint_kernel, "helper_thread", lambda name: Inline())
    one = _run(True, cfg, Mask(), 1.5)
    assert set(ran) == {0}
    assert np.array_equal(two[0], one[0])
    assert all(np.array_equal(a[4], b[4]) for a, b in zip(two[1], one[1]))
    assert np.array_equal(two[2].mass, one[2].mass)


@pytest.mark.parametrize("anchor", [True, False])
def test_decide_chunk_equals_decide_softmax(anchor):
    """decide_chunk on key range [lk, lk + L) of chunks of queries of both heads (the keys outside
    not allowed for these rows) against decide_softmax on whole rows with the NumPy row constants: same decisions and
    kept/new counts (element-wise the same float32 formula), kept sums and mass to float32
    rounding (sums over L instead of S terms, reordered: 1e-6 relative)."""
    rng = np.random.default_rng(3)
    g, T, S, lk, L = 2, 24, 80, 10, 50
    n = g * T
    e = rng.standard_normal((n, S)).astype(np.float32)
    iw = rng.standard_normal((n, S)).astype(np.float32)
    sab = (np.abs(rng.standard_normal((n, S))) + np.abs(iw)).astype(np.float32)
    allowed = np.zeros((T, S), bool)
    allowed[:, lk:lk + L] = rng.random((T, L)) < 0.8
    forced = np.zeros((T, S), bool)
    forced[np.arange(T), lk + rng.integers(0, L, T)] = True
    allowed |= forced
    bias = np.where(allowed, np.float32(0), np.float32(-np.inf))
    off = (0.1 * rng.standard_normal(S)).astype(np.float32)
    pool = rng.standard_normal(n * S + 100).astype(np.float32)
    base = rng.standard_normal(n).astype(np.float32)
    vpl = (0.5 + rng.random(n)).astype(np.float32)
    theta = rng.random(g) * 2
    mu = np.float32(0.01)
    r, c2, k2, cn2, start = 0.8, 0.05, 0.3, 0.01, 37
    f_rows, f_cols = np.nonzero(forced)
    ptr = np.searchsorted(f_rows, np.arange(T + 1))
    if anchor:  # the kernel's NumPy row constants
        thr = (_fused.anchor_max(e, ptr, f_cols, T) - np.repeat(theta, T)).astype(np.float32)
    else:
        thr = np.repeat(theta, T).astype(np.float32)
    row = (base - thr * vpl - mu).astype(np.float32)
    e1, k1 = e.copy(), np.empty((n, S), bool)
    want = _fused.decide_softmax(e1, iw, sab, row, off, r, c2, k2, cn2, pool, start, bias, allowed, forced, T, k1)
    k2_ = np.ones((n, S), bool)  # decide_chunk must clear the keys outside its range
    tot, mass = np.empty(n, np.float32), np.empty(n)
    kept, new = np.empty(n, np.int64), np.empty(n, np.int64)
    e2 = e.copy()
    for t0 in range(0, T, 8):  # chunks of 8 queries of both heads, interleaved (row q: query t0 + q // g, head q % g)
        rows = [h * T + t for t in range(t0, t0 + 8) for h in range(g)]
        ch = np.ascontiguousarray(e2[rows, lk:lk + L])
        both = np.stack([iw[rows, lk:lk + L], sab[rows, lk:lk + L]], axis=1).reshape(2 * len(rows), L)
        n_bad = decide_chunk(ch, both, t0, g, T, S, lk, anchor, ptr, f_cols, theta, base, vpl, mu, off, r, c2, k2, cn2,
                             pool, start, bias, allowed, forced, k2_, tot, mass, kept, new)
        assert n_bad == np.count_nonzero(want[0][rows] < 1e-30)
        e2[rows, lk:lk + L] = ch
    assert np.array_equal(k1, k2_) and 0.2 < k1[:, lk:lk + L].mean() < 0.8
    assert np.array_equal(kept, want[2]) and np.array_equal(new, want[3])
    np.testing.assert_allclose(tot, want[0], rtol=1e-6)
    np.testing.assert_allclose(mass, want[1], rtol=1e-6)
    np.testing.assert_allclose(e2[:, lk:lk + L], e1[:, lk:lk + L], rtol=1e-6, atol=1e-30)


def test_dac_lhs_of_a_row_range_equals_the_whole_rows():
    """Rows r0..r1 of the drive (a key spanning several columns) are the same values as those
    columns of the whole drive (element-wise, no reduction except the max: bit-identical)."""
    rng = np.random.default_rng(4)
    n, D, M = 7, 100, 15
    qe = rng.standard_normal((n, D)).astype(np.float32)
    b_dac = (np.linspace(0, 1, M + 1) ** 1.3).astype(np.float32)
    w = (1 + 0.01 * rng.standard_normal(D)).astype(np.float32)
    whole = np.empty((2 * n, D), np.float32)
    u = _fused.dac_lhs(qe, M, b_dac, w, 0, D, whole)
    part = np.empty((2 * n, 36), np.float32)
    u2 = _fused.dac_lhs(qe, M, b_dac, w[:36], 64, 100, part)
    assert np.array_equal(u, u2)
    b = whole[n:, 64:]  # the factors b of those rows
    assert np.array_equal(part[n:], b)
    # the signed operand with the tile's own row weights (its first 36)
    assert np.array_equal(part[:n], np.where(qe[:, 64:] >= 0, b, -b) * w[:36])


def test_dac_pairs_equal_dac_lhs():
    """The side-by-side drive is the same values as dac_lhs's stacked one (bit-identical)."""
    rng = np.random.default_rng(6)
    n, D, M = 9, 64, 15
    qe = rng.standard_normal((n, D)).astype(np.float32)
    qe[3] = 0  # a query of zeros: full scale 1
    b_dac = (np.linspace(0, 1, M + 1) ** 1.3).astype(np.float32)
    w = (1 + 0.01 * rng.standard_normal(D)).astype(np.float32)
    stacked = np.empty((2 * n, D), np.float32)
    u = _fused.dac_lhs(qe, M, b_dac, w, 0, D, stacked)
    pairs = np.empty((n, 2, D), np.float32)
    u2 = dac_pairs(qe, M, b_dac, w, pairs)
    assert np.array_equal(u, u2)
    assert np.array_equal(pairs[:, 0], stacked[:n]) and np.array_equal(pairs[:, 1], stacked[n:])


@pytest.mark.parametrize("chan,key_bits", [(True, 4), (False, 4), (True, 3)])
def test_key_cells_equal_the_codes_lookup(chan, key_bits):
    """The compiled key cells are a[level[codes + half]] of the kernel's NumPy codes, bit for bit
    (true divisions, the same rounding of the codes; keys well past both clip ends included)."""
    rng = np.random.default_rng(7)
    k = (3 * rng.standard_normal((KV, 50, d))).astype(np.float32)
    k[0, 0, :4] = [0.0, 1e9, -1e9, 0.25]
    sc = SprintScales(np.array([[0.4, 0.7]]), (0.5 + rng.random((1, KV, d))) if chan else None, np.full((1, H), 1.0))
    ker = SprintAttention(_xbar(), SprintConfig(key_bits=key_bits), sc, 1)
    half = 2 ** (key_bits - 1)
    want = ker.x.a[ker._level[ker._codes(k, 0) + half]]
    got = _fused_sprint.key_cells(k, sc.k_chan[0] if chan else None, sc.k_step[0], half, ker._level, ker.x.a)
    assert got.dtype == np.float64 and np.array_equal(got, want)
    assert len(np.unique(want)) > half  # the codes span the levels


@pytest.mark.parametrize("mask,window,rule", [(Mask(), 0, "anchor"), (Mask("sliding", 50), 0, "anchor"),
                                              (Mask(), 64, "fixed"), (Mask("bidirectional"), 0, "anchor"),
                                              (Mask("sliding", 30), 20, "fixed")])
def test_block_masks_equal_numpy(mask, window, rule):
    """The compiled block masks against the NumPy formulas of _attend_block (bit-identical: no
    arithmetic), the anchors' CSR list, the counts and each chunk's key range."""
    from analogattn.attention.base import visible
    qpos = np.arange(137, 237)  # a block of queries after a first prefill
    kpos = np.arange(40, 237)  # keys from a sliding window's lower edge
    sink, local, C = 2, 5, 16
    allowed = visible(mask, qpos, kpos, window)
    forced = qpos[:, None] == kpos[None, :]
    if rule == "anchor":
        forced |= (kpos[None, :] < sink) | (kpos[None, :] > qpos[:, None] - local)
    forced &= allowed
    got = _fused_sprint.block_masks(qpos, kpos, ("causal", "sliding", "bidirectional").index(mask.kind), mask.window,
                                    window, rule == "anchor", sink, local, C)
    al, fo, bias, ptr, cols, n_allowed, n_free, lk, hk = got
    assert np.array_equal(al, allowed) and np.array_equal(fo, forced)
    assert np.array_equal(bias, np.where(allowed, np.float32(0), np.float32(-np.inf))) and bias.dtype == np.float32
    rows, want_cols = np.nonzero(forced)
    assert np.array_equal(cols, want_cols) and np.array_equal(ptr, np.searchsorted(rows, np.arange(len(qpos) + 1)))
    assert np.array_equal(n_allowed, allowed.sum(axis=1)) and n_free == np.count_nonzero(allowed & ~forced)
    for c, t0 in enumerate(range(0, len(qpos), C)):
        seen = np.flatnonzero(allowed[t0:t0 + C].any(axis=0))
        assert (lk[c], hk[c]) == ((seen[0], seen[-1] + 1) if seen.size else (len(kpos), 0))


def test_compiled_float64_normals_equal_numpy():
    """standard_normal_f64 gives NumPy's deviates bit for bit (~10^3 of the 3 x 10^6 from the
    ziggurat's tail, many more from its wedges) and leaves the generator where NumPy's leaves
    it, a kept 32-bit half included (the next float32 draws agree)."""
    for seed in (0, 99):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        r1.standard_normal(3, np.float32)  # odd float32 count: half a 64-bit output kept
        r2.standard_normal(3, np.float32)
        a = r1.standard_normal((3, 1000, 1000))
        b = normals.standard_normal_f64(r2, (3, 1000, 1000))
        assert np.array_equal(a, b) and (np.abs(a) > 3.6541528853610088).sum() > 100
        assert r1.bit_generator.state == r2.bit_generator.state
        assert np.array_equal(r1.standard_normal(7, np.float32), r2.standard_normal(7, np.float32))
        assert np.array_equal(r1.standard_normal(5), normals.standard_normal_f64(r2, 5))
    other = np.random.Generator(np.random.MT19937(1))  # another bit generator: NumPy's own draw
    assert np.array_equal(normals.standard_normal_f64(other, 4),
                          np.random.Generator(np.random.MT19937(1)).standard_normal(4))


def test_a_busy_helper_is_not_waited_for():
    """When the lane helper has not started (busy, as on a loaded machine) this thread runs every
    task and returns without waiting for it: the same numbers, in far less than the helper's 5 s."""
    import time

    from analogattn.attention.base import helper_thread
    cfg = SprintConfig(rule="anchor")
    want = _run(True, cfg, Mask(), 1.5)
    busy = helper_thread("lane").submit(time.sleep, 5.0)
    try:
        t0 = time.perf_counter()
        got = _run(True, cfg, Mask(), 1.5)
        took = time.perf_counter() - t0
    finally:
        busy.result()
    assert np.array_equal(got[0], want[0]) and took < 4.0


def test_counts_equal_numpy():
    """Kept keys of a row and those the previous row did not keep, counted 8 flags to a word:
    NumPy's counts for every length 0-70 (no word, words and tails) at offsets 0-8 into the rows
    (unaligned word loads), with flag densities from none to all."""
    import numba as nb
    count = nb.njit(lambda a, b, o, n: _fused_sprint._counts(a[o:o + n], b[o:o + n]))
    rng = np.random.default_rng(21)
    for n in range(71):
        for o in range(9):
            pa, pb = rng.choice([0.0, 0.3, 0.9, 1.0], 2)
            a, b = rng.random(o + n + 9) < pa, rng.random(o + n + 9) < pb
            c, nw = count(a, b, o, n)
            assert c == a[o:o + n].sum() and nw == (a[o:o + n] & ~b[o:o + n]).sum(), (n, o)


def test_scatter_chunk_equals_numpy_division():
    """The compiled scatter writes chunk row q (query t0 + q // g of head q % g) to
    out[b0 + t, h0 + h] as o / tot, bit for bit NumPy's float32 division, and nothing else."""
    rng = np.random.default_rng(9)
    g, tb, R, d, T, H = 3, 20, 7, 64, 50, 9
    t0, b0, h0 = 5, 12, 3
    o = rng.standard_normal((g * R, d)).astype(np.float32)
    tot = (0.1 + 3 * rng.random(g * tb)).astype(np.float32)
    out = np.full((T, H, d), np.nan, np.float32)
    _fused_sprint.scatter_chunk(o, tot, t0, g, tb, out, b0, h0)
    want = np.full_like(out, np.nan)
    for q in range(g * R):
        t, h = t0 + q // g, q % g
        want[b0 + t, h0 + h] = o[q] / tot[h * tb + t]
    assert np.array_equal(out, want, equal_nan=True)


@pytest.mark.parametrize("chan", [False, True])
def test_task_operands_equal_numpy_and_dac_pairs(chan):
    """The interleaved operands are the NumPy products q / sqrt(d) and dac_pairs of the
    equalised queries (float32 x float64 channel scales rounded as NumPy does), bit for bit,
    row t g + h holding query t of head h."""
    rng = np.random.default_rng(10)
    Hq, T, g, b0, tb, M = 9, 40, 3, 8, 25, 15
    h0 = 3
    q = rng.standard_normal((Hq, T, d)).astype(np.float32)
    ch = (0.5 + rng.random(d)) if chan else None  # float64, as the calibration stores them
    b_dac = (np.linspace(0, 1, M + 1) ** 1.3).astype(np.float32)
    w = (1 + 0.01 * rng.standard_normal(d)).astype(np.float32)
    scale = np.float32(1 / np.sqrt(d))
    qs_t, lhs_t = np.empty((tb, g, d), np.float32), np.empty((tb, g, 2, d), np.float32)
    u = np.empty(g * tb, np.float32)
    lhs = np.empty((g * tb, 2, d), np.float32)
    _fused_sprint.task_operands(q, h0, b0, scale, ch, M, b_dac, w, qs_t, lhs_t, lhs, u)
    qg = q[h0:h0 + g, b0:b0 + tb].reshape(g * tb, d)  # block order i = h tb + t
    qe = np.ascontiguousarray(qg * ch if chan else qg, np.float32)
    pairs = np.empty((g * tb, 2, d), np.float32)
    u_want = dac_pairs(qe, M, b_dac, w, pairs)
    assert np.array_equal(u, u_want)
    assert np.array_equal(qs_t, (qg * scale).reshape(g, tb, d).transpose(1, 0, 2))
    assert np.array_equal(lhs_t, pairs.reshape(g, tb, 2, d).transpose(1, 0, 2, 3))
    assert np.array_equal(lhs, pairs)  # block order too


def test_block_masks_are_reused_only_for_the_same_positions_and_mask(monkeypatch):
    """A block's masks are made once and reused by later calls (the other layers of a forward
    pass) with the same query and key positions, mask and rule, and made afresh otherwise: the
    outputs and keep decisions are bit for bit those of a kernel that makes them every call."""
    cfg = SprintConfig(rule="anchor", sink=2, local=8)
    rng = np.random.default_rng(7)
    T = 200
    q = rng.standard_normal((2, H, T, d)).astype(np.float32)
    k = rng.standard_normal((2, KV, T, d)).astype(np.float32)
    v = rng.standard_normal((2, KV, T, d)).astype(np.float32)
    pos = np.arange(T)
    made = []
    orig = SprintAttention._block_arrays

    def counted(self, *a):
        made.append(self)
        return orig(self, *a)
    monkeypatch.setattr(SprintAttention, "_block_arrays", counted)

    def run(reuse):
        log = []
        sc = SprintScales(np.full((2, KV), 0.5), None, np.full((2, H), 1.5))
        ker = SprintAttention(_xbar(), cfg, sc, 2, recorder=KeepLog(log), block=64)
        ker.chunk = 16
        if not reuse:
            ker._reuse_layout = lambda positions, kpos, mask, extra, make, same=(): make()  # every call its own
        outs, n_made, masks = [], [], (Mask(), Mask("sliding", 50))
        caches = {mask: [ker.new_cache(i, KV, d) for i in range(2)] for mask in masks}
        for mask in masks:  # the sliding mask's prefill right after the causal one's
            for layer in (0, 1):  # the second layer: the same positions and mask
                before = len(made)
                outs.append(ker(q[layer, :, :150], k[layer, :, :150], v[layer, :, :150], pos[:150], mask,
                                caches[mask][layer], layer))
                n_made.append(len(made) - before)
        # the same query positions against other keys: the next queries on the causal caches,
        # then on a fresh cache that holds only their own keys
        for layer, cache in ((0, caches[masks[0]][0]), (1, ker.new_cache(1, KV, d))):
            before = len(made)
            outs.append(ker(q[layer, :, 150:190], k[layer, :, 150:190], v[layer, :, 150:190], pos[150:190], masks[0],
                            cache, layer))
            n_made.append(len(made) - before)
        for mask in masks:
            for t in range(190, 193):  # decode steps: new positions every step
                outs += [ker(q[i, :, t:t + 1], k[i, :, t:t + 1], v[i, :, t:t + 1], pos[t:t + 1], mask, caches[mask][i],
                             i) for i in (0, 1)]
        return outs, log, n_made
    got, log, n_made = run(True)
    ref, ref_log, ref_made = run(False)
    blocks = -(-150 // 64)
    assert ref_made == [blocks] * 4 + [1, 1]
    # the sliding mask's blocks are not the causal ones, nor a fresh cache's keys the others'
    assert n_made == [blocks, 0, blocks, 0, 1, 1]
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    assert len(log) == len(ref_log)
    assert all(np.array_equal(a[4], b[4]) for a, b in zip(log, ref_log))
