"""Energy and latency of the ReRAM pruning kernel per generated token (see :mod:`analogattn.evaluate.cost`)."""
from __future__ import annotations

import math

from ..costs import DigitalCosts, bundle_value, result


def sprint_cost(n_layers, n_heads, n_kv, d, context, kept_fraction, new_fraction, bundle=None,
                dc: DigitalCosts = DigitalCosts(), key_bits=4, rows=64):
    """Per token: write the new key (crossbar, key_bits per cell) and K, V (ReRAM); per query head:
    DAC the query, evaluate every column twice (two signed phases) plus the reference column,
    each evaluation with its TIA's power (a stated two-stage op-amp model, :mod:`.tia`),
    one comparator decision per key; fetch the keys and values newly kept (the previous query's
    kept set is on chip: SPRINT's locality), recompute their scores exactly, softmax and
    weighted sum over the kept keys."""
    e_col = bundle_value(bundle, "reram.energy", 44e-15) * 1e12  # pJ per column evaluation
    from .tia import tia_energy_from_bundle
    e_tia = tia_energy_from_bundle(bundle) * 1e12  # pJ per column evaluation (stated model, tia.py)
    t_col = bundle_value(bundle, "reram.time", 10e-9) * 1e9
    e_cmp = bundle_value(bundle, "comparator.energy", 27e-15) * 1e12
    t_cmp = 0.1  # ns, comparator decision (bundle delay model at ~10 mV overdrive, rounded up)
    if bundle is not None and "comparator.delay" in bundle:
        t_cmp = float(bundle["comparator.delay"](0.01)) * 1e9
    cols = math.ceil(d / rows)
    kept = kept_fraction * context
    fetched = new_fraction * context
    per_head = {
        "dac": d * dc.dac_pj,
        "columns": 2 * (context + 1) * cols * e_col,
        "tia": 2 * (context + 1) * cols * e_tia,
        "comparators": context * e_cmp,
        "fetch_kv": fetched * 2 * d * dc.bits * dc.reram_read_bit_pj / (n_heads // n_kv),
        "recompute_macs": kept * d * dc.mac_pj,
        "softmax": kept * dc.exp_pj,
        "value_macs": kept * d * dc.mac_pj,
    }
    write = n_kv * d * (key_bits * dc.reram_write_bit_pj + 2 * dc.bits * dc.reram_write_bit_pj)
    e_layer = sum(per_head.values()) * n_heads + write
    t_layer = (2 * t_col + t_cmp + (fetched * 2 * d * dc.bits / 8 * n_kv) / dc.fetch_gbps
               + 2 * kept * d * n_heads / dc.macs_per_ns)
    parts = {k: v * n_heads * n_layers * 1e-12 for k, v in per_head.items()}
    parts["write"] = write * n_layers * 1e-12
    return result(parts, e_layer * 1e-12, t_layer * 1e-9, n_layers, n_heads)
