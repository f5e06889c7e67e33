"""The decode weight store: the GGUF file's own quantised blocks, kept as they are and read by
compiled matrix-vector products, so one decoded token streams the fewest bytes.

A token of decoding multiplies one row vector by every weight matrix, so its speed is the speed of
reading the weights. The float32 weights (used for prefill, where the matrix products are
compute-bound) are 4 bytes a weight; SmolLM2's GGUF blocks are Q4_1 (32 weights: a float16 scale
d and minimum m, 16 bytes of 4-bit codes q; weight = d q + m) and Q8_0 for the tied embedding
(32 weights: d and 32 signed bytes; weight = d q): 0.625 and 1.06 bytes a weight. The products
use the same codes and scales that dequantisation turns into the float32 weights (the blocks are
checked to dequantise to exactly the float32 weights), per block as d (sum x q) + m (sum x), with
the blocks re-laid so that 64 output rows sit side by side in vector lanes (each byte read once,
no per-row horizontal sums: 1.6-2.5x faster than rebuilding each weight d q + m and summing a row
at a time); only float32 rounding differs from the float32 product (the sums run in another
order; tested equal to rounding, and greedy decoding of SmolLM2 gives the same tokens).
Perplexity runs never use it (they are prefill); :func:`generate` does.
"""
from __future__ import annotations

import functools

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


GROUP = 64  # output rows interleaved in the packed layout (one vector lane per row; 32 and 64
# measured alike, 16 let LLVM unroll the row loop into scalar code instead of vectorising it)


@nb.jit(inline="always", **_par)
def _block_sums(xb, xs):
    """xs[b] = sum of block b of x (xb: x as (blocks, 32))."""
    for b in range(xb.shape[0]):
        s = np.float32(0.0)
        for i in range(32):
            s += xb[b, i]
        xs[b] = s


@nb.jit(**_par)
def q4_1_gemv_packed(x, P, D, M, g0, g1, y):
    """y[r] (rows of groups g0..g1, y's first element = group g0's first row) = sum_i x[i] w[r, i],
    w = d q + m per block of 32 inputs, from the packed layout (:meth:`QuantMatrix.packed`):
    P (groups, blocks, 16, G) uint8 = the GGUF byte k of block b of row g G + r (low nibble:
    input 32 b + k, high: 32 b + 16 + k), D / M (groups, blocks, G) float32. Per block each row
    sums d (sum_i x_i q_i) + m (sum_i x_i), the G rows of a group side by side in vector lanes, so
    a byte is read once and no row needs a horizontal sum (the nibble as a float:
    hi = floor(byte / 16), lo = byte - 16 hi, exact)."""
    _, nb_, _, G = P.shape
    xb = x.reshape(nb_, 32)
    xs = np.empty(nb_, np.float32)
    _block_sums(xb, xs)
    acc = np.empty(G, np.float32)
    t = np.empty(G, np.float32)
    n = y.shape[0]
    sixteenth, sixteen = np.float32(0.0625), np.float32(16.0)
    for g in range(g0, g1):
        acc[:] = np.float32(0.0)
        for b in range(nb_):
            t[:] = np.float32(0.0)
            xr, Pb = xb[b], P[g, b]
            for k in range(16):
                x0, x1, p = xr[k], xr[16 + k], Pb[k]
                for r in range(G):
                    f = np.float32(p[r])
                    hi = np.floor(f * sixteenth)
                    t[r] += x0 * (f - sixteen * hi) + x1 * hi
            Db, Mb, xsb = D[g, b], M[g, b], xs[b]
            for r in range(G):
                acc[r] += Db[r] * t[r] + Mb[r] * xsb
        o = (g - g0) * G
        for r in range(min(G, n - o)):
            y[o + r] = acc[r]


@nb.jit(**_par)
def q8_0_gemv_packed(x, P, D, g0, g1, y):
    """As :func:`q4_1_gemv_packed` for Q8_0 (w = d q): P (groups, blocks, 32, G) int8, D (groups,
    blocks, G) float32."""
    _, nb_, _, G = P.shape
    xb = x.reshape(nb_, 32)
    acc = np.empty(G, np.float32)
    t = np.empty(G, np.float32)
    n = y.shape[0]
    for g in range(g0, g1):
        acc[:] = np.float32(0.0)
        for b in range(nb_):
            t[:] = np.float32(0.0)
            xr, Pb = xb[b], P[g, b]
            for k in range(32):
                xk, p = xr[k], Pb[k]
                for r in range(G):
                    t[r] += xk * np.float32(p[r])
            Db = D[g, b]
            for r in range(G):
                acc[r] += Db[r] * t[r]
        o = (g - g0) * G
        for r in range(min(G, n - o)):
            y[o + r] = acc[r]


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

    @functools.cached_property
    def packed(self):
        """The blocks re-laid for :func:`q4_1_gemv_packed` / :func:`q8_0_gemv_packed`: GROUP
        output rows side by side (rows padded with zero blocks to a whole group), built on the
        first product (0.66 / 1.06 bytes a weight more, for decoding only)."""
        G = GROUP
        n_out, nb_ = self.qs.shape[:2]
        ng = -(-n_out // G)

        def rows(a):
            full = np.zeros((ng * G,) + a.shape[1:], a.dtype)
            full[:n_out] = a
            return full.reshape((ng, G) + a.shape[1:])
        P = np.ascontiguousarray(rows(self.qs).transpose(0, 2, 3, 1))  # (groups, blocks, bytes, G)
        if self.kind == "Q4_1":
            sc = rows(self.scales)  # (groups, G, blocks, 2)
            return P, np.ascontiguousarray(sc[..., 0].transpose(0, 2, 1)), np.ascontiguousarray(
                sc[..., 1].transpose(0, 2, 1))
        return P, np.ascontiguousarray(rows(self.scales).transpose(0, 2, 1))

    def gemv(self, x, out):
        """out = x @ W; a matrix of at least ``LANE_ROWS`` outputs (SmolLM2's 49,152-row logits)
        has its row groups split over the two lanes (:mod:`.lanes`); each row's sum is the same
        whichever lane makes it."""
        x = np.ascontiguousarray(x, np.float32)
        pk = self.packed
        G = pk[0].shape[3]
        ng = pk[0].shape[0]
        if self.kind == "Q4_1":
            def fn(g0, g1):
                q4_1_gemv_packed(x, pk[0], pk[1], pk[2], g0, g1, out[g0 * G:g1 * G])
        else:
            def fn(g0, g1):
                q8_0_gemv_packed(x, pk[0], pk[1], g0, g1, out[g0 * G:g1 * G])
        lanes.split(fn, ng, -(-LANE_ROWS // G))
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
