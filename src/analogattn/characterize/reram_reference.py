"""ReRAM ``reference`` analysis: the held-out patterns' queries through a column of reference cells.

The pruning kernel compares each key column with a reference column of zero-code cells (offset
encoding, differential TIA). To check that difference against SPICE, every held-out pattern of
``reram/patterns`` (same seed, so the same queries) is simulated once more with every cell at the
reference level (``levels // 2``, the level of code 0 for 2^b levels), through the same column
netlist and DC operating point as the patterns.
"""
from __future__ import annotations

import numpy as np

from .tasks import Analysis, Dataset, make_task

FAMILY = "reram"


def pattern_draws(p, s):
    """(q, k, held) of ``reram/patterns``, drawn exactly as that analysis draws them."""
    rng = np.random.default_rng(s.seed)
    q = rng.integers(0, p.input_levels, (s.n_patterns, p.rows))
    k = rng.integers(0, p.levels, (s.n_patterns, p.rows))
    held = rng.random(s.n_patterns) < s.held_out
    return q, k, held


def analysis(p, s, opts: dict, pj: str, md: str, worker: str) -> Analysis:
    q, _, held = pattern_draws(p, s)
    idx = np.flatnonzero(held)
    level = p.levels // 2
    V = p.input_voltages()[q[idx]]
    G = np.full(V.shape, p.conductances()[level])
    tasks = []
    for i, k0 in enumerate(range(0, len(idx), s.per_task)):
        vi, gi = V[k0:k0 + s.per_task], G[k0:k0 + s.per_task]
        tasks.append(make_task(FAMILY, "reference", i, worker, p.columns_netlist("reference", vi, gi), md,
                               n_columns=len(vi), r_f=p.r_f, a_ol=p.a_ol, options=opts))

    def merge(res):
        cat = lambda k: np.concatenate([r[k] for r in res]) if res else np.zeros(0)  # noqa: E731
        return {"held_index": Dataset(idx, "", "index of the held-out pattern in reram/patterns"),
                "level": Dataset(np.asarray(level), "", "conductance level of every reference cell"),
                "q_levels": Dataset(q[idx], "", "DAC level per row (the pattern's)"),
                "current": Dataset(cat("current"), "A", "reference column current into the sense stage"),
                "status": Dataset(cat("status"), "", "")}
    return Analysis(FAMILY, "reference", tasks, merge, pj,
                    method="DC operating point of the full column, every cell at the reference level, "
                           "queries of the held-out patterns", attrs={"seed": s.seed, "level": level})
