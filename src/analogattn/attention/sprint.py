"""In-memory pruning with exact recompute: keys in a ReRAM crossbar, one comparator per column.

After SPRINT (Yazdanbakhsh et al., MICRO 2022) and LeOPArd (ISCA 2022); the facts used are in
../shared/reference/sprint-pruning.md. Signal path per layer and KV head, every circuit effect
from the surrogate bundle (``reram.column``, ``comparator.probit``):

- **keys**: each key (after per-channel equalisation, exact digitally: ``k / k_chan`` is stored and
  ``q * k_chan`` applied) is scaled by a per-head step and rounded to a ``key_bits`` two's
  complement code c in [-2^(b-1), 2^(b-1)-1] (its most significant bits); the code sets the
  conductance level ``L = c + 2^(b-1)`` (spread over the column's levels when b is below 4) of
  the key's cells, one key down one column (rows = head dims). Signed keys use *offset encoding*:
  one reference column per array holds the zero code, and the comparator sees the difference
  current I_col - I_ref (a differential TIA). Each cell's conductance carries a fixed lognormal
  variation drawn once (sigma_g of the column surrogate); the reference column has its own cells.
- **query**: scaled per token to its largest |element| (the DAC's full scale is set per query;
  the scale is known digitally) and converted by a DAC of ``dac_bits`` per sign to word-line
  voltages in [0, v_read]. The sign is carried by two read phases (positive elements, then
  negative elements with the integration sign inverted).
- **column**: the column surrogate, I = sum_i w_i x_i + c2 (sum_i x_i)^2 per phase and column,
  x_i = I_cell(L_i, V_i) (row-position IR drop in w_i, current-dependent loss in c2), and relative
  read noise on every column evaluation. The cell I-V table is factorised as
  I_cell(L, V) = a(L) b(V) (rank 1 of its SVD; the residual is reported in ``Crossbar.rank1_error``,
  1.4e-4 of the table's norm for the default cell) so the column sums are matrix products.
- **comparator**: keep when r_f (I_col - I_ref) > V_th(t) (TIA output against a reference voltage
  from a per-query threshold DAC), with the probit surrogate: a fixed offset per comparator (one per
  column, drawn once) and fresh noise per decision.
- **threshold rules** (logit units q.k/sqrt(d), turned into V_th(t) per query):
  ``fixed``: a calibrated threshold per layer and head (LeOPArd's kind of threshold);
  ``anchor`` (ours): a per-query reference, the largest *exact* score among a few anchor keys that
  are fetched anyway (the first ``sink`` tokens, the last ``local`` tokens and the query's own
  key), minus a calibrated margin per layer and head: keys whose approximate score is within the
  margin of the anchors' best are kept. Softmax weight depends on a score's distance below the
  row's maximum, which the anchors track;
  ``oracle``: not a circuit: the smallest set of keys holding ``mass`` of each row's exact softmax
  (a reference curve); ``none``: keep everything (threshold -inf).
- **recompute**: kept keys are fetched and their scores recomputed exactly in digital; softmax and
  the value sum run over the kept keys only.

Rule when nothing survives: the query's own key (computed this step, on chip, never fetched) is
always kept, so every row keeps at least one key; if every comparator prunes, the output is the
query token's own value vector.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..params import Validated, param
from ..transformer.cache import KVCache
from . import _fused
from .base import AttentionKernel, key_range, visible


@dataclasses.dataclass(frozen=True)
class SprintConfig(Validated):
    key_bits: int = param(4, "bits", 1, 4, "key MSBs stored as conductance levels (at most log2 of 16 levels)")
    dac_bits: int = param(4, "bits", 1, 12, "query DAC bits per sign (the sign is a second read phase)")
    rule: str = param("anchor", choices=("anchor", "fixed", "oracle", "none"), doc="threshold rule")
    keep: float = param(0.30, "", 0.0, 1.0, "fraction of causal scores the thresholds are calibrated to keep")
    sink: int = param(1, "tokens", 0, 4096, "anchor rule: first tokens of the sequence, always kept and exact")
    local: int = param(4, "tokens", 0, 4096, "anchor rule: most recent tokens, always kept and exact")
    budget: str = param("global", choices=("global", "layer", "head"),
                        doc="heads sharing one calibrated threshold (anchor: a margin in logits, so a shared "
                            "one keeps more keys where attention is diffuse and fewer where it is peaked)")
    mass: float = param(0.99, "", 0.0, 1.0, "oracle rule: softmax mass each query keeps")
    variation: bool = param(True, doc="fixed lognormal conductance variation per cell")
    read_noise: bool = param(True, doc="fresh relative read noise on every column evaluation")
    comparator_offset: bool = param(True, doc="fixed input offset per comparator")
    comparator_noise: bool = param(True, doc="fresh comparator noise per decision")
    equalise: bool = param(True, doc="per-channel key equalisation folded into the query (exact digitally)")
    swing: float = param(0.3, "V", 0.001, 0.9, "comparator input swing the calibration scores are scaled to "
                                              "(sets each array's differential TIA gain)")
    window: int = param(0, "tokens", 0, 10**7, "causal sliding window (0 = the model's mask)")
    seed: int = param(0, "", 0, 2**31 - 1, "seed of the variation, offset and noise draws")


@dataclasses.dataclass
class Crossbar:
    """What the kernel needs of the ReRAM column and the comparator (from a bundle, or ideal)."""

    a: np.ndarray            # (levels,) key-side factor of the cell current, A
    b: callable              # word-line voltage -> voltage-side factor (unitless)
    weights: np.ndarray      # (rows,) row-position weights (IR drop)
    c2: float                # current-dependent loss, 1/A
    sigma_g: float           # lognormal sigma of a cell's conductance
    noise_rel: float         # relative read noise per column evaluation
    v_read: float            # full-scale word-line voltage, V
    r_f: float               # TIA transimpedance, Ohm
    cmp_mu: float = 0.0      # comparator: mean input offset, V
    cmp_offset: float = 0.0  # comparator: offset sigma (fixed per comparator), V
    cmp_noise: float = 0.0   # comparator: noise sigma (per decision), V
    rank1_error: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.weights.size)

    @property
    def levels(self) -> int:
        return int(self.a.size)

    @classmethod
    def from_bundle(cls, b):
        col = b.need("reram.column")
        u, s, vt = np.linalg.svd(col.iv_current, full_matrices=False)
        sign = np.sign(vt[0, -1]) or 1.0
        a = s[0] * u[:, 0] * sign
        bv = vt[0] * sign
        err = float(np.sqrt((s[1:] ** 2).sum()) / np.sqrt((s ** 2).sum()))
        iv_v = col.iv_v.copy()
        p = b.need("comparator.probit")
        return cls(a, lambda v: np.interp(v, iv_v, bv), col.weights.copy(), float(col.c2), float(col.sigma_g),
                   float(col.noise_rel), float(col.meta.get("v_read", iv_v[-1])), float(col.meta.get("r_f", 5e3)),
                   float(p.mu), float(p.offset_sigma), float(p.noise_sigma), err)

    @classmethod
    def ideal(cls, rows: int = 64, levels: int = 16, g_step: float = 0.6e-6, v_read: float = 0.2):
        """Linear cells, no IR drop, no loss, no variation or noise, an ideal comparator."""
        a = 1e-6 + g_step * np.arange(levels)
        return cls(a, lambda v: np.asarray(v, float) / v_read, np.ones(rows), 0.0, 0.0, 0.0, v_read, 5e3)


class SprintCache(KVCache):
    """Full-precision keys and values (ordinary memory, fetched on demand) plus the crossbar's
    state: key-side cell factors a(L) x variation (S, d) and each column's comparator offset."""

    token_arrays = KVCache.token_arrays + (("_cells", 1), ("_off", 1))

    def __init__(self, n_kv_heads, head_dim, capacity=256):
        super().__init__(n_kv_heads, head_dim, capacity)
        self._cells = np.empty((n_kv_heads, capacity, head_dim), np.float32)
        self._off = np.empty((n_kv_heads, capacity), np.float32)

    def append_cells(self, cells, offsets):
        """The crossbar state of the tokens the next append() adds (call it first)."""
        self._write_ahead(_cells=cells, _off=offsets)

    @property
    def cells(self):
        return self._cells[:, : self.length]

    @property
    def offsets(self):
        return self._off[:, : self.length]


