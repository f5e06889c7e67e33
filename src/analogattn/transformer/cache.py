"""Per-layer KV cache for the ideal kernel; circuit kernels subclass it to keep their own state."""
from __future__ import annotations

import numpy as np


class KVCache:
    """Keys and values of past tokens, (n_kv_heads, S, head_dim) each, with their positions.
    Storage grows by doubling, so appending one token at a time is cheap."""

    def __init__(self, n_kv_heads: int, head_dim: int, capacity: int = 256, dtype=np.float32):
        self._k = np.empty((n_kv_heads, capacity, head_dim), dtype)
        self._v = np.empty((n_kv_heads, capacity, head_dim), dtype)
        self._pos = np.empty(capacity, np.int64)
        self.length = 0

    def _grow(self, need: int):
        cap = self._k.shape[1]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name in ("_k", "_v"):
            a = getattr(self, name)
            b = np.empty((a.shape[0], new, a.shape[2]), a.dtype)
            b[:, : self.length] = a[:, : self.length]
            setattr(self, name, b)
        p = np.empty(new, np.int64)
        p[: self.length] = self._pos[: self.length]
        self._pos = p

    def append(self, k, v, positions) -> None:
        t = k.shape[1]
        self._grow(self.length + t)
        self._k[:, self.length:self.length + t] = k
        self._v[:, self.length:self.length + t] = v
        self._pos[self.length:self.length + t] = positions
        self.length += t

    @property
    def keys(self):
        return self._k[:, : self.length]

    @property
    def values(self):
        return self._v[:, : self.length]

    @property
    def positions(self):
        return self._pos[: self.length]

    def reset(self) -> None:
        self.length = 0
