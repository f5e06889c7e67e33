"""The decode weight store: the GGUF file's own quantised blocks, kept as they are and read by
compiled matrix-vector products, so one decoded token streams the fewest bytes.

A token of decoding multiplies one row vector by every weight matrix, so its speed is the speed of
reading the weights. The float32 weights (used for prefill, where the matrix products are
compute-bound) are 4 bytes a weight; SmolLM2's GGUF blocks are Q4_1 (32 weights: a float16 scale
d and minimum m, 16 bytes of 4-bit codes q; weight = d q + m) and Q8_0 for the tied embedding
(32 weights: d and 32 signed bytes; weight = d q): 0.625 and 1.06 bytes a weight. The products
rebuild each weight d q + m in registers from the same codes and scales that dequantisation turns
into the float32 weights (the blocks are checked to dequantise to exactly the float32 weights),
so only float32 rounding differs (the multiply-add may be fused, the sums run in another order;
tested equal to rounding, and greedy decoding of SmolLM2 gives the same tokens). Perplexity runs never use it (they are prefill); :func:`generate` does.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from . import lanes

# serial: on this 2-core machine shared with other jobs, numba's (and BLAS's) two threads
# handing off per product measured 5-10x slower than one thread (1 ms for a 3072 x 576 Q4_1
# product serial, 9.6 ms parallel, 12 ms for NumPy's float32 product, under load)
# Only products of at least LANE_ROWS outputs (the logits, 4-8 ms serial) are split over the two
# lanes: one hand-off to a waiting thread costs 20-100 us, and up to a time slice when another
# process holds the other core, against 0.05-0.2 ms for a layer's products.
LANE_ROWS = 8192
_par = dict(nopython=True, cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp", "nsz", "afn"})


@nb.jit(**_par)
def q4_1_gemv(x, qs, dm, y):
    """y[o] = sum_i x[i] w[o, i] with w = d q + m per block of 32 inputs; qs (out, nb, 16) uint8:
    low nibbles are weights 0..15 of a block, high nibbles 16..31; dm (out, nb, 2) float32 (d, m).
    32 accumulator lanes per row (one horizontal sum a row, not one a block); 4 rows at a time,
    so each block of x is loaded once for 4 rows (1.4-1.7x faster than a row at a time, the same
    sums in the same order)."""
    n_out, nb_, _ = qs.shape
    xb = x.reshape(nb_, 32)
    acc = np.zeros((4, 32), np.float32)
    for o0 in range(0, n_out, 4):
        rows = min(4, n_out - o0)
        acc[:] = np.float32(0.0)
        for b in range(nb_):
            xr = xb[b]
            for r in range(rows):
                q = qs[o0 + r, b]
                d, m = dm[o0 + r, b, 0], dm[o0 + r, b, 1]
                a = acc[r]
                for i in range(16):
                    c = np.int32(q[i])
                    a[i] += xr[i] * (d * np.float32(c & 15) + m)
                    a[16 + i] += xr[16 + i] * (d * np.float32(c >> 4) + m)
        for r in range(rows):
            s = np.float32(0.0)
            for i in range(32):
                s += acc[r, i]
            y[o0 + r] = s


@nb.jit(**_par)
def q8_0_gemv(x, qs, d, y):
    """y[o] = sum_i x[i] w[o, i] with w = d q per block of 32 inputs; qs (out, nb, 32) int8."""
    n_out, nb_, _ = qs.shape
    for o in range(n_out):
        acc = np.zeros(32, np.float32)
        for b in range(nb_):
            q = qs[o, b]
            db = d[o, b]
            for i in range(32):
                acc[i] += x[32 * b + i] * (db * np.float32(q[i]))
        s = np.float32(0.0)
        for i in range(32):
            s += acc[i]
        y[o] = s


class QuantMatrix:
    """One (in, out) weight matrix as its GGUF blocks (out rows, blocks along the input)."""

    def __init__(self, kind, qs, scales, n_in):
        self.kind, self.qs, self.scales, self.n_in = kind, qs, scales, n_in
        self.n_out = qs.shape[0]

    @classmethod
    def from_gguf(cls, tensor):
        """From a ``gguf`` reader tensor of type Q4_1 or Q8_0 (None for other types)."""
        name = tensor.tensor_type.name
        raw = np.asarray(tensor.data)
        n_out = raw.shape[0]
        if name == "Q4_1":
            blocks = raw.reshape(n_out, -1, 20)
            dm = blocks[:, :, :4].copy().view(np.float16).astype(np.float32)
            return cls("Q4_1", np.ascontiguousarray(blocks[:, :, 4:]), np.ascontiguousarray(dm), blocks.shape[1] * 32)
        if name == "Q8_0":
            blocks = raw.reshape(n_out, -1, 34)
            d = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)
            return cls("Q8_0", np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8), np.ascontiguousarray(d),
                       blocks.shape[1] * 32)
        return None

    def dequantized(self):
        """The (in, out) float32 matrix these blocks stand for (d q + m, as gguf computes it)."""
        if self.kind == "Q4_1":
            q = np.concatenate([self.qs & 15, self.qs >> 4], axis=2).astype(np.float32)
            w = self.scales[:, :, :1] * q + self.scales[:, :, 1:]
        else:
            w = self.scales[:, :, None] * self.qs.astype(np.float32)
        return w.reshape(self.n_out, -1).T

    def gemv(self, x, out):
        """out = x @ W; a matrix of at least ``LANE_ROWS`` outputs (SmolLM2's 49,152-row logits)
        has its rows split over the two lanes (:mod:`.lanes`); each row's sum is the same
        whichever lane makes it."""
        x = np.ascontiguousarray(x, np.float32)
        fn = q4_1_gemv if self.kind == "Q4_1" else q8_0_gemv
        qs, sc = self.qs, self.scales
        lanes.split(lambda o0, o1: fn(x, qs[o0:o1], sc[o0:o1], out[o0:o1]), self.n_out, LANE_ROWS)
        return out


class DecodeStore:
    """Quantised blocks of a llama GGUF's matrices by the model's weight names (w_qkv, w_gate_up
    concatenated along the output as the float32 weights are), or None when the file's types are
    not Q4_1 / Q8_0 everywhere (then decoding uses the float32 weights)."""

    def __init__(self, mats):
        self.mats = mats

    @classmethod
    def from_gguf(cls, path, n_layers):
        import gguf
        r = gguf.GGUFReader(str(path))
        t = {x.name: x for x in r.tensors}
        mats = {}

        def q(name):
            m = QuantMatrix.from_gguf(t[name])
            if m is None:
                raise KeyError(name)
            return m

        try:
            for i in range(n_layers):
                b = f"blk.{i}."
                parts = [q(b + n) for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight")]
                mats[f"l{i}.w_qkv"] = _stack(parts)
                mats[f"l{i}.wo"] = q(b + "attn_output.weight")
                mats[f"l{i}.w_gate_up"] = _stack([q(b + "ffn_gate.weight"), q(b + "ffn_up.weight")])
                mats[f"l{i}.w_down"] = q(b + "ffn_down.weight")
            mats["lm_head"] = q("output.weight" if "output.weight" in t else "token_embd.weight")
        except KeyError:
            return None
        return cls(mats)


def _stack(parts):
    if len({p.kind for p in parts}) != 1:
        raise KeyError("mixed")
    return QuantMatrix(parts[0].kind, np.concatenate([p.qs for p in parts]),
                       np.concatenate([p.scales for p in parts]), parts[0].n_in)
