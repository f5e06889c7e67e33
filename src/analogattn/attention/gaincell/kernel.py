"""The gain-cell kernel: arrays in, arrays out (see the package docstring for the signal path).

Decay with a non-linear cell is kept separable by expanding the decayed cell current in a few
terms, I(V_eq + y D) ~ sum_i D^i f_i(y) (y = V - V_eq; :meth:`CellReadout.decay_terms`), and
D[t, s] = exp(-(t - s) T_tok / tau) = r_t k_s about a reference query: every term folds into the
query rows and key columns of one matrix product. Queries go in blocks that read only the keys
they may see (the score product in strips of queries over the keys the strip sees, a value
tile's product over the queries that read it: a causal block's masked triangle is not computed);
the per-element work after each matrix product is compiled (:mod:`.._fused`).
"""
from __future__ import annotations

import concurrent.futures
import math
import sys
import threading

import numpy as np

from .. import _fused
from ..base import AttentionKernel, blas_single_thread, helper_thread, lanes, share, visible
from ..cache import KVCache
from .._fused.gaincell import noisy_tile_acc, noisy_tile_rows, query_pulses, score_noise_strip, score_strip, \
    tile_parts_rows, tile_pulses_t
from .._fused.normals import standard_normal_f32, standard_normal_f64
from ..peripherals import adc, pulse
from ..recorders import Recorder
from .config import GainCellConfig
from .device import CellModel, CellReadout
from .scalers import Scalers


class GainCellCache(KVCache):
    """Stored cell voltages of K and V (written, before decay) and their write times, and each
    cell's fixed current deviation (mismatch; zero when off)."""

    token_arrays = KVCache.token_arrays + (("_dk", 1), ("_dv", 1))

    def __init__(self, n_kv_heads, head_dim, capacity=256):
        super().__init__(n_kv_heads, head_dim, capacity, dtype=np.float64)
        self._dk = np.zeros((n_kv_heads, capacity, head_dim), np.float32)
        self._dv = np.zeros((n_kv_heads, capacity, head_dim), np.float32)
        self._terms = {}  # "k" / "v": expansion terms kept per stored token (see terms())

    def append_mismatch(self, dk, dv):
        """The current deviations of the cells the next append() writes (call it first)."""
        self._write_ahead(_dk=dk, _dv=dv)

    def terms(self, ro, kind, which, j, mismatch, new):
        """``ro.terms`` of KV head j's stored keys (which "k") or values ("v") with their mismatch
        deviations when ``mismatch``, as the kernel reads them; ``new``: tokens the latest append
        added. A call that follows earlier ones (decode) keeps each token's terms, so later calls
        compute only their new tokens' (the same numbers: the tables' interpolation is per
        element); a first call (prefill) keeps nothing. Any voltage off the tables' grid (the
        terms of every token are then evaluated directly) turns the keeping off until reset."""
        v = (self.keys if which == "k" else self.values)[j]
        dev = (self.mismatch_k if which == "k" else self.mismatch_v)[j] if mismatch else None
        S = v.shape[0]
        ent = self._terms.get(which)
        if S == new or (ent is not None and ent["direct"]):
            if S == new:
                self._terms.pop(which, None)
            return ro.terms(v, kind, dev)
        if ent is None or ent["ro"] is not ro or ent["kind"] != kind or ent["mismatch"] != mismatch \
                or np.any(ent["filled"] > S):
            ent = self._terms[which] = dict(ro=ro, kind=kind, mismatch=mismatch, arr=None, direct=False,
                                           filled=np.zeros(self._k.shape[0], np.int64))
        f = int(ent["filled"][j])
        if not ro.on_table_grid(v[f:]):
            ent["direct"] = True
            return ro.terms(v, kind, dev)
        part = ro.terms(v[f:], kind, None if dev is None else dev[f:])
        arr = ent["arr"]
        if arr is None or arr.shape[1] < S:
            grown = np.zeros((self._k.shape[0], self._pos.shape[0], part.shape[1], part.shape[2]), np.float32)
            if arr is not None:
                grown[:, :arr.shape[1]] = arr
            arr = ent["arr"] = grown
        arr[j, f:S] = part
        ent["filled"][j] = S
        return arr[j, :S]

    def reset(self) -> None:
        super().reset()
        self._terms = {}

    @property
    def mismatch_k(self):
        return self._dk[:, : self.length]

    @property
    def mismatch_v(self):
        return self._dv[:, : self.length]


