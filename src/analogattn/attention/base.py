"""The attention interface every kernel implements.

A model calls, per layer, ``kernel(q, k, v, positions, mask, cache, layer)`` with

- ``q``: (n_heads, T, d) queries of the T new tokens (after rotary embedding, if any)
- ``k``, ``v``: (n_kv_heads, T, d) keys and values of the same new tokens
- ``positions``: (T,) absolute positions of the new tokens
- ``mask``: a :class:`Mask` (causal, sliding window of W tokens, or bidirectional)
- ``cache``: the layer's cache object, created by ``kernel.new_cache`` and owned by the kernel
  (a circuit kernel keeps its own stored state there, e.g. written cell voltages and write times)

and gets back (n_heads, T, d). n_heads must be a multiple of n_kv_heads (grouped-query
attention); query head h reads key/value head h // (n_heads / n_kv_heads), without repeating K/V.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import ParameterError
from .cache import KVCache


@dataclasses.dataclass(frozen=True)
class Mask:
    kind: str = "causal"  # causal | sliding | bidirectional
    window: int = 0  # tokens, for kind == "sliding" (a query sees itself and W-1 earlier keys)

    def __post_init__(self):
        if self.kind not in ("causal", "sliding", "bidirectional"):
            raise ParameterError("mask.kind", self.kind, "causal, sliding or bidirectional")
        if self.kind == "sliding" and self.window < 1:
            raise ParameterError("mask.window", self.window, ">= 1 token")

    def allowed(self, q_pos, k_pos):
        """Boolean (T, S): may query at q_pos attend to key at k_pos."""
        q = np.asarray(q_pos)[:, None]
        k = np.asarray(k_pos)[None, :]
        if self.kind == "bidirectional":
            return np.ones((q.shape[0], k.shape[1]), bool)
        ok = k <= q
        if self.kind == "sliding":
            ok &= k > q - self.window
        return ok


class AttentionKernel:
    """Base class: subclasses implement ``attend`` over the cache contents."""

    name = "abstract"

    def new_cache(self, layer: int, n_kv_heads: int, head_dim: int):
        return KVCache(n_kv_heads, head_dim)

    def __call__(self, q, k, v, positions, mask: Mask, cache, layer: int):
        cache.append(k, v, positions)
        return self.attend(q, positions, mask, cache, layer)

    def attend(self, q, positions, mask, cache, layer):  # pragma: no cover - interface
        raise NotImplementedError


def grouped(q, n_kv):
    """(H, T, d) -> (n_kv, H/n_kv, T, d): query heads grouped by the KV head they read."""
    h, t, d = q.shape
    return q.reshape(n_kv, h // n_kv, t, d)


def visible(mask: "Mask", q_pos, k_pos, window: int = 0):
    """Boolean (T, S) of the keys each query may use: the model's mask, narrowed to a kernel's
    own sliding window of ``window`` tokens when that is non-zero."""
    ok = mask.allowed(q_pos, k_pos)
    if window:
        ok &= np.asarray(k_pos)[None, :] > np.asarray(q_pos)[:, None] - window
    return ok


def mask_bias(mask: "Mask", q_pos, k_pos):
    """Additive float32 bias (T, S): 0 where allowed, -inf elsewhere."""
    return np.where(mask.allowed(q_pos, k_pos), np.float32(0), np.float32(-np.inf)).astype(np.float32)


def exp_rows_(s):
    """In place: s <- exp(s - row max); returns the row sums (1 for fully masked rows)."""
    m = s.max(axis=-1, keepdims=True)
    m[~np.isfinite(m)] = 0
    s -= m
    np.exp(s, out=s)
    tot = s.sum(axis=-1, keepdims=True)
    tot[tot == 0] = 1
    return tot


def softmax_rows_(s):
    """In-place row softmax of a float32 (..., S) array; fully masked rows give zeros."""
    s /= exp_rows_(s)
    return s


def key_range(mask: "Mask", q_pos, k_pos) -> tuple[int, int]:
    """[lo, hi) slice of the (ascending) cached key positions that any of q_pos may see."""
    if mask.kind == "bidirectional":
        return 0, len(k_pos)
    hi = int(np.searchsorted(k_pos, q_pos.max(), side="right"))
    lo = 0
    if mask.kind == "sliding":
        lo = int(np.searchsorted(k_pos, q_pos.min() - mask.window, side="right"))
    return lo, hi


class IdealAttention(AttentionKernel):
    """Exact softmax attention (float32). Queries go in blocks of ``block`` tokens, each against
    only the keys its mask can reach (causal blocks skip the future), one 2-D matmul per KV head."""

    name = "ideal"
    block = 128

    def __init__(self):
        self._memo = {}

    def _bias(self, mask, qp, kp):
        """Mask bias, remembered between layers (every layer sees the same positions)."""
        key = (mask, qp.tobytes(), kp.tobytes())
        b = self._memo.get(key)
        if b is None:
            if len(self._memo) > 64:
                self._memo.clear()
            b = self._memo[key] = mask_bias(mask, qp, kp)
        return b

    def attend(self, q, positions, mask, cache, layer):
        keys, values, kpos = cache.keys, cache.values, cache.positions
        n_kv, _, d = keys.shape
        h, t, _ = q.shape
        g = h // n_kv
        out = np.empty_like(q)
        q = q * np.float32(1.0 / math.sqrt(d))  # scale folded into the queries
        for b0 in range(0, t, self.block):
            b1 = min(t, b0 + self.block)
            qp = positions[b0:b1]
            lo, hi = key_range(mask, qp, kpos)
            tb, s = b1 - b0, hi - lo
            # keys every query of the block may see need no mask; only the rest get the bias
            if mask.kind == "bidirectional":
                free = s
            else:
                free = int(np.searchsorted(kpos[lo:hi], qp.min(), side="right"))
                if mask.kind == "sliding":
                    free = 0 if (kpos[lo:hi] <= qp.max() - mask.window).any() else free
            bias = self._bias(mask, qp, kpos[lo + free:hi]) if free < s else None
            for j in range(n_kv):
                qj = q[j * g:(j + 1) * g, b0:b1].reshape(g * tb, d)
                sc = (qj @ keys[j, lo:hi].T).reshape(g, tb, s)
                if bias is not None:
                    sc[:, :, free:] += bias
                tot = exp_rows_(sc)
                o = (sc.reshape(g * tb, s) @ values[j, lo:hi]).reshape(g, tb, d)
                o /= tot  # normalise the (tb x d) output, not the (tb x s) weights
                out[j * g:(j + 1) * g, b0:b1] = o
        return out
