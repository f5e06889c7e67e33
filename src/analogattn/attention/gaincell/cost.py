"""Energy and latency of the gain-cell kernel per generated token (see :mod:`analogattn.evaluate.cost`)."""
from __future__ import annotations

import math

from ..costs import DigitalCosts, bundle_value, result


def gaincell_cost(n_layers, n_heads, n_kv, d, context, bundle=None, dc: DigitalCosts = DigitalCosts(),
                  activation="softmax", adc_bits=8, output_levels=32, rows=64, refresh_interval=0):
    """Per token: write k and v (2 d cells per KV head); per query head: DAC the query, read the
    score array (context x d cells, two signed phases), softmax path: one ADC conversion per
    score and a digital softmax (hardsigmoid: charge-to-pulse, counted as one comparator-class
    conversion per score), read the value array (context x d cells), one ADC conversion per
    value tile column (output_levels), output scaler; with a refresh every N tokens, the context's
    2 d cells per key and KV head re-written once per N tokens."""
    e_rd = bundle_value(bundle, "gaincell.energy_read", 31e-15) * 1e12  # pJ per cell read
    e_wr = bundle_value(bundle, "gaincell.energy_write", 0.6e-15) * 1e12
    t_rd = bundle_value(bundle, "gaincell.t_read", 10e-9) * 1e9
    tiles = math.ceil(context / rows)
    score_conv = (2 ** adc_bits) * dc.adc_step_fj * 1e-3 if activation == "softmax" else 0.05
    per_head = {
        "dac": d * dc.dac_pj,
        "score_reads": 2 * context * d * e_rd,
        "score_conversion": context * score_conv,
        "softmax": context * dc.exp_pj if activation == "softmax" else 0.0,
        "value_reads": context * d * e_rd,
        "value_adc": tiles * d * output_levels * dc.adc_step_fj * 1e-3,
        "tile_sums": tiles * d * dc.mac_pj / 2,
    }
    write = n_kv * 2 * d * e_wr
    e_layer = sum(per_head.values()) * n_heads + write
    t_layer = 2 * t_rd + (dc.adc_ns if activation == "softmax" else 0) + t_rd + dc.adc_ns
    parts = {k: v * n_heads * n_layers * 1e-12 for k, v in per_head.items()}
    parts["write"] = write * n_layers * 1e-12
    if refresh_interval:  # every N tokens every stored cell (K and V of the context) is written again
        refresh = n_kv * 2 * d * context * e_wr / refresh_interval
        parts["refresh"] = refresh * n_layers * 1e-12
        e_layer += refresh
    return result(parts, e_layer * 1e-12, t_layer * 1e-9, n_layers, n_heads)
