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

import concurrent.futures
import contextlib
import dataclasses
import math
import threading

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
        with blas_single_thread():  # attention's products are small: see blas_single_thread
            return self.attend(q, positions, mask, cache, layer)

    def attend(self, q, positions, mask, cache, layer):  # pragma: no cover - interface
        raise NotImplementedError

    def _reuse_layout(self, positions, kpos, mask, extra, make, same=()):
        """``make()``: a call's layout (masks, blocks, factors: what depends on the query and key
        positions only), or what it gave the previous call when that call had the same positions,
        key positions, mask and ``extra`` (hashable), and the objects ``same`` (compared by
        identity): every layer of a forward pass (and every window of a perplexity run) asks for
        the same one. Nothing may write to it but the call that fills it in."""
        key = (np.asarray(positions, np.int64).tobytes(), np.asarray(kpos, np.int64).tobytes(), mask.kind,
               mask.window, extra)
        same = tuple(same)
        memo = self.__dict__.get("_layout_memo")
        if memo is not None and memo[0] == key and len(memo[2]) == len(same) \
                and all(a is b for a, b in zip(memo[2], same)):
            return memo[1]
        out = make()
        self._layout_memo = (key, out, same)
        return out

    def forget_layout(self):
        """Drop the remembered layout (:meth:`_reuse_layout`): the next call makes its own."""
        self.__dict__.pop("_layout_memo", None)


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


_controller = None