@dataclasses.dataclass
class SprintScales:
    """Calibrated per-layer quantities: key step (layers, kv_heads), per-channel key scales
    (layers, kv_heads, d) or None, thresholds (layers, heads) in logit units (``fixed``: the
    threshold; ``anchor``: the margin below the anchors' best exact score), and the
    transimpedance of each array's differential TIA (layers, kv_heads; Ohm; None = the column's
    r_f), set so calibration scores use the comparator's input swing."""

    k_step: np.ndarray
    k_chan: np.ndarray | None
    theta: np.ndarray
    r_diff: np.ndarray | None = None

    def save(self, path, meta: dict | None = None):
        from . import calfile
        calfile.save(path, "sprint", dataclasses.asdict(self), meta or {})

    @classmethod
    def load(cls, path, expect: dict | None = None):
        from . import calfile
        arrays, _ = calfile.load(path, "sprint", ("k_step", "theta"), ("k_chan", "r_diff"), expect,
                                 shapes={"k_step": ("L", "K"), "theta": ("L", "H"), "k_chan": ("L", "K", "D"),
                                         "r_diff": ("L", "K")})
        return cls(**arrays)


@dataclasses.dataclass
class SprintStats:
    """Per-layer sums: allowed (causal) scores, kept scores, ideal softmax mass kept (sum over rows),
    rows, newly fetched keys between adjacent queries and their allowed counts, comparator decisions."""

    allowed: np.ndarray
    kept: np.ndarray
    mass: np.ndarray
    rows: np.ndarray
    new: np.ndarray
    new_base: np.ndarray
    decisions: np.ndarray
    queries: np.ndarray

    @classmethod
    def zeros(cls, layers):
        z = lambda: np.zeros(layers)  # noqa: E731
        return cls(z(), z(), z(), z(), z(), z(), z(), z())

    def kept_fraction(self):
        return self.kept / np.maximum(self.allowed, 1)

    def summary(self) -> dict:
        a = max(self.allowed.sum(), 1)
        return {"kept_fraction": float(self.kept.sum() / a),
                "kept_fraction_per_layer": [float(x) for x in self.kept_fraction()],
                "softmax_mass_kept": float(self.mass.sum() / max(self.rows.sum(), 1)),
                "newly_fetched_fraction": float(self.new.sum() / max(self.new_base.sum(), 1)),
                "comparator_decisions": float(self.decisions.sum()), "queries": float(self.queries.sum()),
                "kept_scores": float(self.kept.sum()), "allowed_scores": float(self.allowed.sum())}


