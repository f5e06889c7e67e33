"""Model blocks as plain functions over arrays: Llama (GQA, RoPE, RMSNorm, SwiGLU), BERT
(encoder, mean pooling) and GPT-2. Weights are dicts of float32 arrays stored as (in, out) so a
linear layer is ``x @ W``."""
from __future__ import annotations

import dataclasses
import sys
import threading

import numpy as np

from ..attention.base import AttentionKernel, IdealAttention, Mask, blas_single_thread
from . import gemm, lanes, ops


@dataclasses.dataclass
class Config:
    arch: str  # llama | bert | gpt2
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab: int
    norm_eps: float
    rope_base: float = 10000.0
    max_positions: int = 0
    causal: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class Model:
    """A loaded model: config, weights, tokenizer, and a forward pass with a pluggable kernel."""

    def __init__(self, config: Config, weights: dict, tokenizer, name: str = ""):
        self.config = config
        self.w = weights
        self.tokenizer = tokenizer
        self.name = name
        self.gguf_path = None  # set by the GGUF loader: the decode store reads its blocks
        self.decode_store = None
        self.decode_active = False  # generate() turns it on for its own calls

    @property
    def weight_products(self) -> str:
        """Which BLAS multiplies this model's prefill rows by its weights (:mod:`.gemm`): the Llama
        path's layer products and every model's logits go through it, GPT-2's and BERT's layer
        products through NumPy's BLAS."""
        eng = gemm.engine()
        if eng == "numpy" or self.config.arch == "llama":
            return eng
        return f"{eng} for the logits, numpy for the layers" if self.config.arch == "gpt2" else "numpy"

    def enable_decode_store(self) -> bool:
        """Decode (one new token a call) through the GGUF file's own quantised blocks
        (:mod:`.decode_store`: the same weights, a sixth of the bytes to stream); built on first
        use, about 110 MB for SmolLM2. False when the model has no such file."""
        if self.decode_store is None and self.gguf_path is not None and self.config.arch == "llama":
            from .decode_store import DecodeStore
            self.decode_store = DecodeStore.from_gguf(self.gguf_path, self.config.n_layers) or False
        return bool(self.decode_store)

    def token_nll(self, h, targets, chunk: int = 64):
        """-log p(targets[i] | row i) for final hidden states ``h`` (T, d_model): the logits made
        ``chunk`` rows at a time into a buffer kept per lane (never the whole (T, vocab) array:
        200 MB at T = 1024), one compiled pass each for the log-sum-exp; float64 (T,)."""
        n = h.shape[0]
        targets = np.asarray(targets, np.int64)
        out = np.empty(n, np.float64)
        w = self.w["lm_head"]

        def part(r0, r1):
            from . import fused
            buf = self._reusable("nll_logits", (chunk, self.config.vocab))  # this lane's (thread's)
            for c0 in range(r0, r1, chunk):
                c1 = min(r1, c0 + chunk)
                z = buf[:c1 - c0]
                gemm.matmul(h[c0:c1], w, z)
                fused.nll_rows(z, targets[c0:c1], out[c0:c1])
        with blas_single_thread():
            lanes.split(part, n)
        return out

    def _reusable(self, name: str, shape):
        """A float32 array of ``shape`` for this thread: the one this call made last time when
        nothing else holds it any more (the caller has let go of the logits it returned; a
        forward pass's own scratch), else a new one, kept for next time. Freshly mapped memory
        costs a page fault per 4 KiB on first touch: on these VMs 0.3-0.8 s for the 200 MB of a
        window-1024 logits array and 0.2-0.4 s for a forward pass's buffers, every call."""
        store = self.__dict__.setdefault("_reuse", threading.local())
        have = getattr(store, name, None)
        # references: the store's, this local's and getrefcount's argument = nobody else's
        if have is not None and have.shape == tuple(shape) and sys.getrefcount(have) <= 3:
            return have
        a = np.empty(shape, np.float32)
        setattr(store, name, a)
        return a

    # -- caches -------------------------------------------------------------------------------
    def new_caches(self, kernel: AttentionKernel):
        c = self.config
        return [kernel.new_cache(i, c.n_kv_heads, c.head_dim) for i in range(c.n_layers)]

    def default_mask(self, window: int | None = None) -> Mask:
        if not self.config.causal:
            return Mask("bidirectional")
        return Mask("sliding", window) if window else Mask("causal")

    # -- forward ------------------------------------------------------------------------------
    def forward(self, tokens, positions=None, caches=None, kernel=None, mask=None, logits="all"):
        """Hidden states -> logits for the new ``tokens`` (1-D). ``caches`` carries the past.

        logits: "all" (T, vocab), "last" (1, vocab), or "none" (returns final hidden states).
        """
        kernel = kernel or IdealAttention()
        caches = caches if caches is not None else self.new_caches(kernel)
        tokens = np.asarray(tokens, dtype=np.int64)
        if positions is None:
            start = caches[0].length if hasattr(caches[0], "length") else 0
            positions = np.arange(start, start + tokens.size)
        mask = mask or self.default_mask()
        fn = {"llama": _llama, "gpt2": _gpt2, "bert": _bert}[self.config.arch]
        h = fn(self, tokens, np.asarray(positions), caches, kernel, mask)
        if tokens.size >= 128:
            _trim_heap()
        if logits == "none":
            return h
        if logits == "last":
            h = h[-1:]
        if h.shape[0] == 1 and self.decode_active and self.decode_store:
            return self.decode_store.mats["lm_head"].gemv(h[0], np.empty((1, self.config.vocab), np.float32)[0])[None]
        out = self._reusable("logits", (h.shape[0], self.config.vocab))
        w = self.w["lm_head"]
        with blas_single_thread():
            lanes.split(lambda i, j: gemm.matmul(h[i:j], w, out[i:j]), h.shape[0])
        return out


