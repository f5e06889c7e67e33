"""Per-layer KV cache: the ideal kernel's, and the base the circuit kernels subclass to keep their own
state (a kernel creates its caches through ``new_cache``; the transformer only passes them back)."""
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

    # arrays indexed by token, and their token axis (subclasses add their own)
    token_arrays = (("_k", 1), ("_v", 1), ("_pos", 0))

    def _grow(self, need: int):
        """Room for ``need`` tokens; new space is zero (a subclass's per-token state that is not
        always written, e.g. the gain cell's mismatch deviations of a cell model without Monte
        Carlo data, must read as zero, never as uninitialised memory)."""
        cap = self._pos.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name, axis in self.token_arrays:
            a = getattr(self, name)
            shape = list(a.shape)
            shape[axis] = new
            b = np.zeros(shape, a.dtype)
            keep = [slice(None)] * a.ndim
            keep[axis] = slice(0, self.length)
            b[tuple(keep)] = a[tuple(keep)]
            setattr(self, name, b)

    def _write_ahead(self, **arrays) -> None:
        """Write subclass state of the tokens the next append() adds: each named token array
        (see token_arrays, token axis 1) gets its values at [length, length + t)."""
        t = next(iter(arrays.values())).shape[1]
        self._grow(self.length + t)
        for name, value in arrays.items():
            getattr(self, name)[:, self.length:self.length + t] = value

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