class SprintAttention(AttentionKernel):
    name = "sprint"

    def __init__(self, xbar: Crossbar, config: SprintConfig, scales: SprintScales | None, n_layers: int = 1):
        self.x, self.cfg, self.sc = xbar, config, scales
        self.rng = np.random.default_rng(config.seed)
        self.stats = SprintStats.zeros(n_layers)
        self.record = None  # calibration hook: called with (layer, kv head, z_approx, ref, free, v_q) per block
        self.keep_log = None  # set to a list to collect (layer, kv head, positions, key positions, keep)
        half = 2 ** (config.key_bits - 1)
        codes = np.arange(-half, half)
        self._level = np.round((codes + half) * (xbar.levels - 1) / max(2 * half - 1, 1)).astype(np.int64)
        self._ref_level = int(self._level[half])
        # DAC: codes 0..M per sign -> voltage-side factor b(m / M x v_read)
        self._m = 2 ** config.dac_bits - 1
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
        half = 2 ** (self.cfg.key_bits - 1)
        return np.clip(np.round(k / sc.k_step[layer][:, None, None]), -half, half - 1).astype(np.int64)

    def __call__(self, q, k, v, positions, mask, cache, layer):
        codes = self._codes(k, layer)
        cells = self.x.a[self._level[codes + 2 ** (self.cfg.key_bits - 1)]]
        if self.cfg.variation and self.x.sigma_g > 0:
            cells = cells * np.exp(self.x.sigma_g * self.rng.standard_normal(cells.shape))
        off = np.zeros(codes.shape[:2])
        if self.cfg.comparator_offset and self.x.cmp_offset > 0:
            off = self.x.cmp_offset * self.rng.standard_normal(off.shape)
        cache.append_cells(cells.astype(np.float32), off.astype(np.float32))  # before append moves length
        cache.append(k, v, positions)
        return self.attend(q, positions, mask, cache, layer)

    def _ref(self, layer, j, d):
        """The reference column's cells (zero code, own variation), drawn once per array."""
        key = (layer, j)
        if key not in self._ref_cells:
            r = np.full(d, self.x.a[self._ref_level])
            if self.cfg.variation and self.x.sigma_g > 0:
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
        nr = x.noise_rel if cfg.read_noise else 0.0
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
        cn2 = x.cmp_noise ** 2 if cfg.comparator_noise else 0.0
        keep = np.empty(iw.shape, np.bool_)
        pool = self._noise_pool()
        start = int(self.rng.integers(0, max(1, pool.size - iw.size)))  # the block's samples stay inside the pool
        if iw.size > pool.size:
            pool = self.rng.standard_normal(iw.size, dtype=np.float32)
            start = 0
        stats = _fused.decide_softmax(exact, iw, sab, row, offsets.astype(np.float32), r, c2, k2, cn2, pool, start,
                                      bias, allowed, forced, T, keep)
        return keep, stats

    def _noise_pool(self):
        """Standard normals for fresh per-decision noise: 2^23 drawn once from the kernel's
        seeded generator, read from a random start for each block (every decision of a block has
        its own sample; drawing 10^8 fresh normals per window would cost more than the model)."""
        if getattr(self, "_pool", None) is None:
            self._pool = self.rng.standard_normal(1 << 23, dtype=np.float32)
        return self._pool

    block = 256  # queries per block; each block sees only the keys its mask reaches

    def attend(self, q, positions, mask, cache, layer):
        H, T, d = q.shape
        out = np.empty_like(q)
        kpos = cache.positions
        for b0 in range(0, T, self.block):
            b1 = min(T, b0 + self.block)
            qp = positions[b0:b1]
            lo, hi = key_range(mask, qp, kpos)
            if self.cfg.window:
                lo = max(lo, int(np.searchsorted(kpos, qp.min() - self.cfg.window, side="right")))
            out[:, b0:b1] = self._attend_block(q[:, b0:b1], qp, mask, cache, layer, lo, hi)
        return out

    def _attend_block(self, q, positions, mask, cache, layer, lo, hi):
        cfg, x, sc = self.cfg, self.x, self.sc
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
        st = self.stats
        for j in range(n_kv):
            qg = q[j * g:(j + 1) * g].reshape(g * T, d)
            exact = ((qg * scale) @ keys[j].T).reshape(g, T, S)  # digital recompute (only kept ones matter)
            soft = None  # the kept-key softmax's statistics, when done with the decisions
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
                rec = [] if self.record is not None else None
                keep, soft = self.keep_decisions(qe, cache.cells[j, lo:hi], self._ref(layer, j, d), r_diff,
                                                 cache.offsets[j, lo:hi], thr.astype(np.float32),
                                                 self.kappa * math.sqrt(d) / sc.k_step[layer, j], allowed, forced,
                                                 T, ex2, bias, rec)
                if rec is None:
                    keep = keep.reshape(g, T, S)
                else:
                    self.record((layer, j, rec[0].reshape(g, T, S),
                                        None if ref is None else ref.reshape(g, T, 1), free,
                                        _quantile_sample(rec[1].reshape(g, T, S)[:, allowed], 0.999)))
                    keep = np.broadcast_to(allowed, (g, T, S))  # calibration: the model runs unpruned
                st.decisions[layer] += n_free * g
            st.queries[layer] += g * T
            if self.keep_log is not None:
                self.keep_log.append((layer, j, positions.copy(), kpos.copy(), np.array(keep)))
            # softmax over the kept keys; the ideal softmax's mass on them is a statistic
            kk = np.ascontiguousarray(keep).reshape(g * T, S)
            ek = exact.reshape(g * T, S)  # in place: the exact scores are not needed again
            tot, mass, kept, new = soft if soft is not None else _fused.kept_softmax(ek, bias, kk, T)
            bad = tot < 1e-30  # every kept weight underflowed against a pruned maximum
            if bad.any():
                z = np.where(kk[bad], (qg[bad] * scale) @ keys[j].T, -np.inf)  # ex2 now holds exponentials
                z = np.exp(z - z.max(axis=-1, keepdims=True))
                ek[bad], tot[bad] = z, z.sum(axis=-1)
            st.mass[layer] += float(mass.sum())
            st.rows[layer] += g * T
            st.allowed[layer] += float(n_allowed.sum()) * g
            st.kept[layer] += float(kept.sum())
            if T > 1:
                st.new[layer] += float(new.sum())
                st.new_base[layer] += float(n_allowed[1:].sum()) * g
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