_libc = None


def _trim_heap():
    """Give the heap's free pages back to the system after a long forward pass (glibc keeps the
    freed activation buffers of every layer otherwise: a window-1024 evaluation's resident memory
    then grew by ~150 MB over the arrays alive). A no-op where there is no glibc."""
    global _libc
    if _libc is None:
        try:
            import ctypes
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def _split_heads(x, n, d):
    return x.reshape(x.shape[0], n, d).transpose(1, 0, 2)


def _merge_heads(x):
    return x.transpose(1, 0, 2).reshape(x.shape[1], -1)


def _llama(m: Model, tokens, positions, caches, kernel, mask):
    """Pre-norm Llama blocks. The memory-bound steps between the matrix products are compiled
    passes (:mod:`.fused`: RMSNorm, rotary embedding with the head split, SwiGLU), the products
    write into buffers made once per forward pass, and the residual adds in place. Everything
    between two attention calls works row by row (output projection, MLP, the next layer's norm,
    q|k|v product and rotary embedding): one piece of work per layer, split by rows over two
    lanes (:mod:`.lanes`)."""
    from . import fused
    c, w = m.config, m.w
    d = c.head_dim
    T = tokens.size
    nq, nk = c.n_heads * d, c.n_kv_heads * d
    x = w["embed"][tokens].astype(np.float32, copy=False)
    cos, sin = ops.rope_tables(positions, d, c.rope_base)
    h = m._reusable("h", (T, c.d_model))  # scratch of this forward pass (the result is hout)
    y = m._reusable("y", (T, c.d_model))
    qkv = m._reusable("qkv", (T, nq + 2 * nk))
    gu = m._reusable("gu", (T, 2 * c.d_ff))
    act = m._reusable("act", (T, c.d_ff))
    hout = np.empty((T, c.d_model), np.float32)
    eps = np.float32(c.norm_eps)
    store = m.decode_store.mats if (T == 1 and m.decode_active and m.decode_store) else None

    def mm(a, name, out):
        if store is not None:
            store[name].gemv(a[0], out[0])
        else:
            gemm.matmul(a, w[name], out)

    def rows(r0, r1, i, a, qkv_out):
        """Rows r0..r1 from layer i - 1's attention output ``a`` (T, H d) (None before the first layer)
        through its output projection and MLP, then layer i's norm, q|k|v product and rotary
        embedding into ``qkv_out`` (after the last layer: the final norm)."""
        R = slice(r0, r1)
        if a is not None:
            p = f"l{i - 1}."
            mm(a[R], p + "wo", y[R])
            x[R] += y[R]
            fused.rms_norm_into(x[R], w[p + "ffn_norm"], eps, h[R])
            mm(h[R], p + "w_gate_up", gu[R])
            fused.swiglu_into(gu[R], c.d_ff, act[R])
            mm(act[R], p + "w_down", y[R])
            x[R] += y[R]
        if i == c.n_layers:
            fused.rms_norm_into(x[R], w["final_norm"], eps, hout[R])
            return
        p = f"l{i}."
        fused.rms_norm_into(x[R], w[p + "attn_norm"], eps, h[R])
        mm(h[R], p + "w_qkv", qkv[R])
        q, k, v = qkv_out
        fused.rope_split(qkv[R], cos[R], sin[R], c.n_heads, c.n_kv_heads, d, q[:, R], k[:, R], v[:, R])

    # rows shared by this thread and a helper, BLAS on one thread each, always: a short prompt's
    # products (fewer than lanes.MIN_ROWS rows, not split) too, since OpenBLAS's own two threads
    # took 3.4 s for a 27-token prompt's 120 layer products with other processes on the machine
    # (load 3.5), one thread 0.09 s
    with blas_single_thread():
        a = None
        for i in range(c.n_layers + 1):
            qkv_out = None
            if i < c.n_layers:
                qkv_out = (np.empty((c.n_heads, T, d), np.float32), np.empty((c.n_kv_heads, T, d), np.float32),
                           np.empty((c.n_kv_heads, T, d), np.float32))
            lanes.split(lambda r0, r1: rows(r0, r1, i, a, qkv_out), T)
            if i < c.n_layers:  # heads merged once (free for the ideal kernel's (T, H, d) buffer)
                a = _merge_heads(kernel(*qkv_out, positions, mask, caches[i], i))
    return hout


