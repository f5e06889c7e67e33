"""Training-free calibration of the pruning kernel through the shared capture harness
(:mod:`..capture`): key scales, each array's TIA gain and the thresholds. The model is an
argument (duck-typed)."""
from __future__ import annotations

import numpy as np

from .. import capture as cap
from .. import stats  # stats.quantile: np.quantile's values, faster on large arrays
from ..recorders import Recorder
from .config import SprintConfig
from .device import Crossbar
from .kernel import SprintAttention
from .scales import SprintScales


class _ComparatorPools(Recorder):
    """Per (layer, query head) a subsample of the comparator's approximate scores on free keys
    (``fixed``) or of the anchors' best minus them (``anchor``), with the free count; per array the
    largest quantile of |comparator input| (volts). Each block is reduced at once: whole windows
    of (T x S) scores would be GBs."""

    wants_comparator_inputs = True

    def __init__(self, n_layers, n_kv_heads):
        self.pools, self.vmax = {}, np.zeros((n_layers, n_kv_heads))
        self.rng = np.random.default_rng(0)

    def comparator_inputs(self, layer, j, z, ref, free, vq):
        self.vmax[layer, j] = max(self.vmax[layer, j], vq)
        for i in range(z.shape[0]):
            vals = (ref[i] - z[i])[free] if ref is not None else z[i][free]
            if vals.size > 2_000:  # a 5% random subsample (same rate everywhere) is plenty for quantiles
                vals = vals[self.rng.integers(0, vals.size, max(2_000, vals.size // 20))]
            self.pools.setdefault((layer, j * z.shape[0] + i), []).append((vals.astype(np.float32), int(free.sum())))


def key_steps(captured: cap.Captured, k_chan, key_bits: int, quantile: float):
    """Per layer and KV head: the ``quantile`` of |k / k_chan| (mean over the windows) mapped to
    the largest positive key code."""
    amax = []
    for layer in range(len(captured.layers)):
        per_head = None
        for _, k, _, _, _ in captured.layer(layer):
            kk = k / k_chan[layer][:, None, :] if k_chan is not None else k
            per_head = per_head or [[] for _ in range(k.shape[0])]
            for j in range(k.shape[0]):
                per_head[j].append(stats.quantile(np.abs(kk[j]), quantile))
        amax.append([np.mean(a) for a in per_head])
    half = 2 ** (key_bits - 1)
    return np.array(amax) / max(half - 1, 0.5)


def calibrate_sprint(model, token_windows, xbar: Crossbar, config: SprintConfig, keeps=(None,),
                     quantile: float | None = None, captured: cap.Captured | None = None):
    """Training-free calibration on calibration text. Key scales: per channel (``equalise``) and
    per KV head the ``quantile`` of |k| (default: the config's key_quantile) maps to the largest
    positive code, on the ideal model's k (``captured`` on the windows, else captured here).
    Thresholds: per layer and head, the quantile of the approximate scores (``fixed``) or of
    (anchors' best - approximate score) (``anchor``) over the causal, non-forced scores of the
    calibration windows, run through the mean circuit (no noise, no offsets, no variation; the
    model unpruned), so that the kept fraction of all causal scores (forced keys included) equals
    each target in ``keeps`` (None: the config's keep). Returns {keep: SprintScales} (or one
    SprintScales when keeps has one entry)."""
    c = model.config
    pr = config.pruning
    quantile = config.calibrate.key_quantile if quantile is None else quantile
    keeps = [pr.keep if k is None else k for k in keeps]
    captured = captured if captured is not None else cap.capture(model, token_windows)
    k_chan = captured.channel_scales()[0] if config.calibrate.equalise else None
    k_step = key_steps(captured, k_chan, config.converters.key_bits, quantile)
    scales = SprintScales(k_step, k_chan, np.zeros((c.n_layers, c.n_heads)))
    out = {}
    # one recording pass of the mean circuit: approximate scores for the thresholds and the TIA
    # output range for each array's gain
    quiet = config.replace(variation=False, circuit_noise=False,
                           rule="fixed" if pr.rule not in ("fixed", "anchor") else pr.rule)
    rec = _ComparatorPools(c.n_layers, c.n_kv_heads)
    cap.run(model, token_windows, SprintAttention(xbar, quiet, scales, c.n_layers, recorder=rec))
    pools, vmax = rec.pools, rec.vmax
    scales.r_diff = xbar.r_f * config.calibrate.swing / np.maximum(vmax, 1e-12)
    if pr.rule in ("fixed", "anchor"):
        # the forced and allowed counts per row are the same for every head
        n_allowed_total = _allowed_count(token_windows, config)
        # heads sharing one threshold: every head alone, every layer, or the whole model
        groups = {}
        for (layer, h) in pools:
            key = {"head": (layer, h), "layer": layer, "global": 0}[pr.budget]
            groups.setdefault(key, []).append((layer, h))
        for keep in keeps:
            theta = np.zeros((c.n_layers, c.n_heads))
            for members in groups.values():
                vals = np.concatenate([p[0] for m in members for p in pools[m]])
                n_free = sum(p[1] for p in pools[members[0]])  # the same for every head
                n_forced = n_allowed_total - n_free
                want = float(np.clip((keep * n_allowed_total - n_forced) / max(n_free, 1), 0.0, 1.0))
                if want <= 0:
                    t = np.inf if pr.rule == "fixed" else -np.inf
                elif pr.rule == "fixed":
                    t = stats.quantile(vals, 1 - want) if vals.size else 0.0
                else:
                    t = stats.quantile(vals, want) if vals.size else 0.0
                for layer, h in members:
                    theta[layer, h] = t
            out[keep] = SprintScales(k_step, k_chan, theta, scales.r_diff)
    else:
        out = {k: SprintScales(k_step, k_chan, np.zeros((c.n_layers, c.n_heads)), scales.r_diff) for k in keeps}
    return out if len(keeps) > 1 else out[keeps[0]]


def _allowed_count(token_windows, config):
    """Causal (and windowed) scores of the calibration windows: the same for every head."""
    n = 0
    for ids in token_windows:
        t = len(ids)
        w = config.pruning.window or t
        n += sum(min(i + 1, w) for i in range(t))
    return n
