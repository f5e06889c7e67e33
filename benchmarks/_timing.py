"""Shared by the benchmark scripts: best-of-n wall time (these machines are noisy)."""
import time


def best_of(fn, n=3):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def median_time(fn, n=3):
    """Median wall time of n calls of fn (no warm-up call: the caller warms what needs it)."""
    import statistics
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def paired_ratio(fn, baseline, rounds=7):
    """Median over rounds of time(fn) / time(baseline), the two timed back to back in each round
    (a slow spell of the machine hits both), and the best time of each."""
    import statistics
    fn(), baseline()  # warm (compilation, first-touch pages)
    ratios, tf, tb = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        baseline()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        tb.append(t1 - t0)
        tf.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(ratios), min(tf), min(tb)