def _llama_reference(m: Model, tokens, positions, caches, kernel, mask):
    """The same blocks in plain NumPy (:mod:`.ops`): the reference the compiled path is tested
    against."""
    c, w = m.config, m.w
    d = c.head_dim
    x = w["embed"][tokens]
    cos, sin = ops.rope_tables(positions, d, c.rope_base)
    for i in range(c.n_layers):
        p = f"l{i}."
        h = ops.rms_norm(x, w[p + "attn_norm"], c.norm_eps)
        qkv = h @ w[p + "w_qkv"]
        nq, nk = c.n_heads * d, c.n_kv_heads * d
        q = _split_heads(qkv[:, :nq], c.n_heads, d)
        k = _split_heads(qkv[:, nq:nq + nk], c.n_kv_heads, d)
        v = _split_heads(qkv[:, nq + nk:], c.n_kv_heads, d)
        q = ops.rope_interleaved(q, cos, sin)
        k = ops.rope_interleaved(k, cos, sin)
        a = kernel(q, k, v, positions, mask, caches[i], i)
        x = x + _merge_heads(a) @ w[p + "wo"]
        h = ops.rms_norm(x, w[p + "ffn_norm"], c.norm_eps)
        gu = h @ w[p + "w_gate_up"]
        x = x + (ops.silu(gu[:, :c.d_ff]) * gu[:, c.d_ff:]) @ w[p + "w_down"]
    return ops.rms_norm(x, w["final_norm"], c.norm_eps)


def _gpt2(m: Model, tokens, positions, caches, kernel, mask):
    c, w = m.config, m.w
    d = c.head_dim
    x = w["embed"][tokens] + w["pos_embed"][positions]
    for i in range(c.n_layers):
        p = f"l{i}."
        h = ops.layer_norm(x, w[p + "ln1_w"], w[p + "ln1_b"], c.norm_eps)
        qkv = h @ w[p + "w_qkv"] + w[p + "b_qkv"]
        q, k, v = np.split(qkv, 3, axis=-1)
        a = kernel(_split_heads(q, c.n_heads, d), _split_heads(k, c.n_heads, d),
                   _split_heads(v, c.n_heads, d), positions, mask, caches[i], i)
        x = x + _merge_heads(a) @ w[p + "wo"] + w[p + "bo"]
        h = ops.layer_norm(x, w[p + "ln2_w"], w[p + "ln2_b"], c.norm_eps)
        x = x + ops.gelu_tanh(h @ w[p + "w_fc"] + w[p + "b_fc"]) @ w[p + "w_proj"] + w[p + "b_proj"]
    return ops.layer_norm(x, w["lnf_w"], w["lnf_b"], c.norm_eps)


def _bert(m: Model, tokens, positions, caches, kernel, mask):
    c, w = m.config, m.w
    d = c.head_dim
    x = w["embed"][tokens] + w["pos_embed"][positions] + w["type_embed"][0]
    x = ops.layer_norm(x, w["emb_ln_w"], w["emb_ln_b"], c.norm_eps)
    for i in range(c.n_layers):
        p = f"l{i}."
        q = x @ w[p + "wq"] + w[p + "bq"]
        k = x @ w[p + "wk"] + w[p + "bk"]
        v = x @ w[p + "wv"] + w[p + "bv"]
        a = kernel(_split_heads(q, c.n_heads, d), _split_heads(k, c.n_heads, d),
                   _split_heads(v, c.n_heads, d), positions, mask, caches[i], i)
        x = ops.layer_norm(x + _merge_heads(a) @ w[p + "wo"] + w[p + "bo"],
                           w[p + "ln1_w"], w[p + "ln1_b"], c.norm_eps)
        h = ops.gelu_erf(x @ w[p + "w_fc"] + w[p + "b_fc"])
        x = ops.layer_norm(x + h @ w[p + "w_proj"] + w[p + "b_proj"], w[p + "ln2_w"], w[p + "ln2_b"],
                           c.norm_eps)
    return x


def embed_sentences(model: Model, texts: list[str], kernel=None) -> np.ndarray:
    """Sentence embeddings: mean of the encoder's token states, L2-normalised (the
    sentence-transformers pipeline of all-MiniLM-L6-v2: Transformer -> Pooling(mean) -> Normalize)."""
    out = []
    for t in texts:
        ids = model.tokenizer.encode(t)
        kernel_ = kernel or IdealAttention()
        h = model.forward(ids, caches=model.new_caches(kernel_), kernel=kernel_, logits="none")
        e = h.mean(axis=0)
        out.append(e / max(np.linalg.norm(e), 1e-12))
    return np.array(out, dtype=np.float32)
