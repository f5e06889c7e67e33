"""The pruning kernel: arrays in, arrays out (see the package docstring for the signal path)."""
from __future__ import annotations

import functools
import math
import queue
import threading

import numpy as np

from .. import _fused
from .._fused import sprint as _fused_sprint
from .._fused.normals import standard_normal_f32, standard_normal_f64  # NumPy's normals, compiled
from .._fused.sprint import decide_chunk
from ..base import AttentionKernel, blas_single_thread, helper_thread, key_range, lanes, visible
from ..peripherals import signed_code
from ..recorders import Recorder, Recorders
from ..stats import quantile
from .config import SprintConfig
from .device import Crossbar, SprintCache
from .scales import SprintScales, SprintStats


class SprintAttention(AttentionKernel):
    """``stats``: the run's statistics (a recorder the kernel always feeds); ``recorder``: more
    observers (kept-key logs, calibration records); ``block``: queries per block."""

    name = "sprint"

    def __init__(self, xbar: Crossbar, config: SprintConfig, scales: SprintScales | None, n_layers: int = 1, *,
                 recorder: Recorder | None = None, block: int = 256):
        self.x, self.cfg, self.sc = xbar, config, scales
        self.rng = np.random.default_rng(config.noise.seed)
        self.stats = SprintStats.zeros(n_layers)
        self.recorder = Recorders(self.stats, recorder) if recorder is not None else self.stats
        self.block = block
        half = 2 ** (config.converters.key_bits - 1)
        codes = np.arange(-half, half)
        self._level = np.round((codes + half) * (xbar.levels - 1) / max(2 * half - 1, 1)).astype(np.int64)
        self._ref_level = int(self._level[half])
        # DAC: codes 0..M per sign -> voltage-side factor b(m / M x v_read)
        self._m = 2 ** config.converters.dac_bits - 1
        self._b_dac = np.asarray(xbar.b(np.arange(self._m + 1) / self._m * xbar.v_read), np.float32)
        # volts per (unit query fraction x unit key code), linear part: least squares over the codes
        da = xbar.a[self._level] - xbar.a[self._ref_level]
        slope = float((da * codes).sum() / (codes * codes).sum())
        self.kappa = slope * float(xbar.weights.mean()) * float(self._b_dac[-1])
        self._ref_cells = {}

    # -- writing keys ---------------------------------------------------------------------------
    def new_cache(self, layer, n_kv_heads, head_dim):
        return SprintCache(n_kv_heads, head_dim)

    def _codes(self, k, layer):
        sc = self.sc
        if sc.k_chan is not None:
            k = k / sc.k_chan[layer][:, None, :]
        half = 2 ** (self.cfg.converters.key_bits - 1)
        return signed_code(k / sc.k_step[layer][:, None, None], half).astype(np.int64)

    def __call__(self, q, k, v, positions, mask, cache, layer):
        sc = self.sc  # cells = a[level[codes + half]] of self._codes(k, layer), in one compiled pass
        cells = _fused_sprint.key_cells(k, None if sc.k_chan is None else sc.k_chan[layer], sc.k_step[layer],
                                        2 ** (self.cfg.converters.key_bits - 1), self._level, self.x.a)
        if self.cfg.noise.variation and self.x.sigma_g > 0:  # cells x exp(sigma_g z), in place (no temporaries)
            z = standard_normal_f64(self.rng, cells.shape)  # = rng.standard_normal, compiled
            z *= self.x.sigma_g
            np.exp(z, out=z)
            cells *= z
        off = np.zeros(cells.shape[:2])
        if self.cfg.noise.variation and self.x.cmp_offset > 0:
            off = self.x.cmp_offset * self.rng.standard_normal(off.shape)
        cache.append_cells(cells.astype(np.float32), off.astype(np.float32))  # before append moves length
        cache.append(k, v, positions)
        with blas_single_thread():  # as AttentionKernel.__call__: small products, one BLAS thread
            return self.attend(q, positions, mask, cache, layer)

    def _ref(self, layer, j, d):
        """The reference column's cells (zero code, own variation), drawn once per array."""
        key = (layer, j)
        if key not in self._ref_cells:
            r = np.full(d, self.x.a[self._ref_level])
            if self.cfg.noise.variation and self.x.sigma_g > 0:
                r = r * np.exp(self.x.sigma_g * self.rng.standard_normal(d))
            self._ref_cells[key] = r.astype(np.float32)
        return self._ref_cells[key]

    # -- the analog score path -------------------------------------------------------------------
    def column_currents(self, qe, cells, ref):
        """The analog sums for equalised queries qe (n, d) against key cells (S, d).

        Returns (iw, sab, c2, ref_lin, ref_var, u_max): ``iw`` (n, S) the key column's two-phase
        current sum_i w_i (b+_i - b-_i) x_i and ``sab`` (n, S) with sab^2 + iw^2 = 2 (s+^2 + s-^2),
        the summed squared phase currents (for the relative read noise); ``c2`` the loss
        coefficient still to apply, I = iw (1 + c2 sab) (the column's c2 for one tile, whose raw
        GEMM outputs go on to the fused loop; 0 for several tiles, whose losses are summed here);
        the reference column's current and squared phase currents (n,), and the per-query DAC
        scale u_max (n, 1).
        One GEMM per tile gives both the weighted signed sum and the unsigned sum s+ + s-; the
        loss uses s+^2 - s-^2 = (s+ - s-)(s+ + s-) with the weighted signed sum standing in for
        s+ - s- (w = 1 +- 1%: an error of 1% of a ~1% term) and s+^2 + s-^2 =
        ((s+ + s-)^2 + (s+ - s-)^2) / 2."""
        x = self.x
        n, d = qe.shape
        lin = var = None
        ref_lin = np.zeros(n, np.float32)
        ref_var = np.zeros(n, np.float32)
        c2 = np.float32(x.c2)
        qe = np.ascontiguousarray(qe, np.float32)
        for r0 in range(0, d, x.rows):  # a key longer than a column spans neighbouring columns
            sl = slice(r0, min(d, r0 + x.rows))
            w = x.weights[: sl.stop - sl.start].astype(np.float32)
            lhs = np.empty((2 * n, sl.stop - sl.start), np.float32)
            u_max = _fused.dac_lhs(qe, self._m, self._b_dac, w, sl.start, sl.stop, lhs)[:, None]
            both = lhs @ cells[:, sl].T
            iw, sab = both[:n], both[n:]
            rb = lhs @ ref[sl]
            riw, rsab = rb[:n], rb[n:]
            if lin is None and r0 + x.rows >= d:  # one tile: keep the GEMM outputs
                lin, var = iw, sab
                tile_lin = None
            else:
                tile_lin = iw + c2 * iw * sab
                tile_var = 0.5 * (sab * sab + iw * iw)
                lin = tile_lin if lin is None else lin + tile_lin
                var = tile_var if var is None else var + tile_var
            ref_lin += riw + c2 * riw * rsab
            ref_var += 0.5 * (rsab * rsab + riw * riw)
        if tile_lin is None:  # single tile: lin = iw, var = sab still raw (combined by the caller)
            return lin, var, float(x.c2), ref_lin, ref_var, u_max
        return lin, np.sqrt(np.maximum(2.0 * var - lin * lin, 0)).astype(np.float32), 0.0, ref_lin, ref_var, u_max

    def keep_decisions(self, qe, cells, ref, r_diff, offsets, thr, vpl_unit, allowed, forced, T, exact, bias,
                       record=None):
        """Comparator decisions (n, S) of the keys a block may see: keep when allowed and (forced
        or r_diff (I_col - I_ref) + offset + noise exceeds V_th = thr x volts-per-logit + mu).
        ``thr`` (n,) in logits; ``vpl_unit`` volts per logit per Ohm for a unit query scale.
        Read noise (relative, per column evaluation, on both phase currents) and comparator noise
        are independent Gaussians, drawn as one of sigma sqrt(cmp^2 + (noise_rel r)^2 (s+^2 + s-^2)).
        The kept-key softmax runs in the same pass: ``exact`` (n, S) scores become the kept weights
        (``bias`` (T, S): 0 allowed, -inf not). Returns (keep, kept_softmax's statistics); with
        ``record`` (calibration) only the comparator inputs are recorded and (None, None) returned."""
        x, cfg = self.x, self.cfg
        iw, sab, c2, ref_lin, ref_var, u_max = self.column_currents(qe, cells, ref)
        r = float(r_diff)
        vpl = (r * vpl_unit / u_max[:, 0]).astype(np.float32)  # (n,)
        nr = x.noise_rel if cfg.noise.circuit_noise else 0.0
        row = -r * ref_lin
        if nr > 0:  # the reference column's read noise: one draw per query
            row = row - r * nr * np.sqrt(ref_var) * self.rng.standard_normal(qe.shape[0], np.float32)
        row = (row - thr * vpl - x.cmp_mu).astype(np.float32)
        k2 = 0.5 * (nr * r) ** 2
        if record is not None:
            sig = r * iw * (1 + np.float32(c2) * sab)
            record.append((sig + row[:, None] + thr[:, None] * vpl[:, None] + np.float32(x.cmp_mu)) / vpl[:, None])
            record.append(np.abs(sig - r * ref_lin[:, None]))
            return None, None
        cn2 = x.cmp_noise ** 2 if cfg.noise.circuit_noise else 0.0
        keep = np.empty(iw.shape, np.bool_)
        pool = self.noise_pool
        start = int(self.rng.integers(0, max(1, pool.size - iw.size)))  # the block's samples stay inside the pool
        if iw.size > pool.size:
            pool = self.rng.standard_normal(iw.size, dtype=np.float32)
            start = 0
        stats = _fused.decide_softmax(exact, iw, sab, row, offsets.astype(np.float32), r, c2, k2, cn2, pool, start,
                                      bias, allowed, forced, T, keep)
        return keep, stats

    @functools.cached_property
    def noise_pool(self):
        """Standard normals for fresh per-decision noise: 2^23 drawn once from the kernel's
        seeded generator, read from a random start for each block (every decision of a block has
        its own sample; drawing 10^8 fresh normals per window would cost more than the model).
        Drawn by the gain cell's compiled copy of NumPy's float32 draw (the same deviates and
        generator state, 3-4x faster: 80 -> 25 ms)."""
        return standard_normal_f32(self.rng, 1 << 23)

    chunk = 64  # queries per chunk of the fast path (a chunk's scores stay in the core's L2 cache)
    LANE_MIN_WORK = 1 << 16  # queries x keys of a call below which its tasks stay on one lane
    trim = True  # False: every chunk over the block's whole key range (a check of the trimming)
    fast = True  # False: every block through _attend_block (the reference the tests compare with)

    def attend(self, q, positions, mask, cache, layer):
        H, T, d = q.shape
        kpos = cache.positions
        blocks = []
        for b0 in range(0, T, self.block):
            b1 = min(T, b0 + self.block)
            qp = positions[b0:b1]
            lo, hi = key_range(mask, qp, kpos)
            if self.cfg.pruning.window:
                lo = max(lo, int(np.searchsorted(kpos, qp.min() - self.cfg.pruning.window, side="right")))
            blocks.append((b0, b1, lo, hi))
        if self.fast and self.cfg.pruning.rule in ("anchor", "fixed") and not self.recorder.wants_comparator_inputs \
                and d <= self.x.rows:
            return self._attend_fast(q, positions, mask, cache, layer, blocks)
        out = np.empty_like(q)
        for b0, b1, lo, hi in blocks:
            out[:, b0:b1] = self._attend_block(q[:, b0:b1], positions[b0:b1], mask, cache, layer, lo, hi)
        return out

    # -- the fast path (comparator rules, keys in one tile): the same arithmetic as _attend_block,
    #    split into (block, KV head) tasks run on two lanes, each in chunks of queries of one head
    def _attend_fast(self, q, positions, mask, cache, layer, blocks):
        """Every random draw happens here, in _attend_block's order (per block, per KV head: the
        reference column's cells on first use, the reference read noise, the noise pool on first
        use, the pool start); the tasks then run on this thread and the "lane" helper (products
        and compiled passes release the GIL) and the recorder hears them in the original order."""
        cfg, x = self.cfg, self.x
        H, T, d = q.shape
        n_kv = cache.keys.shape[0]
        g = H // n_kv
        nr = x.noise_rel if cfg.noise.circuit_noise else 0.0
        out = np.empty((T, H, d), q.dtype)  # (T, H, d), returned as an (H, T, d) view: merging the heads is free
        draws = []
        for b0, b1, lo, hi in blocks:
            n, S = g * (b1 - b0), hi - lo
            for j in range(n_kv):
                ref = self._ref(layer, j, d)
                zr = standard_normal_f32(self.rng, n) if nr > 0 else None
                pool = self.noise_pool
                start = int(self.rng.integers(0, max(1, pool.size - n * S)))
                if n * S > pool.size:
                    pool, start = self.rng.standard_normal(n * S, dtype=np.float32), 0
                draws.append((ref, zr, pool, start))
        fresh = self.recorder is not self.stats  # another recorder may keep the keep arrays
        tasks = [None] * len(draws)
        results = [None] * len(draws)
        # blocks largest first; a block's masks made by the first lane to take one of its tasks,
        # so neither lane waits while the other makes them (each block's are made once, under its
        # lock); the second task queued is the second block's, so the two lanes' first tasks make
        # two blocks' masks side by side
        order = sorted(range(len(blocks)), key=lambda b: -(blocks[b][1] - blocks[b][0]) * (blocks[b][3] - blocks[b][2]))
        queued = [bi * n_kv + j for bi in order for j in range(n_kv)]
        if len(order) >= 2 and n_kv >= 2:
            queued.insert(1, queued.pop(n_kv))
        # the blocks' masks, made by this call as its tasks need them, or the previous call's
        # (the other layers of a forward pass: the same positions, mask and pruning rule)
        extra = (tuple(blocks), self.cfg.pruning, self.chunk, self.trim)
        blks = self._reuse_layout(positions, cache.positions, mask, extra, lambda: [None] * len(blocks))
        locks = [threading.Lock() for _ in blocks]
        todo = queue.SimpleQueue()

        def block_arrays(bi):
            if blks[bi] is None:
                with locks[bi]:
                    if blks[bi] is None:
                        b0, b1, lo, hi = blocks[bi]
                        blks[bi] = self._block_arrays(positions[b0:b1], mask, cache.positions[lo:hi])
            return blks[bi]

        def work(lane, wait):
            while True:
                try:
                    k = todo.get() if wait else todo.get_nowait()
                except queue.Empty:
                    return
                if k is None:  # the end: left for the helper if this thread found it first
                    todo.put(None)
                    return
                bi, j = divmod(k, n_kv)
                tasks[k] = blocks[bi] + (j, block_arrays(bi)) + draws[k]
                results[k] = self._task(q, cache, layer, out, tasks[k], lane, fresh)

        # (one lane or two: the same numbers, each task is computed whole by one lane)
        two = lanes() >= 2 and len(draws) >= 2 and T * cache.keys.shape[1] >= self.LANE_MIN_WORK
        for k in queued:
            todo.put(k)
        todo.put(None)  # after every task: a lane stops when it reaches it
        fut = helper_thread("lane").submit(work, 1, True) if two else None
        try:
            work(0, False)
        finally:
            # a helper that has not started by now (a busy machine) is not waited for
            if fut is not None and not fut.cancel():
                todo.put(None)
                fut.result()
        rec = self.recorder
        for (b0, b1, lo, hi, j, blk, *_), (keep, tot_kept, tot_mass, tot_new) in zip(tasks, results):
            allowed_n, n_allowed, n_free = blk["n_allowed_sum"], blk["n_allowed"], blk["n_free"]
            tb = b1 - b0
            rec.keep(layer, j, positions[b0:b1], cache.positions[lo:hi], keep.reshape(g, tb, hi - lo))
            rec.counts(layer, allowed=float(allowed_n) * g, kept=tot_kept, mass=tot_mass, rows=g * tb,
                       new=tot_new if tb > 1 else 0.0,
                       new_base=float(n_allowed[1:].sum()) * g if tb > 1 else 0.0, decisions=n_free * g,
                       queries=g * tb)
        return out.transpose(1, 0, 2)

    def _block_arrays(self, positions, mask, kpos):
        """A block's masks as _attend_block makes them (one compiled pass), the anchors as a CSR
        list, and its chunks of queries (t0, t1) with the key range [lk, hk) they may see."""
        cfg = self.cfg.pruning
        kind = ("causal", "sliding", "bidirectional").index(mask.kind)
        T, S, C = len(positions), len(kpos), self.chunk
        allowed, forced, bias, f_ptr, f_cols, n_allowed, n_free, lks, hks = _fused_sprint.block_masks(
            np.asarray(positions, np.int64), np.asarray(kpos, np.int64), kind, mask.window, cfg.window,
            cfg.rule == "anchor", cfg.sink, cfg.local, C)
        chunks = []
        for t0, lk, hk in zip(range(0, T, C), lks.tolist(), hks.tolist()):
            if hk <= lk or not self.trim:  # no allowed key: the whole row, as _attend_block
                lk, hk = 0, S
            chunks.append((t0, min(T, t0 + C), lk, hk))
        return dict(allowed=allowed, forced=forced, bias=bias, f_ptr=f_ptr, f_cols=f_cols, chunks=chunks,
                    n_allowed=n_allowed, n_allowed_sum=n_allowed.sum(), n_free=float(n_free))

    def _scratch(self, lane, n, dtype=np.float32):
        """A buffer of n ``dtype`` kept per lane and dtype between calls."""
        bufs = self.__dict__.setdefault("_bufs", {})
        key = (lane, np.dtype(dtype).char)
        b = bufs.get(key)
        if b is None or b.size < n:
            b = bufs[key] = np.empty(n, dtype)
        return b[:n]

    def _task(self, q, cache, layer, out, task, lane, fresh):
        """One (block, KV head): writes out[heads of j, block] and returns (keep (n, S), kept,
        mass, newly kept sums)."""
        b0, b1, lo, hi, j, blk, ref, zr, pool, start = task
        x, sc, cfg = self.x, self.sc, self.cfg
        H, T, d = q.shape
        g = H // cache.keys.shape[0]
        tb, S = b1 - b0, hi - lo
        n = g * tb
        keys, values, cells = cache.keys[j, lo:hi], cache.values[j, lo:hi], cache.cells[j, lo:hi]
        scale = np.float32(1.0 / math.sqrt(d))
        r = float(sc.r_diff[layer, j] if sc.r_diff is not None else x.r_f)
        vpl_unit = self.kappa * math.sqrt(d) / sc.k_step[layer, j]
        # the products' query operands with the g heads interleaved (row t g + h: query t of head
        # h), so a chunk of queries of every head is one contiguous block of rows and each product
        # packs the chunk's keys (cells, values) once for the g heads: qs = q / sqrt(d) and
        # column_currents' drive (one tile), each query's two operands side by side
        c2 = np.float32(x.c2)
        w = x.weights[:d].astype(np.float32)
        qs_t = np.empty((tb, g, d), np.float32)
        lhs_t = np.empty((tb, g, 2, d), np.float32)
        lhs = np.empty((n, 2, d), np.float32)  # the drive in block order i = h tb + t
        u_max = np.empty(n, np.float32)
        _fused_sprint.task_operands(q, j * g, b0, scale, None if sc.k_chan is None else sc.k_chan[layer, j],
                                    self._m, self._b_dac, w, qs_t, lhs_t, lhs, u_max)
        u_max = u_max[:, None]
        # the reference column's currents, on the block-order rows (a matrix-vector product's
        # rounding may depend on a row's place: OpenBLAS's tail rows differ, e.g. 15 rows)
        riw, rsab = lhs[:, 0] @ ref[:d], lhs[:, 1] @ ref[:d]
        ref_lin = np.zeros(n, np.float32)
        ref_var = np.zeros(n, np.float32)
        ref_lin += riw + c2 * riw * rsab
        ref_var += 0.5 * (rsab * rsab + riw * riw)
        # keep_decisions' row constants (the threshold part goes in decide_chunk)
        vpl = (r * vpl_unit / u_max[:, 0]).astype(np.float32)
        nr = x.noise_rel if self.cfg.noise.circuit_noise else 0.0
        base = -r * ref_lin
        if nr > 0:
            base = base - r * nr * np.sqrt(ref_var) * zr
        base = base.astype(np.float32)
        k2 = 0.5 * (nr * r) ** 2
        cn2 = x.cmp_noise ** 2 if cfg.noise.circuit_noise else 0.0
        theta = sc.theta[layer, j * g:(j + 1) * g]
        anchor = cfg.pruning.rule == "anchor"
        off = cache.offsets[j, lo:hi]
        mu = np.float32(x.cmp_mu)
        keep = np.empty((n, S), np.bool_) if fresh else self._scratch(lane, n * S, np.bool_).reshape(n, S)
        tot = np.empty(n, np.float32)
        mass = np.empty(n, np.float64)
        kept = np.empty(n, np.int64)
        new = np.empty(n, np.int64)
        tot_t = tot.reshape(g, tb).T  # (tb, g) views of the per-row sums
        for t0, t1, lk, hk in blk["chunks"]:
            R, L = t1 - t0, hk - lk
            M = g * R
            buf = self._scratch(lane, 3 * M * L + M * d)
            e = buf[:M * L].reshape(M, L)
            both = buf[M * L:3 * M * L].reshape(2 * M, L)
            o = buf[3 * M * L:].reshape(M, d)
            np.matmul(qs_t[t0:t1].reshape(M, d), keys[lk:hk].T, out=e)
            np.matmul(lhs_t[t0:t1].reshape(2 * M, d), cells[lk:hk].T, out=both)
            n_bad = decide_chunk(e, both, t0, g, tb, S, lk, anchor, blk["f_ptr"], blk["f_cols"], theta, base, vpl, mu,
                                 off, r, c2, k2, cn2, pool, start, blk["bias"], blk["allowed"], blk["forced"],
                                 keep, tot, mass, kept, new)
            np.matmul(e, values[lk:hk], out=o)
            if n_bad:  # every kept weight of a row underflowed against a pruned maximum
                for q_ in np.flatnonzero(tot_t[t0:t1].ravel() < 1e-30):
                    i = (q_ % g) * tb + t0 + q_ // g
                    z = np.where(keep[i], qs_t[t0 + q_ // g, q_ % g] @ keys.T, -np.inf)
                    z = np.exp(z - z.max())
                    tot[i] = z.sum()
                    o[q_] = z.astype(np.float32) @ values
            _fused_sprint.scatter_chunk(o, tot, t0, g, tb, out, b0, j * g)  # out[b0 + t, j g + h] = o / tot
        return keep, float(kept.sum()), float(mass.sum()), float(new.sum())

    def _attend_block(self, q, positions, mask, cache, layer, lo, hi):
        cfg, x, sc, rec = self.cfg.pruning, self.x, self.sc, self.recorder
        keys, values, kpos = cache.keys[:, lo:hi], cache.values[:, lo:hi], cache.positions[lo:hi]
        n_kv, S, d = keys.shape
        H, T, _ = q.shape
        g = H // n_kv
        allowed = visible(mask, positions, kpos, cfg.window)
        forced = positions[:, None] == kpos[None, :]  # the query's own key
        if cfg.rule == "anchor":
            forced |= (kpos[None, :] < cfg.sink) | (kpos[None, :] > positions[:, None] - cfg.local)
        forced &= allowed
        free = allowed & ~forced
        n_free = float(np.count_nonzero(free))
        bias = np.where(allowed, np.float32(0.0), np.float32(-np.inf))
        f_rows, f_cols = np.nonzero(forced)  # each query's anchors as a CSR list
        f_ptr = np.searchsorted(f_rows, np.arange(T + 1))
        n_allowed = allowed.sum(axis=1)
        scale = np.float32(1.0 / math.sqrt(d))
        out = np.empty_like(q)
        for j in range(n_kv):
            qg = q[j * g:(j + 1) * g].reshape(g * T, d)
            exact = ((qg * scale) @ keys[j].T).reshape(g, T, S)  # digital recompute (only kept ones matter)
            soft = None  # the kept-key softmax's statistics, when done with the decisions
            decisions = 0.0  # comparator decisions made (none for the rules without comparators)
            if cfg.rule == "none":
                keep = np.broadcast_to(allowed, (g, T, S))
            elif cfg.rule == "oracle":
                keep = _mass_keep(exact, allowed, cfg.mass) | forced
            else:
                qe = qg * sc.k_chan[layer, j] if sc.k_chan is not None else qg
                r_diff = sc.r_diff[layer, j] if sc.r_diff is not None else x.r_f
                ex2 = exact.reshape(g * T, S)
                if cfg.rule == "anchor":  # reference: the anchors' best exact score, minus the margin
                    ref = _fused.anchor_max(ex2, f_ptr, f_cols, T)
                    thr = ref - np.repeat(sc.theta[layer, j * g:(j + 1) * g], T)
                else:
                    ref, thr = None, np.repeat(sc.theta[layer, j * g:(j + 1) * g], T)
                ins = [] if rec.wants_comparator_inputs else None
                keep, soft = self.keep_decisions(qe, cache.cells[j, lo:hi], self._ref(layer, j, d), r_diff,
                                                 cache.offsets[j, lo:hi], thr.astype(np.float32),
                                                 self.kappa * math.sqrt(d) / sc.k_step[layer, j], allowed, forced,
                                                 T, ex2, bias, ins)
                if ins is None:
                    keep = keep.reshape(g, T, S)
                else:
                    rec.comparator_inputs(layer, j, ins[0].reshape(g, T, S), None if ref is None else ref.reshape(g, T, 1),
                                          free, _quantile_sample(ins[1].reshape(g, T, S)[:, allowed], 0.999))
                    keep = np.broadcast_to(allowed, (g, T, S))  # calibration: the model runs unpruned
                decisions = n_free * g
            rec.keep(layer, j, positions, kpos, keep)
            # softmax over the kept keys; the ideal softmax's mass on them is a statistic
            kk = np.ascontiguousarray(keep).reshape(g * T, S)
            ek = exact.reshape(g * T, S)  # in place: the exact scores are not needed again
            tot, mass, kept, new = soft if soft is not None else _fused.kept_softmax(ek, bias, kk, T)
            bad = tot < 1e-30  # every kept weight underflowed against a pruned maximum
            if bad.any():
                z = np.where(kk[bad], (qg[bad] * scale) @ keys[j].T, -np.inf)  # ex2 now holds exponentials
                z = np.exp(z - z.max(axis=-1, keepdims=True))
                ek[bad], tot[bad] = z, z.sum(axis=-1)
            rec.counts(layer, allowed=float(n_allowed.sum()) * g, kept=float(kept.sum()), mass=float(mass.sum()),
                       rows=g * T, new=float(new.sum()) if T > 1 else 0.0,
                       new_base=float(n_allowed[1:].sum()) * g if T > 1 else 0.0, decisions=decisions, queries=g * T)
            tot = tot.astype(np.float32).reshape(g, T, 1)
            o = (ek.reshape(g * T, S) @ values[j]).reshape(g, T, d)
            o /= tot
            out[j * g:(j + 1) * g] = o
        return out


def _mass_keep(exact, allowed, mass):
    """Smallest set of keys per row holding ``mass`` of the row's softmax (exact scores)."""
    e = np.where(allowed, exact, -np.inf)
    p = e - e.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    order = np.argsort(-p, axis=-1)
    ps = np.take_along_axis(p, order, axis=-1)
    before = np.cumsum(ps, axis=-1) - ps  # mass of the keys ranked above
    keep_sorted = before < mass
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep & allowed


def _quantile_sample(a, q, n=200_000):
    """Quantile of a (a strided subsample of at most n values of) an array."""
    a = a.ravel()
    if a.size > n:
        a = a[:: a.size // n]
    return float(quantile(a, q)) if a.size else 0.0