class GainCellAttention(AttentionKernel):
    """``recorder`` observes weights (probes) and value-tile outputs (calibration); ``rng`` may be
    shared with the kernels of a calibration (default: a generator seeded by the config);
    ``block``: queries per block (each block reads only the keys its queries may see); ``readout``:
    the cell's tables, shared with a kernel of the same cell, pre-distortion, levels and degree."""

    name = "gaincell"
    draw_ahead = True  # draw the read noise's normal deviates in a helper thread, in order (see _Draws)
    fused_noise = True  # noisy value tiles: noise, ADC and sum in one compiled pass (False: the NumPy path)
    two_lanes = True  # a call's blocks on two lanes when base.lanes() >= 2 (see attend)
    LANE_MIN_WORK = 1 << 17  # score elements of a call below which it stays on one lane
    STRIP = 32  # queries per strip of a block's score product (each strip over the keys its rows see)
    DRAW_AHEAD_MIN = 1 << 16  # normal deviates of a call below which they are drawn when taken

    def __init__(self, cell: CellModel, config: GainCellConfig, scalers: Scalers | None, *,
                 recorder: Recorder | None = None, rng: np.random.Generator | None = None, block: int = 256,
                 readout: CellReadout | None = None):
        self.cell, self.cfg, self.sc = cell, config, scalers
        self.rng = rng if rng is not None else np.random.default_rng(config.noise.seed)
        self.recorder = recorder if recorder is not None else Recorder()
        self.block = block
        ar = config.array
        self.readout = readout if readout is not None else CellReadout(cell, ar.predistort, ar.storage_levels,
                                                                       ar.poly_degree)

    def new_cache(self, layer, n_kv_heads, head_dim):
        return GainCellCache(n_kv_heads, head_dim)

    def unit_charge(self) -> float:
        return self.readout.unit_charge()

    def __call__(self, q, k, v, positions, mask, cache, layer):
        sc, ro = self.sc, self.readout
        if sc.k_chan is not None:
            k = k / sc.k_chan[layer][:, None, :]
        if sc.v_chan is not None:
            v = v / sc.v_chan[layer][:, None, :]
        vk, vv = ro.store(k, sc.a_k[layer], sc.b_k[layer]), ro.store(v, sc.a_v[layer], sc.b_v[layer])
        if self.cfg.noise.mismatch and self.cell.write_sigma is not None:
            # each cell's written voltage: the write transistor's mismatch and charge injection
            # (the write Monte Carlo's spread at the nominal stored voltage x N(0, 1))
            vk = vk + np.asarray(self.cell.write_sigma(vk)) * self.rng.standard_normal(vk.shape)
            vv = vv + np.asarray(self.cell.write_sigma(vv)) * self.rng.standard_normal(vv.shape)
        if self.cfg.noise.mismatch and self.cell.sigma is not None:
            # each cell's fixed deviation: its Monte Carlo sigma at the written voltage x N(0, 1)
            cache.append_mismatch(self.cell.sigma(vk) * self.rng.standard_normal(vk.shape),
                                  self.cell.sigma(vv) * self.rng.standard_normal(vv.shape))
        cache.append(vk, vv, positions)
        with blas_single_thread():  # as AttentionKernel.__call__: small products, one BLAS thread
            return self.attend(q, positions, mask, cache, layer)

    def _blocks(self, allowed, lam, n):
        """(b0, b1, lo, hi) per block of queries: rows b0..b1 of ``allowed`` read keys lo..hi
        (lo at a tile boundary of the value arrays); blocks short enough that the decay factors
        exp(+-lam n (block length)) stay far inside float32."""
        T = allowed.shape[0]
        B = self.block if lam <= 0 else max(1, min(self.block, int(30.0 / (lam * n))))
        rows = self.cfg.array.rows
        out = []
        for b0 in range(0, T, B):
            b1 = min(T, b0 + B)
            cols = np.flatnonzero(allowed[b0:b1].any(axis=0))
            if cols.size:
                out.append((b0, b1, (int(cols[0]) // rows) * rows, int(cols[-1]) + 1))
        return out

    def _layout(self, positions, mask, kpos, g, d):
        """What a call's arithmetic is laid out by, from its query and key positions only:
        (allowed (T, S), lam, the decay expansion's kind and terms, blocks, refresh interval N
        (0: none), each block's factors by b0: (rw (n, tb), kw (s, n), 1 / r, 1 / k, bias (tb, s),
        visible-key runs)). The previous call's when it had the same positions, mask and head
        shape and the kernel the same cell, config and readout (:meth:`_reuse_layout`)."""
        return self._reuse_layout(positions, kpos, mask, (g, d, self.STRIP, self.block),
                                  lambda: self._make_layout(positions, mask, kpos, g, d),
                                  same=(self.cell, self.cfg, self.readout))

    def _make_layout(self, positions, mask, kpos, g, d):
        ro, ar = self.readout, self.cfg.array
        allowed = visible(mask, positions, kpos, ar.window)
        lam = 0.0
        kind, fs = ro.decay_terms(1.0)
        if np.isfinite(self.cell.tau) and ar.token_period > 0:
            lam = ar.token_period / self.cell.tau  # decay per token step
            oldest = max(int(positions.max()) - int(kpos.min()), 0)  # age of the oldest key a query may read
            if ar.window:
                oldest = min(oldest, ar.window)
            if ar.refresh_interval:
                oldest = min(oldest, ar.refresh_interval)
            kind, fs = ro.decay_terms(min(math.exp(-lam * oldest), 1.0 - 1e-12))
        n = len(fs)
        blocks = self._blocks(allowed, lam, n)
        N = ar.refresh_interval if lam > 0 else 0
        if N:  # refresh at every multiple of N: no block spans one, and within a block every key
            blocks = _split_at_refresh(blocks, positions, N)  # written before it counts from it
        tmax = self.cell.t_max
        factors = {}
        for (b0, b1, lo, hi) in blocks:
            c0 = float(positions[b0])
            r = np.exp(-lam * (positions[b0:b1] - c0))
            kp = kpos[lo:hi] if not N else np.maximum(kpos[lo:hi], (int(positions[b0]) // N) * N)
            k = np.exp(-lam * (c0 - kp))
            rw = np.stack([tmax * r ** i for i in range(n)]).astype(np.float32)  # (n, tb)
            kw = np.stack([k ** i for i in range(n)], axis=1).astype(np.float32)  # (s, n)
            al = allowed[b0:b1, lo:hi]
            factors[b0] = (rw, kw, (1.0 / r).astype(np.float32), np.minimum(1.0 / np.maximum(k, 1e-30), 1e6)
                           .astype(np.float32), np.where(al, np.float32(0.0), np.float32(-np.inf)),
                           _runs(al, self.STRIP, ar.rows, g, n * (d - (d - 1) // ar.rows * ar.rows)))
        return allowed, lam, kind, fs, blocks, N, factors

    def attend(self, q, positions, mask, cache, layer):
        """Per KV head, its g query heads stacked as rows, in blocks of queries: scores (one GEMM
        per head-dim tile, every expansion term folded into the operands), the activation, then the
        value tiles (one batched GEMM per block, or per tile with read noise, and compiled ADC
        epilogues). The decay of key s at query t, D = exp(-lam (t - s)) = r_t k_s with
        r_t = exp(-lam (t - c)), k_s = exp(-lam (c - s)) about the block's first query c, is
        separable, and so is each term D^i f_i(y) of the cell current."""
        sc, ro, rec = self.sc, self.readout, self.recorder
        cv, ar, nz = self.cfg.converters, self.cfg.array, self.cfg.noise
        keys, values, kpos = cache.keys, cache.values, cache.positions
        n_kv, S, d = keys.shape
        H, T, _ = q.shape
        g = H // n_kv
        allowed, lam, kind, fs, blocks, _, factors = self._layout(positions, mask, kpos, g, d)
        n = len(fs)
        gain = ro.unit_charge()
        soft = ar.activation == "softmax"
        use_comp = lam > 0 and soft and ar.retention_comp
        half = 2 ** cv.adc_bits // 2 if (soft and cv.adc_bits) else 0
        mode = (2 if cv.tile_scale else 1) if soft else 0
        var_q = self.circuit_noise_var()
        out = np.empty((H, T, d), np.float32)
        plan = list(self._noise_plan(blocks, n_kv, g, d, var_q, sc.out_scale[layer] if cv.output_levels else None))
        serial = rec.wants_tiles or rec.wants_score_tiles  # recorders see the tiles in order
        # drawn ahead in the noise thread when there is enough to draw: a decode step's few small
        # arrays cost more in thread hand-offs (the GIL's switch interval) than they take to draw
        big = sum(math.prod(shape) for _, shape, _ in plan) >= self.DRAW_AHEAD_MIN
        draws = _Draws(self.rng, plan, self.draw_ahead and big and not serial,
                       self.__dict__.setdefault("_noise_pool", {}))
        # two lanes (this thread and helper_thread("lane")) take each KV head's blocks one by one,
        # largest first, until none is left (blocks are independent but for the head's largest
        # score, taken between the scores and the values); a lane the machine slows takes fewer
        two = (lanes() >= 2 and self.two_lanes and not serial and len(blocks) >= 2
               and g * sum((b1 - b0) * (hi - lo) for b0, b1, lo, hi in blocks) >= self.LANE_MIN_WORK)
        largest_first = sorted(blocks, key=lambda b: -(b[1] - b[0]) * (b[3] - b[2]))
        try:
            for j in range(n_kv):  # the g query heads reading one KV head's arrays, stacked as rows
                hs = np.arange(j * g, (j + 1) * g)
                qh = q[hs].astype(np.float32)
                if sc.k_chan is not None:
                    qh = qh * sc.k_chan[layer, j].astype(np.float32)
                if cv.query_scale or sc.a_q.dtype != np.float64 or sc.b_q.dtype != np.float64:
                    u = sc.a_q[layer, hs][:, None, None] * qh + sc.b_q[layer, hs][:, None, None]
                    # per-query DAC full scale = the query's largest |u| (undone digitally on the charge)
                    u_max = (np.abs(u).max(axis=2, keepdims=True).clip(min=1e-12) if cv.query_scale
                             else np.ones((g, T, 1), np.float32))
                    u = (np.sign(u) * pulse(np.abs(u) / u_max, cv.input_levels)).astype(np.float32)
                else:  # the same in one compiled pass
                    u_max = np.ones((g, T, 1), np.float32)
                    u = np.empty((g, T, d), np.float32)
                    query_pulses(np.ascontiguousarray(qh), np.ascontiguousarray(sc.a_q[layer, hs]),
                                 np.ascontiguousarray(sc.b_q[layer, hs]), u_max[:, :, 0],
                                 cv.input_levels, u)
                # digital rescale of the charge: softmax -> logits (an ideal cell gives q.k / sqrt(d))
                row_scale = u_max[:, :, 0].astype(np.float32)
                if soft:
                    row_scale = row_scale / (gain * sc.a_q[layer, hs] * sc.a_k[layer, j] * np.sqrt(d)
                                             ).astype(np.float32)[:, None]
                s_full = (sc.score_scale[layer, hs] if cv.output_levels else np.full(g, np.inf)).astype(np.float32)
                Fk = cache.terms(ro, kind, "k", j, nz.mismatch, T)
                Fv = cache.terms(ro, kind, "v", j, nz.mismatch, T)
                zs = {}  # each block's (g, tb, s) scores, then weights
                strips = self.fused_noise and not rec.wants_score_tiles  # scores in strips of visible keys

                def scores(part):
                    """The score tiles of the blocks ``part``; returns each head's largest |logit|."""
                    hmax = np.zeros(g, np.float32)
                    if strips:
                        for blk in part:
                            zs[blk[0]] = self._score_strips(blk, factors[blk[0]], u, Fk, n, s_full, row_scale, hmax,
                                                            draws, j, var_q, soft and half > 0)
                        return hmax
                    for (b0, b1, lo, hi) in part:
                        rw, kw, _, _, bb, _ = factors[b0]
                        tb = b1 - b0
                        zb = np.empty((g, tb, hi - lo), np.float32)
                        lhs = (u[:, b0:b1, None, :] * rw.T[None, :, :, None]).reshape(g * tb, n * d)
                        rhs = (Fk[lo:hi] * kw[:, :, None]).reshape(hi - lo, n * d)
                        for k0 in range(0, d, ar.rows):  # tiles over head dims, each clamped on its own
                            cols = (np.arange(n)[:, None] * d + np.arange(k0, min(d, k0 + ar.rows))[None, :]).ravel()
                            x = (lhs @ rhs.T) if cols.size == n * d else (lhs[:, cols] @ rhs[:, cols].T)
                            if nz.read_noise > 0 and cv.output_levels:
                                x += (nz.read_noise * np.repeat(s_full, tb)[:, None]
                                      * draws.normal(x.shape, np.float64, ("s", j, b0, k0, 0))).astype(np.float32)
                            if var_q > 0:  # the cells' read noise: var = var_q x the pulses on the tile's rows
                                ps = np.abs(u[:, b0:b1, k0:min(d, k0 + ar.rows)]).sum(axis=2).reshape(g * tb)
                                _fused.add_row_scaled(x, np.sqrt(var_q * ps).astype(np.float32),
                                                      draws.normal(x.shape, np.float32, ("s", j, b0, k0, 1)))
                            if rec.wants_score_tiles:
                                rec.score_tile(layer, j, b0, k0, x)
                            last = k0 + ar.rows >= d
                            m = _fused.score_tile(x, s_full, np.ascontiguousarray(row_scale[:, b0:b1]), zb, k0 > 0,
                                                  bb, last and soft and half > 0)
                            np.maximum(hmax, m, out=hmax)
                        zs[b0] = zb
                    return hmax

                hmax = (np.maximum.reduce(share(lambda _, blk: scores([blk]), largest_first)) if two
                        else scores(blocks))
                acc = np.zeros((g, T, d), np.float32)
                v_full = sc.out_scale[layer, hs].astype(np.float32)
                probe = next((i for i, h in enumerate(hs) if rec.wants_weights(layer, int(h))), None)
                weights = np.zeros((T, S), np.float32) if probe is not None else None
                inv_sat = (1.0 / sc.s_sat[layer, hs]).astype(np.float32)

                def values_(part):
                    """The activation and the value arrays of the blocks ``part`` (rows b0..b1 of acc)."""
                    for (b0, b1, lo, hi) in part:
                        rw, kw, inv_r, inv_k, bb, runs = factors[b0]
                        zb = zs.pop(b0)
                        if soft:
                            # the score ADC (reference: the head's largest |logit| in this call), the decay
                            # undone digitally, softmax over the visible keys, older keys' pulses lengthened
                            _fused.softmax_block(zb, hmax if half else np.ones(g, np.float32), half, inv_r, inv_k,
                                                 use_comp, bb)
                        if weights is not None:
                            w = zb[probe]
                            if not soft:
                                w = np.clip(w / np.float32(sc.s_sat[layer, hs[probe]]), 0, 1)
                            weights[b0:b1, lo:hi] = np.where(allowed[b0:b1, lo:hi], w, 0)
                        VT = np.empty((-(-(hi - lo) // ar.rows) * ar.rows,) + Fv.shape[1:], np.float32)
                        np.multiply(Fv[lo:hi], kw[:, :, None], out=VT[:hi - lo])
                        VT[hi - lo:] = 0.0  # the value tiles' rows past the last key
                        acc[:, b0:b1] += self._value_block(zb, bb, VT, rw, v_full, mode, inv_sat, (layer, hs), draws,
                                                           ("v", j, b0), runs).reshape(g, b1 - b0, d)

                if two:
                    share(lambda _, blk: values_([blk]), largest_first)
                else:
                    values_(blocks)
                if weights is not None:  # the head's attention weights
                    rec.weights(layer, int(hs[probe]), positions, kpos, weights)
                if sc.v_chan is not None:
                    acc *= sc.v_chan[layer, j].astype(np.float32)
                scale = (sc.a_o[layer, hs] * (ro.gain / gain) / sc.a_v[layer, j])[:, None, None]
                out[hs] = scale * acc + sc.b_o[layer, hs][:, None, None]
        finally:
            left = draws.close()
        if left:  # pragma: no cover - drawn ahead but never taken: the generator would be out of step
            raise RuntimeError("gain-cell noise plan out of step: draws planned that attend did not take")
        return out.astype(q.dtype)

    def _score_strips(self, blk, fac, u, Fk, n, s_full, row_scale, hmax, draws, j, var_q, want_max):
        """A block's scores (g, tb, s) as the whole-block path computes them, made in strips of
        ``STRIP`` queries over the keys the strip's rows may see (:func:`_runs`): the product, its
        noise (the block's planned deviates, all taken, read at the strip's elements), the clamp
        and rescale; keys a strip's rows do not see are 0. Updates hmax (each head's largest
        |logit| over the allowed keys) when ``want_max``."""
        cv, ar, nz = self.cfg.converters, self.cfg.array, self.cfg.noise
        b0, b1, lo, hi = blk
        rw, kw, _, _, bb, (_, _, strips, _) = fac
        g, _, d = u.shape
        tb = b1 - b0
        zb = np.empty((g, tb, hi - lo), np.float32)
        # rows t-major (t g + h), so a strip's rows are one slice for every head
        lhs = (u[:, b0:b1].transpose(1, 0, 2)[:, :, None, :] * rw.T[:, None, :, None]).reshape(tb * g, n * d)
        rhs = (Fk[lo:hi] * kw[:, :, None]).reshape(hi - lo, n * d)
        scale = np.ascontiguousarray(row_scale[:, b0:b1])
        none64, none32 = np.empty((0, 0), np.float64), np.empty((0, 0), np.float32)
        noise = []
        for k0 in range(0, d, ar.rows):  # every planned deviate taken, in the plan's order
            z64 = s64 = z32 = sig = None
            if nz.read_noise > 0 and cv.output_levels:
                s64 = nz.read_noise * np.repeat(s_full, tb)
                z64 = draws.normal((g * tb, hi - lo), np.float64, ("s", j, b0, k0, 0))
            if var_q > 0:
                ps = np.abs(u[:, b0:b1, k0:min(d, k0 + ar.rows)]).sum(axis=2).reshape(g * tb)
                sig = np.sqrt(var_q * ps).astype(np.float32)
                z32 = draws.normal((g * tb, hi - lo), np.float32, ("s", j, b0, k0, 1))
            noise.append((z64, s64, z32, sig))
        for k0, (z64, s64, z32, sig) in zip(range(0, d, ar.rows), noise):
            cols = (np.arange(n)[:, None] * d + np.arange(k0, min(d, k0 + ar.rows))[None, :]).ravel()
            lc, rc = (lhs, rhs) if cols.size == n * d else (lhs[:, cols], rhs[:, cols])
            last = k0 + ar.rows >= d
            for t0, t1, ks, ke in strips:
                if ke <= ks:
                    if k0 == 0:
                        zb[:, t0:t1] = 0.0
                    continue
                x = lc[t0 * g:t1 * g] @ rc[ks:ke].T
                if z64 is not None or z32 is not None:
                    score_noise_strip(x, t0, g, tb, ks, s64 if z64 is not None else s_full,
                                      none64 if z64 is None else z64, sig if z32 is not None else s_full,
                                      none32 if z32 is None else z32)
                score_strip(x, t0, ks, s_full, scale, zb, k0 > 0, bb, last and want_max, hmax)
        return zb

    def _noise_plan(self, blocks, n_kv, g, d, var_q, out_scale):
        """The keys, shapes and dtypes of the normal deviates ``attend`` draws, in the order they
        are drawn (per KV head: each block's score tiles, then each block's value tiles)."""
        cv, nz, rows = self.cfg.converters, self.cfg.noise, self.cfg.array.rows
        for j in range(n_kv):
            for (b0, b1, lo, hi) in blocks:
                for k0 in range(0, d, rows):
                    if nz.read_noise > 0 and cv.output_levels:
                        yield ("s", j, b0, k0, 0), (g * (b1 - b0), hi - lo), np.float64
                    if var_q > 0:
                        yield ("s", j, b0, k0, 1), (g * (b1 - b0), hi - lo), np.float32
            if out_scale is None or np.all(np.isinf(out_scale[j * g:(j + 1) * g])):
                continue  # the value tiles are not digitised: no noise drawn
            for (b0, b1, lo, hi) in blocks:
                shape = (-(-(hi - lo) // rows), g * (b1 - b0), d)
                if nz.read_noise > 0:
                    yield ("v", j, b0, 0), shape, np.float64
                if var_q > 0:
                    yield ("v", j, b0, 1), shape, np.float32

    def _value_block(self, p, bias, VT, rw, full, mode, inv_sat, ctx=None, draws=None, key=(), runs=None):
        """A block's value arrays: p (g, tb, s) weights (or hardsigmoid charges), VT (s, n, dd) the
        value terms of its keys (decay factors applied; or (tiles x rows, n, dd) with zero rows past
        s), rw (n, tb) the query-side factors, full (g,) each head's tile full scale. Pulses per tile (``mode``: 0 none, 1 row, 2 tile scaling),
        one batched GEMM over the tiles, then each tile's ADC (ratiometric or fixed reference),
        multiplied back and summed digitally. ``runs``: the block's visible keys (:func:`_runs`),
        with which the noisy fused path makes each tile's product for the rows that read it only.
        Returns (g tb, dd) or (g, tb, dd)."""
        cv, nz = self.cfg.converters, self.cfg.noise
        g, tb, s = p.shape
        n, dd = VT.shape[1], VT.shape[2]
        rows = self.cfg.array.rows
        ntl = -(-s // rows)
        R = g * tb
        ratio = mode == 2 and cv.ratiometric
        full_r = np.repeat(np.asarray(full, np.float32), tb)
        digitise = bool(cv.output_levels) and not np.all(np.isinf(full_r))
        record = self.recorder.wants_tiles and ctx is not None
        var_q = self.circuit_noise_var() if digitise else 0.0
        noisy = digitise and (nz.read_noise > 0 or var_q > 0)
        by_rows = runs is not None and noisy and not record and self.fused_noise
        pq = np.empty((ntl, R, rows), np.float32)
        m = np.ones((R, ntl), np.float32)
        psum = np.empty((R, ntl), np.float32)
        if by_rows:  # pq t-major (row t g + h), tiles outside a row's visible keys not read
            tile_pulses_t(p, bias, mode, inv_sat, cv.input_levels, rows, runs[0], runs[1], pq, m, psum)
        else:
            _fused.tile_pulses(p, bias, mode, inv_sat, cv.input_levels, rows, pq, m, psum)
        if VT.shape[0] == ntl * rows and VT.flags.c_contiguous:  # zero rows past s (the caller's)
            vt = VT.reshape(ntl, rows, n * dd)
        else:
            vt = np.zeros((ntl * rows, n * dd), np.float32)
            vt[:s] = VT.reshape(s, n * dd)
            vt = vt.reshape(ntl, rows, n * dd)
        rwr = np.tile(rw, (1, g))  # (n, R): row factors repeated per stacked head
        acc = np.zeros((R, dd), np.float32)
        if not record and not noisy:
            M = np.matmul(pq, vt)  # (ntl, R, n dd): every tile's raw charge terms
            _fused.tile_outputs(M, rwr, dd, psum, m, ratio, full_r, cv.output_levels // 2, digitise, acc)
            return acc
        read = psum.T > 0  # (ntl, R): rows that drive the tile
        back = (psum if ratio else 1.0) * m  # (R, ntl)
        draws = draws if draws is not None else _Draws(self.rng, None, False)
        shape = (ntl, R, dd)
        z1 = s1 = z2 = s2 = None
        if digitise:
            if nz.read_noise > 0:
                z1 = draws.normal(shape, np.float64, key + (0,)).astype(np.float32)
                s1 = np.float32(nz.read_noise) * full_r
            if var_q > 0:  # the cells' read noise on the tile's charge, var = var_q x pulse sum
                pt = psum.T[:, :, None]
                s2 = np.sqrt(var_q * pt) / (np.where(pt > 0, pt, 1) if ratio else 1.0)
                z2 = draws.normal(shape, np.float32, key + (1,))
        if by_rows:
            # tile by tile, over the rows that may read the tile (t-major: one slice), each row as
            # the branch below computes it (its product's row, tile_parts, noise, ADC and sum)
            empty = np.empty((0, 0), np.float32)
            backr = np.ascontiguousarray(back.T * read)
            s2r = np.ascontiguousarray(s2[:, :, 0]) if s2 is not None else backr
            acc_t = np.zeros((tb * g, dd), np.float32)
            Mk = np.empty((R, n * dd), np.float32)
            part = np.empty((R, dd), np.float32)
            for k, (t0, t1) in enumerate(runs[3]):
                if t1 <= t0:
                    continue
                r0, r1 = t0 * g, t1 * g
                np.matmul(pq[k, r0:r1], vt[k], out=Mk[:r1 - r0])
                tile_parts_rows(Mk[:r1 - r0], r0, g, tb, rw, psum, k, ratio, part[:r1 - r0])
                noisy_tile_rows(part[:r1 - r0], r0, g, tb, empty if z1 is None else z1[k], full_r if s1 is None else s1,
                                empty if z2 is None else z2[k], s2r[k], full_r, cv.output_levels // 2, backr[k], acc_t)
            return acc_t.reshape(tb, g, dd).transpose(1, 0, 2)
        if not record and self.fused_noise:
            # tile by tile: its GEMM (np.matmul of one slice gives the batched product's bits), its
            # terms combined (tile_parts on the one tile), then noise, ADC and sum in one pass
            empty = np.empty((0, 0), np.float32)
            backr = np.ascontiguousarray(back.T * read)
            s2r = np.ascontiguousarray(s2[:, :, 0]) if s2 is not None else backr
            Mk = np.empty((1, R, n * dd), np.float32)
            part = np.empty((1, R, dd), np.float32)
            for k in range(ntl):
                np.matmul(pq[k], vt[k], out=Mk[0])
                _fused.tile_parts(Mk, rwr, np.ascontiguousarray(psum[:, k:k + 1]), ratio, part)
                noisy_tile_acc(part[0], empty if z1 is None else z1[k], full_r if s1 is None else s1,
                               empty if z2 is None else z2[k], s2r[k], full_r, cv.output_levels // 2, backr[k], acc)
            return acc
        M = np.matmul(pq, vt)
        parts = np.empty(shape, np.float32)  # tile outputs before their ADC
        _fused.tile_parts(M, rwr, psum, ratio, parts)
        if record:
            layer, hs = ctx
            for i, h in enumerate(hs):
                for k in range(ntl):
                    blk = parts[k, i * tb:(i + 1) * tb][read[k, i * tb:(i + 1) * tb]]
                    if blk.size:
                        self.recorder.tile_outputs(layer, int(h), blk)
        if digitise:
            if z1 is not None:
                parts += s1[None, :, None] * z1
            if z2 is not None:
                parts += (s2 * z2).astype(np.float32)
            parts = adc(parts, full_r[None, :, None], cv.output_levels)
        return (parts * (back.T * read)[:, :, None]).sum(axis=0).astype(np.float32)

    def circuit_noise_var(self) -> float:
        """The cells' read-noise charge variance per full pulse (C^2) when ``circuit_read_noise`` is
        on and the cell has a noise model, else 0."""
        return self.readout.noise_var_q if self.cfg.noise.circuit_read_noise else 0.0

    def _values(self, p, vv, D, full, allowed=None, dev=None):
        """Value arrays for weights p (R, S) over stored values vv (S, dd), no decay (D None), one
        block: what the attention path computes, for hand-computed tests."""
        if D is not None:
            raise ValueError("_values: decay is applied by attend()")
        R, S = p.shape
        bias = np.zeros((R, S), np.float32) if allowed is None else np.where(allowed, 0, -np.inf).astype(np.float32)
        cv = self.cfg.converters
        mode = (2 if cv.tile_scale else 1) if self.cfg.array.activation == "softmax" else 0
        VT = self.readout.terms(vv, self.readout.decay_terms(1.0)[0], dev)
        rw = np.full((1, R), self.cell.t_max, np.float32)
        return self._value_block(np.asarray(p, np.float32)[None], bias, VT, rw, np.atleast_1d(np.float32(full))[:1],
                                 mode, np.ones(1, np.float32))


_POOL_LOCK = threading.Lock()


class _Draws:
    """The standard normal deviates of one ``attend`` call, drawn in the order of ``plan`` (an
    iterable of (key, shape, dtype)) and taken by key. With ``ahead``, a helper thread draws them
    from the kernel's generator a few arrays ahead of the furthest one taken (NumPy's and the
    compiled draws release the GIL, so the drawing overlaps the products and compiled passes), and
    two lanes may take them in any order; the generator is used by that thread alone, in the
    plan's order, so every array equals the one a direct draw at the same point would give.
    Without, each is drawn when taken, and must be taken in the plan's order. Without a plan
    (``plan`` None): drawn when taken, keys ignored. ``pool``: a dict kept by the kernel between
    calls, of buffers per (shape, dtype) that a draw fills again once nobody holds them (a fresh
    array per draw cost 5,000-8,500 first-touch page faults per layer call at window 1024, 16-32 MB
    of new pages, on these VMs ~2-4 us each); shapes a call did not use are dropped at its close."""

    DEPTH = 4
    PER_SHAPE = DEPTH + 4  # buffers kept per shape (in flight: DEPTH drawn ahead + the ones in use)

    def __init__(self, rng, plan, ahead, pool=None):
        self.rng = rng
        self.pool, self.used = pool, set()
        self.plan = list(plan) if plan is not None else None
        self.index = {item[0]: i for i, item in enumerate(self.plan)} if self.plan is not None else {}
        self.ahead = ahead and self.plan is not None
        self.futures = {}
        self.next = 0  # the next plan item drawn (ahead: submitted)
        self.taken = 0
        self.lock = threading.Lock()
        if self.ahead:
            self._submit(self.DEPTH - 1)

    def _buffer(self, shape, dtype):
        """A pooled array of ``shape`` and ``dtype`` that nothing else holds, or a new one."""
        if self.pool is None:
            return None
        key = (tuple(int(n) for n in shape), np.dtype(dtype).char)
        with _POOL_LOCK:  # one lock for every pool: two calls sharing a kernel never take one buffer
            self.used.add(key)
            bufs = self.pool.setdefault(key, [])
            for b in bufs:
                if sys.getrefcount(b) <= 3:  # the list's, the loop's and the argument's: free
                    return b
            b = np.empty(key[0], dtype)
            if len(bufs) < self.PER_SHAPE:
                bufs.append(b)
            return b

    def _draw(self, shape, dtype):
        out = self._buffer(shape, dtype)  # NumPy's deviates either way (standard_normal_f64 as well)
        if dtype == np.float32:
            return standard_normal_f32(self.rng, shape, out)
        return standard_normal_f64(self.rng, shape, out)

    def _submit(self, upto):
        while self.next <= min(upto, len(self.plan) - 1):
            _, shape, dtype = self.plan[self.next]
            self.futures[self.next] = helper_thread("gaincell-noise").submit(self._draw, shape, dtype)
            self.next += 1

    def normal(self, shape, dtype, key=None):
        if self.plan is None:
            return self._draw(shape, dtype)
        i = self.index.get(key)
        want, wdt = (self.plan[i][1], self.plan[i][2]) if i is not None else (None, None)
        if want is None or tuple(want) != tuple(shape) or wdt is not dtype or (not self.ahead and i != self.next):
            nxt = self.plan[self.next] if self.next < len(self.plan) else "nothing"  # pragma: no cover
            raise RuntimeError(f"gain-cell noise plan out of step: {key} {shape} {dtype} drawn, {nxt} planned next")
        if not self.ahead:
            self.next += 1
            self.taken += 1
            return self._draw(shape, dtype)
        with self.lock:
            self._submit(i + self.DEPTH)
            fut = self.futures.pop(i)
            self.taken += 1
        return fut.result()

    def close(self):
        """Wait for draws still in flight (an exception left them), so the generator is idle;
        returns whether any planned draw was left untaken."""
        with self.lock:
            pending = list(self.futures.values())
            self.futures.clear()
        concurrent.futures.wait(pending)
        if self.pool is not None:
            with _POOL_LOCK:
                for key in [k for k in self.pool if k not in self.used]:
                    del self.pool[key]
        return self.plan is not None and self.taken < len(self.plan)


# OpenBLAS computes small products (here: M N K up to between 1.5e5 and 3e5 for A B^T, one row
# for A B) by other kernels, whose sums round differently: a strip's or tile's product is kept
# above these sizes (merged with the next, or widened), so that each element is summed as the
# whole block's product sums it (measured on this machine's OpenBLAS 0.3.31; the tests compare
# bit for bit).
_BIG_PRODUCT = 1 << 19  # M N K of a score strip's product at least
_MIN_ROWS = 16  # rows of a value tile's product at least


def _runs(al, strip, rows, g, K):
    """The visible keys of a block (al: its (tb, s) allowed matrix, one run of keys per row for
    the masks of :class:`..base.Mask`): first, last (tb,) each row's first allowed key and one
    past its last (0, 0: none); strips [(t0, t1, ks, ke)]: rows t0 .. t1 (``strip`` at a time,
    merged until the product of their g (t1 - t0) stacked rows over keys ks .. ke with K terms
    is large, see _BIG_PRODUCT; one strip of every row and key when the block's own is not) and
    the keys ks .. ke covering their allowed ones; tiles [(t0, t1)] per value tile of ``rows``
    keys: the rows whose keys meet the tile, widened to _MIN_ROWS stacked rows (t0 = t1: none).
    A row whose allowed keys are not one run is covered by its first .. last span (a superset:
    the passes still mask by the bias)."""
    tb, s = al.shape
    anyr = al.any(axis=1)
    first = np.where(anyr, al.argmax(axis=1), 0).astype(np.int64)
    last = np.where(anyr, s - al[:, ::-1].argmax(axis=1), 0).astype(np.int64)
    if g * tb * s * K <= _BIG_PRODUCT:
        strips = [(0, tb, 0, s)]
    else:
        strips, cur = [], None
        for t0 in range(0, tb, strip):
            t1 = min(tb, t0 + strip)
            a = anyr[t0:t1]
            ks, ke = (int(first[t0:t1][a].min()), int(last[t0:t1][a].max())) if a.any() else (s, 0)
            cur = (t0, t1, ks, ke) if cur is None else (cur[0], t1, min(cur[2], ks), max(cur[3], ke))
            if g * (cur[1] - cur[0]) * max(cur[3] - cur[2], 0) * K > _BIG_PRODUCT:
                strips.append(cur)
                cur = None
        if cur is not None:  # a small rest joins the strip before it (or is every row: all keys)
            c0, c1, ks, ke = strips.pop() if strips else (cur[0], cur[1], 0, s)
            cur = (min(c0, cur[0]), max(c1, cur[1]), min(ks, cur[2]), max(ke, cur[3]))
            strips.append(cur)
        strips = [(t0, t1, ks, ke) if ke > ks else (t0, t1, 0, 0) for t0, t1, ks, ke in strips]
    tiles = []
    need = -(-_MIN_ROWS // g)
    for k0 in range(0, s, rows):
        rd = np.flatnonzero(anyr & (first < k0 + rows) & (last > k0))
        if not rd.size:
            tiles.append((0, 0))
            continue
        t0, t1 = int(rd[0]), int(rd[-1]) + 1
        if t1 - t0 < need:
            t1 = min(tb, t0 + need)
            t0 = max(0, t1 - need)
        tiles.append((t0, t1))
    return first, last, strips, tiles


def _split_at_refresh(blocks, positions, N):
    """Blocks (b0, b1, lo, hi) cut where floor(position / N) changes (a refresh between queries)."""
    out = []
    per = np.asarray(positions) // N
    for b0, b1, lo, hi in blocks:
        cuts = b0 + 1 + np.flatnonzero(np.diff(per[b0:b1]))
        edges = [b0, *cuts.tolist(), b1]
        out += [(a, b, lo, hi) for a, b in zip(edges[:-1], edges[1:])]
    return out


def ideal_kernel(layers, heads, kv_heads):
    """Ideal cell, unquantised, no decay, softmax without ADC: equals exact attention."""
    cell = CellModel.ideal()
    cfg = GainCellConfig(input_levels=0, storage_levels=0, output_levels=0, token_period=0.0, adc_bits=0,
                         window=0, predistort=False)
    return GainCellAttention(cell, cfg, Scalers.identity(layers, heads, kv_heads, cell))
