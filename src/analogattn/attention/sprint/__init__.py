"""In-memory pruning with exact recompute: keys in a ReRAM crossbar, one comparator per column.

After SPRINT (Yazdanbakhsh et al., MICRO 2022) and LeOPArd (ISCA 2022); the facts used are in
../shared/reference/sprint-pruning.md. Signal path per layer and KV head, every circuit effect
from the surrogate bundle (``reram.column``, ``comparator.probit``):

- **keys**: each key (after per-channel equalisation, exact digitally: ``k / k_chan`` is stored and
  ``q * k_chan`` applied) is scaled by a per-head step and rounded to a ``key_bits`` two's
  complement code c in [-2^(b-1), 2^(b-1)-1] (its most significant bits); the code sets the
  conductance level ``L = c + 2^(b-1)`` (spread over the column's levels when b is below 4) of
  the key's cells, one key down one column (rows = head dims). Signed keys use *offset encoding*:
  one reference column per array holds the zero code, and the comparator sees the difference
  current I_col - I_ref (a differential TIA). Each cell's conductance carries a fixed lognormal
  variation drawn once (sigma_g of the column surrogate); the reference column has its own cells.
- **query**: scaled per token to its largest |element| (the DAC's full scale is set per query;
  the scale is known digitally) and converted by a DAC of ``dac_bits`` per sign to word-line
  voltages in [0, v_read]. The sign is carried by two read phases (positive elements, then
  negative elements with the integration sign inverted).
- **column**: the column surrogate, I = sum_i w_i x_i + c2 (sum_i x_i)^2 per phase and column,
  x_i = I_cell(L_i, V_i) (row-position IR drop in w_i, current-dependent loss in c2), and relative
  read noise on every column evaluation. The cell I-V table is factorised as
  I_cell(L, V) = a(L) b(V) (rank 1 of its SVD; the residual is reported in ``Crossbar.rank1_error``,
  1.4e-4 of the table's norm for the default cell) so the column sums are matrix products.
- **comparator**: keep when r_f (I_col - I_ref) > V_th(t) (TIA output against a reference voltage
  from a per-query threshold DAC), with the probit surrogate: a fixed offset per comparator (one per
  column, drawn once) and fresh noise per decision.
- **threshold rules** (logit units q.k/sqrt(d), turned into V_th(t) per query):
  ``fixed``: a calibrated threshold per layer and head (LeOPArd's kind of threshold);
  ``anchor`` (ours): a per-query reference, the largest *exact* score among a few anchor keys that
  are fetched anyway (the first ``sink`` tokens, the last ``local`` tokens and the query's own
  key), minus a calibrated margin per layer and head: keys whose approximate score is within the
  margin of the anchors' best are kept. Softmax weight depends on a score's distance below the
  row's maximum, which the anchors track;
  ``oracle``: not a circuit: the smallest set of keys holding ``mass`` of each row's exact softmax
  (a reference curve); ``none``: keep everything (threshold -inf).
- **recompute**: kept keys are fetched and their scores recomputed exactly in digital; softmax and
  the value sum run over the kept keys only.

Rule when nothing survives: the query's own key (computed this step, on chip, never fetched) is
always kept, so every row keeps at least one key; if every comparator prunes, the output is the
query token's own value vector.

The package: ``config`` (options), ``device`` (surrogate bundle -> column and comparator),
``scales`` (calibrated arrays and their file; run statistics), ``kernel`` (arrays in, arrays out;
its cache), ``calibration`` (through :mod:`..capture`), ``cost``, ``spec`` (registry entry).
"""
from __future__ import annotations

from ..recorders import KeepLog
from .calibration import calibrate_sprint
from .config import SprintCalibration, SprintConfig, SprintConverters, SprintNoise, SprintPruning
from .device import Crossbar, SprintCache
from .kernel import SprintAttention, _mass_keep
from .scales import SprintScales, SprintStats

__all__ = ["SprintAttention", "SprintCache", "SprintConfig", "SprintConverters", "SprintPruning", "SprintNoise",
           "SprintCalibration", "Crossbar", "SprintScales", "SprintStats", "KeepLog", "calibrate_sprint"]
