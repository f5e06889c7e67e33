"""Gain-cell attention: the KV cache lives in gain cells.

Signal path per layer and head (after Leroux et al., arXiv 2409.19315; see
../shared/reference/gaincell-attention.md), with every circuit effect from the surrogate bundle:

- **write**: k and v pass per-head affine scalers to target voltages, are quantised to
  ``storage_levels`` over [0, VDD], go through the write-transfer surrogate, and are stored with
  their write time (token index x ``token_period``) in the kernel's own cache;
- **decay**: stored (V - V_eq) decays as exp(-dt / tau(T)) (retention surrogate);
- **scores** (first array): q passes its scaler to a signed pulse width in [-1, 1] quantised to
  ``input_levels`` per sign. A negative pulse is applied in a second read phase with the
  integrator sign inverted (two-phase signed input; pulses themselves are unsigned). The charge
  of a product is pulse x t_max x I(V_store) from the read-surface surrogate at the read
  amplitude; a column sums the charge of up to ``rows`` cells (head dims), per-tile outputs
  clamped to the charge-to-pulse range and passed on in analog (not digitised);
- **activation**: ``hardsigmoid`` (no softmax, no normalisation: phi(S) = clamp(S / s_sat, 0, 1)),
  or ``softmax`` (an ADC of ``adc_bits`` on S, then a digital softmax);
- **values** (second array): pulses phi (softmax: divided by the row's largest weight, which is
  multiplied back digitally after the array) quantised to ``input_levels``;
  A = sum over keys of phi x t_max x I(V_value), keys in tiles of
  ``rows`` tokens, each tile's output clamped to [-1, 1] of ``out_scale`` and digitised to
  ``output_levels``, tiles summed digitally; then the output scaler.

The package: ``config`` (options), ``device`` (surrogate bundle -> cell functions and tables),
``scalers`` (calibrated arrays and their file), ``kernel`` (arrays in, arrays out; its cache),
``calibration`` (through :mod:`..capture`), ``cost`` (energy and latency), ``spec`` (registry entry).
"""
from __future__ import annotations

from ..peripherals import adc, quantise
from .calibration import calibrate_output, calibrate_ranges, calibrate_tiles, calibrated_kernel
from .config import GainCellArray, GainCellCalibration, GainCellConfig, GainCellConverters, GainCellNoise
from .device import CellModel, CellReadout
from .kernel import GainCellAttention, GainCellCache, ideal_kernel
from .scalers import Scalers

__all__ = ["GainCellAttention", "GainCellCache", "GainCellConfig", "GainCellConverters", "GainCellArray",
           "GainCellNoise", "GainCellCalibration", "CellModel", "CellReadout", "Scalers", "quantise", "adc",
           "ideal_kernel", "calibrate_ranges", "calibrate_tiles", "calibrate_output", "calibrated_kernel"]
