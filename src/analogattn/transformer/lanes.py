"""Two lanes of work for a prefill: this thread and one helper thread, each calling BLAS on one
thread, share every step of a forward pass by rows (the weight products, the compiled passes
between them) and the ideal kernel splits its query blocks the same way.

Why not OpenBLAS's own two threads for the weight products: after each threaded product its
worker thread spins for a while waiting for the next one (OpenBLAS's thread timeout, ~0.1 s),
so on a 2-core machine the attention that follows ran with one core taken by a thread doing
nothing: the ideal kernel's two workers at window 1024 took 16 ms per layer in the model against
8 ms alone (measured on this machine). Split by rows, two one-thread products run as fast as one
two-thread product (224-238 vs 234-245 GFLOP/s at SmolLM2's shapes, quiet machine), and no
thread spins. The result of a row block is the same whichever lane computes it; the products
differ from OpenBLAS's threaded ones by float32 rounding (its threads partition differently).
"""
from __future__ import annotations

from ..attention import base
from ..attention.base import two_way

MIN_ROWS = 32  # below this many rows a step runs in one piece on the calling thread


def split(fn, n: int, min_rows: int = MIN_ROWS):
    """fn(0, h) here and fn(h, n) on the helper lane (taken back when the helper has not started
    it in time: :func:`..attention.base.two_way`), h = ceil(n / 2); fn(0, n) alone below
    ``min_rows`` or with one lane (``attention.base.lanes()``). Waits for the helper (also when
    this lane raises) and re-raises its error."""
    if n < min_rows or base.lanes() < 2:
        fn(0, n)
        return
    h = (n + 1) // 2
    two_way(lambda: fn(0, h), lambda: fn(h, n))

