"""Design-space sweeps (``analogattn sweep``): circuit and kernel parameters -> characterization ->
fit -> calibration -> perplexity, energy, latency and area, on Dask distributed.

- :mod:`.spec`: the sweep spec (TOML), validated from the parameter metadata before any work;
- :mod:`.strategies`: grid, random, Latin hypercube, Optuna (NSGA-II, TPE; resumable study);
- :mod:`.cluster`: executors (Dask LocalCluster, a scheduler address, or serial in-process);
- :mod:`.point`: what a worker runs (fit, ideal perplexity, one chip's evaluation);
- :mod:`.results`: rows (one file each, atomic), the table, per-design aggregates, Pareto, yield;
- :mod:`.plots`: Pareto and yield figures; :mod:`.sweep`: the driver.

Dask, Optuna, pandas and pyarrow are the ``sweep`` extra; :func:`need` turns a missing one into
one line naming the pip command.
"""
from __future__ import annotations

from ..errors import AnalogAttnError

EXTRA = 'pip install -e ".[sweep]"  (dask, distributed, optuna, pandas, pyarrow)'


def need(*modules: str) -> None:
    import importlib
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            raise AnalogAttnError(f"analogattn sweep needs the Python package {m!r}: {EXTRA}") from None