def calibrate_sprint(model, token_windows, xbar: Crossbar, config: SprintConfig, keeps=(None,),
                     quantile: float = 0.999):
    """Training-free calibration on calibration text. Key scales: per channel (``equalise``) and
    per KV head the ``quantile`` of |k| maps to the largest positive code. Thresholds: per layer
    and head, the quantile of the approximate scores (``fixed``) or of (anchors' best - approximate
    score) (``anchor``) over the causal, non-forced scores of the calibration windows, so that the
    kept fraction of all causal scores (forced keys included) equals each target in ``keeps``
    (None: ``config.keep``). Returns {keep: SprintScales} (or one SprintScales when keeps has one
    entry). Decisions during calibration are noiseless and offset-free (the mean circuit)."""
    from .base import IdealAttention
    from .gaincell import _channel_scales
    c = model.config
    keeps = [config.keep if k is None else k for k in keeps]
    k_chan = _channel_scales(model, token_windows)[0] if config.equalise else None
    amax = [[[] for _ in range(c.n_kv_heads)] for _ in range(c.n_layers)]

    class _K(IdealAttention):
        def __call__(self, q, k, v, positions, mask, cache, layer):
            kk = k / k_chan[layer][:, None, :] if k_chan is not None else k
            for j in range(k.shape[0]):
                amax[layer][j].append(np.quantile(np.abs(kk[j]), quantile))
            return super().__call__(q, k, v, positions, mask, cache, layer)

    for ids in token_windows:
        rec = _K()
        model.forward(ids, caches=model.new_caches(rec), kernel=rec, logits="none")
    half = 2 ** (config.key_bits - 1)
    k_step = np.array([[np.mean(a) for a in layer] for layer in amax]) / max(half - 1, 0.5)
    scales = SprintScales(k_step, k_chan, np.zeros((c.n_layers, c.n_heads)))
    out = {}
    # one recording pass of the mean circuit (no noise, no offsets, no variation): approximate
    # scores for the thresholds and the TIA output range for each array's gain
    quiet = dataclasses.replace(config, read_noise=False, comparator_noise=False, comparator_offset=False,
                                variation=False, rule="fixed" if config.rule not in ("fixed", "anchor") else config.rule)
    kern = SprintAttention(xbar, quiet, scales, c.n_layers)
    kern.sc.theta[:] = 0.0
    pools, vmax = {}, np.zeros((c.n_layers, c.n_kv_heads))
    rng = np.random.default_rng(0)

    def take(item):  # reduce each block at once: whole windows of (T x S) scores would be GBs
        layer, j, z, ref, free, vq = item
        vmax[layer, j] = max(vmax[layer, j], vq)
        for i in range(z.shape[0]):
            vals = (ref[i] - z[i])[free] if ref is not None else z[i][free]
            if vals.size > 2_000:  # a 5% random subsample (same rate everywhere) is plenty for quantiles
                vals = vals[rng.integers(0, vals.size, max(2_000, vals.size // 20))]
            pools.setdefault((layer, j * z.shape[0] + i), []).append((vals.astype(np.float32), int(free.sum())))

    kern.record = take
    for ids in token_windows:
        model.forward(ids, caches=model.new_caches(kern), kernel=kern, logits="none")
    scales.r_diff = xbar.r_f * config.swing / np.maximum(vmax, 1e-12)
    if config.rule in ("fixed", "anchor"):
        # the forced and allowed counts per row are the same for every head
        n_allowed_total = _allowed_count(token_windows, config)
        # heads sharing one threshold: every head alone, every layer, or the whole model
        groups = {}
        for (layer, h) in pools:
            key = {"head": (layer, h), "layer": layer, "global": 0}[config.budget]
            groups.setdefault(key, []).append((layer, h))
        for keep in keeps:
            theta = np.zeros((c.n_layers, c.n_heads))
            for members in groups.values():
                vals = np.concatenate([p[0] for m in members for p in pools[m]])
                n_free = sum(p[1] for p in pools[members[0]])  # the same for every head
                n_forced = n_allowed_total - n_free
                want = float(np.clip((keep * n_allowed_total - n_forced) / max(n_free, 1), 0.0, 1.0))
                if want <= 0:
                    t = np.inf if config.rule == "fixed" else -np.inf
                elif config.rule == "fixed":
                    t = np.quantile(vals, 1 - want) if vals.size else 0.0
                else:
                    t = np.quantile(vals, want) if vals.size else 0.0
                for layer, h in members:
                    theta[layer, h] = t
            out[keep] = SprintScales(k_step, k_chan, theta, scales.r_diff)
    else:
        out = {k: SprintScales(k_step, k_chan, np.zeros((c.n_layers, c.n_heads)), scales.r_diff) for k in keeps}
    return out if len(keeps) > 1 else out[keeps[0]]


def _quantile_sample(a, q, n=200_000):
    """Quantile of a (a strided subsample of at most n values of) an array."""
    a = a.ravel()
    if a.size > n:
        a = a[:: a.size // n]
    return float(np.quantile(a, q)) if a.size else 0.0


def _allowed_count(token_windows, config):
    """Causal (and windowed) scores of the calibration windows: the same for every head."""
    n = 0
    for ids in token_windows:
        t = len(ids)
        w = config.window or t
        n += sum(min(i + 1, w) for i in range(t))
    return n


__all__ = ["SprintAttention", "SprintConfig", "Crossbar", "SprintScales", "SprintStats", "calibrate_sprint"]