def blas_single_thread():
    """A context in which BLAS runs on one thread: the attention's many small products (a few
    hundred rows) lose more to the threads' hand-offs than they gain, badly so when other
    processes share the cores (measured 5-20x slower with 2 threads on a loaded 2-core machine,
    about equal on a quiet one); the weight products outside stay multi-threaded."""
    global _controller
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        return _controller.limit(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing or unusable: run as is
        return contextlib.nullcontext()


class IdealAttention(AttentionKernel):
    """Exact softmax attention (float32). Queries go in blocks of ``block`` tokens, each KV head's
    block of scores (g * block x visible keys, sized to stay in the core's L2 cache) made by one
    matrix product against only the keys its mask can reach (causal blocks skip the future);
    one compiled pass gives each row its softmax over its own visible key range (no mask array,
    the 1/sqrt(d) scale folded into the exponent), a second matrix product weights the values and
    a compiled pass writes them normalised into a (T, H, d) buffer, returned as an (H, T, d) view
    (so merging the heads afterwards is free). The NumPy reference of the same arithmetic is
    :func:`reference_attention`."""

    name = "ideal"
    block = 128

    def __init__(self):
        self._buf = np.empty(0, np.float32)

    decode_max = 1024  # keys a single query reads in one compiled pass (decode_attention)

    def __call__(self, q, k, v, positions, mask: Mask, cache, layer: int):
        cache.append(k, v, positions)
        if q.shape[1] == 1 and cache.length <= self.decode_max:  # decoding: one pass, no BLAS
            from ._fused.ideal import decode_attention
            lo, hi = key_range(mask, np.asarray(positions), cache.positions)
            out = np.empty((q.shape[0], q.shape[2]), np.float32)
            decode_attention(np.ascontiguousarray(q[:, 0], np.float32), cache.keys, cache.values, lo, hi,
                             np.float32(1.0 / math.sqrt(q.shape[2])), out)
            return out[:, None, :]
        with blas_single_thread():  # attention's products are small: see blas_single_thread
            return self.attend(q, positions, mask, cache, layer)

    def _scratch(self, n):
        if self._buf.size < n:
            self._buf = np.empty(n, np.float32)
        return self._buf[:n]

    def attend(self, q, positions, mask, cache, layer):
        keys, values, kpos = cache.keys, cache.values, cache.positions
        n_kv, S, d = keys.shape
        h, t, _ = q.shape
        g = h // n_kv
        q = np.asarray(q, np.float32)
        out = np.empty((t, h, d), np.float32)
        positions = np.asarray(positions)
        if mask.kind == "bidirectional":
            a, b = np.zeros(t, np.int64), np.full(t, S, np.int64)
        else:
            b = np.searchsorted(kpos, positions, side="right").astype(np.int64)
            a = (np.searchsorted(kpos, positions - mask.window, side="right").astype(np.int64)
                 if mask.kind == "sliding" else np.zeros(t, np.int64))
        scale = np.float32(1.0 / math.sqrt(d))
        tb_max = min(t, self.block)
        tasks = [(b0, j) for b0 in range(0, t, self.block) for j in range(n_kv)]
        n_work = g * tb_max * (S + d)
        with blas_single_thread():
            if lanes() >= 2 and len(tasks) >= 4 and t * S >= 1 << 16:
                # two lanes (this thread and the helper), each with one-thread BLAS and its own
                # scratch, take the tasks largest first as they come free (the products and
                # compiled passes release the GIL; a task's result does not depend on its lane);
                # against every other task to each lane: the same at window 256, +1.5 % prefill
                # at 1024 (paired), and a lane the machine slows takes fewer
                work = self._scratch(2 * n_work)
                span = {b0: int(b[b0:b0 + self.block].max()) - int(a[b0:b0 + self.block].min())
                        for b0 in range(0, t, self.block)}  # keys each block reads
                share(lambda lane, task: self._blocks(q, keys, values, a, b, out,
                                                     work[lane * n_work:(lane + 1) * n_work], scale, g, [task]),
                      sorted(tasks, key=lambda task: -span[task[0]]))
            else:
                self._blocks(q, keys, values, a, b, out, self._scratch(n_work), scale, g, tasks)
        return out.transpose(1, 0, 2)

    def _blocks(self, q, keys, values, a, b, out, work, scale, g, tasks):
        from ._fused import scatter_normalised, softmax_ranges
        d = keys.shape[2]
        t = q.shape[1]
        for b0, j in tasks:
            b1 = min(t, b0 + self.block)
            tb = b1 - b0
            lo, hi = int(a[b0:b1].min()), int(b[b0:b1].max())
            if hi <= lo:
                out[b0:b1, j * g:(j + 1) * g] = 0
                continue
            s = hi - lo
            sc = work[:g * tb * s].reshape(g * tb, s)
            ob = work[g * tb * s:g * tb * (s + d)].reshape(g * tb, d)
            qj = q[j * g:(j + 1) * g, b0:b1].reshape(g * tb, d)
            np.matmul(qj, keys[j, lo:hi].T, out=sc)
            tot = softmax_ranges(sc, a[b0:b1] - lo, b[b0:b1] - lo, tb, scale)
            np.matmul(sc, values[j, lo:hi], out=ob)
            scatter_normalised(ob, tot, out, b0, j * g, g, tb)


def _default_lanes() -> int:
    """2, or 1 in a process meant to use one core: ANALOGATTN_LANES=1, OMP_NUM_THREADS=1 (as the
    sweep's workers are started: one per core, where a second lane would only fight the other
    workers), or fewer than 2 usable cores."""
    import os
    env = os.environ.get("ANALOGATTN_LANES", "").strip()
    if env in ("1", "2"):
        return int(env)
    if os.environ.get("OMP_NUM_THREADS", "").strip() == "1":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


LANES = _default_lanes()  # threads a forward pass works on (this one and helper_thread("lane"))
_pools: dict = {}
_local = threading.local()


def lanes() -> int:
    """The lanes a forward pass started on this thread works on: :data:`LANES`, or 1 inside
    :func:`single_lane`."""
    return getattr(_local, "lanes", None) or LANES


@contextlib.contextmanager
def single_lane():
    """Forward passes started on this thread inside the block work on one lane (a sweep point:
    its numbers must not depend on the cores of the machine that evaluated it, and a row split
    changes float32 rounding)."""
    keep = getattr(_local, "lanes", None)
    _local.lanes = 1
    try:
        yield
    finally:
        _local.lanes = keep


def two_way(here, there):
    """Run ``there()`` on the lane helper (:func:`helper_thread` "lane") and ``here()`` on this
    thread; if the helper has not started ``there`` by the time ``here`` is done (another process
    holds the other core: a hand-off then waits for a time slice, measured 10-100 ms a hand-off on
    this loaded VM), this thread takes it back and runs it itself, so a busy machine costs at most
    the serial time. The same work runs either way (results do not depend on who ran it). Waits
    for the helper before returning or raising; ``here``'s error wins over ``there``'s. A
    cancelled hand-off stays in the helper's queue until the helper reaches it; it holds only an
    emptied box, not ``there`` (whose closure may hold a large buffer the caller means to reuse)."""
    fut, cancel = _hand_off(there)
    try:
        here()
    except BaseException:
        if not cancel():
            try:
                fut.result()
            except BaseException:  # noqa: BLE001 - the first error is the one reported
                pass
        raise
    if cancel():
        there()
    else:
        fut.result()


def _hand_off(fn):
    """Submit ``fn`` to the lane helper in a box: returns (future, cancel); cancel() is True when
    the helper had not started it, and then empties the box, so the helper's queue, which keeps
    a cancelled item until the helper reaches it, holds nothing of ``fn`` (whose closure may hold
    a large buffer the caller means to reuse)."""
    box = [fn]

    def run():
        f = box[0]
        if f is not None:
            f()
    fut = helper_thread("lane").submit(run)

    def cancel():
        if fut.cancel():
            box[0] = None
            return True
        return False
    return fut, cancel


def share(fn, items):
    """[fn(lane, item) for item in items], in any order, on two lanes: this thread (lane 0) and
    helper_thread("lane") (lane 1) each take the next item when done with one, until none is
    left (give them largest first: a lane the machine slows, or one that started late, takes
    fewer); both finished when it returns. A helper that has not started by the time this thread
    found none left is cancelled, not waited for, and keeps nothing of ``fn`` or ``items`` (as
    :func:`two_way`). The results in the order the items were done; on an error in either lane
    the other takes nothing more and the error is raised (this thread's first)."""
    it, lock, out, end = iter(items), threading.Lock(), [], object()

    def take(lane):
        while True:
            with lock:
                item = next(it, end)
            if item is end:
                return
            out.append(fn(lane, item))

    def stop():
        with lock:
            for _ in it:
                pass

    def helper():
        try:
            take(1)
        except BaseException:
            stop()
            raise

    fut, cancel = _hand_off(helper)
    try:
        take(0)
    except BaseException:
        stop()
        if not cancel():
            concurrent.futures.wait([fut])
        raise
    if not cancel():
        fut.result()
    return out


def helper_thread(name: str):
    """A one-thread executor named ``name``, made on first use and kept for the process ("lane":
    the second lane of a prefill, see :mod:`..transformer.lanes`, which also runs the ideal
    kernel's second half of the blocks; "gaincell-noise": the gain cell's noise drawn ahead)."""
    if name not in _pools:
        from concurrent.futures import ThreadPoolExecutor
        _pools[name] = ThreadPoolExecutor(1, thread_name_prefix=name)
    return _pools[name]


def reference_attention(q, k, v, q_pos, k_pos, mask):
    """The NumPy formula of the ideal kernel: softmax(q k^T / sqrt(d) + mask bias) v per head
    (grouped-query: head h reads KV head h // (H / n_kv)); fully masked rows give zeros."""
    h, _, d = q.shape
    g = h // k.shape[0]
    sc = np.einsum("htd,hsd->hts", q, np.repeat(k, g, axis=0)) / np.float32(math.sqrt(d))
    sc = sc + mask_bias(mask, q_pos, k_pos)
    return softmax_rows_(sc.astype(np.float32)) @ np.repeat(v, g, axis=0)
