"""The one harness through which calibration sees a model.

A calibration never imports the transformer: it receives the model object (duck-typed: ``config``
with n_layers, n_heads, n_kv_heads, head_dim; ``new_caches(kernel)``; ``forward(ids, caches=,
kernel=, logits="none")``) and goes through this module:

- :func:`capture` runs the ideal model once per calibration window and records every layer's
  q, k, v (what the arrays would be given); every calibration step that needs the ideal model's
  q, k, v reads this one record (:class:`Captured`);
- :func:`run` runs the model through a given kernel (the steps that need what the circuit itself
  makes of the text: value-tile full scales, comparator inputs), and :class:`Tap` runs it
  through a kernel while a callback sees each layer's q, k, v.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import AttentionKernel, IdealAttention


@dataclasses.dataclass
class Captured:
    """The ideal model's attention inputs on calibration windows: ``layers[l]`` is a list, one
    entry per window, of (q, k, v, positions, mask)."""

    layers: list
    n_windows: int

    def layer(self, layer: int, windows: int | None = None) -> list:
        """The entries of one layer, of the first ``windows`` windows (None: all)."""
        return self.layers[layer][:windows]

    def head_max(self, layer: int):
        """Per KV head and channel, over every window: max |q| (pooled over the query heads that
        read the KV head), max |k| and max |v|; each (n_kv, d)."""
        qm = km = vm = None
        for q, k, v, _, _ in self.layers[layer]:
            g = q.shape[0] // k.shape[0]
            qq = np.abs(q).reshape(k.shape[0], g, -1, q.shape[-1]).max(axis=(1, 2))
            kk, vv = np.abs(k).max(axis=1), np.abs(v).max(axis=1)
            if qm is None:
                qm, km, vm = np.zeros(qq.shape), np.zeros(kk.shape), np.zeros(vv.shape)
            np.maximum(qm, qq, out=qm)
            np.maximum(km, kk, out=km)
            np.maximum(vm, vv, out=vm)
        return qm, km, vm

    def channel_scales(self):
        """Per layer and KV head, per channel: k_chan = sqrt(max|k_d| / max|q_d|) (q pooled over the
        heads that read this KV head; SmoothQuant's balance with alpha = 1/2) and v_chan = max|v_d|:
        the per-channel equalisation every kernel with signed arrays uses."""
        qm, km, vm = (np.stack(x) for x in zip(*(self.head_max(i) for i in range(len(self.layers)))))
        k_chan = np.sqrt(np.maximum(km, 1e-6) / np.maximum(qm, 1e-6))
        return k_chan, np.maximum(vm, 1e-6)


class Tap(AttentionKernel):
    """Runs ``inner`` and first calls ``see(layer, q, k, v, positions, mask)``; with ``transform``
    (q, k, v, layer) -> (q, k, v), the inner kernel gets the transformed arrays."""

    name = "tap"

    def __init__(self, inner, see, transform=None):
        self.inner, self.see, self.transform = inner, see, transform

    def new_cache(self, layer, n_kv_heads, head_dim):
        return self.inner.new_cache(layer, n_kv_heads, head_dim)

    def __call__(self, q, k, v, positions, mask, cache, layer):
        if self.transform is not None:
            q, k, v = self.transform(q, k, v, layer)
        self.see(layer, q, k, v, positions, mask)
        return self.inner(q, k, v, positions, mask, cache, layer)


def run(model, token_windows, kernel) -> None:
    """The model over each window (a fresh cache each), attention by ``kernel``; hidden states
    are discarded: the kernel's recorder or a :class:`Tap` collects what is wanted."""
    for ids in token_windows:
        model.forward(ids, caches=model.new_caches(kernel), kernel=kernel, logits="none")


def capture(model, token_windows) -> Captured:
    """Record the ideal model's q, k, v, positions and mask per layer on each window."""
    layers = [[] for _ in range(model.config.n_layers)]

    def see(layer, q, k, v, positions, mask):
        layers[layer].append((q.copy(), k.copy(), v.copy(), positions.copy(), mask))

    for ids in token_windows:
        tap = Tap(IdealAttention(), see)
        run(model, [ids], tap)
    return Captured(layers, len(token_windows))
