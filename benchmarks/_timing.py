"""Shared by the benchmark scripts: best-of-n wall time (these machines are noisy)."""
import time


def best_of(fn, n=3):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
