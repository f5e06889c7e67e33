"""Fused per-element loops of the circuit kernels (numba, compiled once and cached on disk):
``common`` (exp, lane max, ADC), ``sprint`` and ``gaincell`` (each kernel's loops).

Serial loops: the matrix products around them keep both cores busy, and numba's worker threads
fighting BLAS threads for two cores cost more than they gain (measured 10x slower here).
Each function makes one pass over a block's (rows x keys) arrays instead of the ten or so
temporary arrays the same arithmetic costs in NumPy; they hold no physics of their own (the
formulas are documented where they are called, in :mod:`analogattn.attention.sprint.kernel` and
:mod:`analogattn.attention.gaincell.kernel`; the converters' NumPy references are in
:mod:`analogattn.attention.peripherals`). float32 scalars and branch-free inner loops, so LLVM
vectorises them (a float64 scalar or a short-circuit ``and`` in the loop cost 20x).
In the pruning kernel, row i of a block is query i % T of head i // T.
"""
import os as _os

from . import _cache

_cache.install(_os.path.dirname(__file__))  # before the modules below: one stamp for all of them

from .common import _adc, _adc_steps, _max_biased, _pulse, adc_rows, exp32, exp_rows, pulse_rows  # noqa: F401,E402
from .gaincell import (add_row_scaled, interp_terms, noisy_tile_adc, score_tile, softmax_block, tile_outputs,  # noqa: F401,E402
                       tile_parts, tile_pulses)
from .ideal import scatter_normalised, softmax_ranges  # noqa: F401,E402
from .sprint import anchor_max, dac_lhs, decide_softmax, kept_softmax  # noqa: F401,E402
