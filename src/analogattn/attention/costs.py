"""Shared parts of the kernels' cost models: the stated per-operation costs of the digital parts,
bundle look-ups and the result layout, and the digital baseline (the ideal kernel's cost).
Each circuit kernel's own model is in its package (``gaincell/cost.py``, ``sprint/cost.py``) and
is reached through the kernel registry; :mod:`analogattn.evaluate.cost` states the scenario."""
from __future__ import annotations

import dataclasses

from ..params import Validated, param


@dataclasses.dataclass(frozen=True)
class DigitalCosts(Validated):
    # Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm): fp16 multiply 1.1 pJ + add 0.4 pJ
    mac_pj: float = param(1.5, "pJ", 0.0, 1e3, "one 16-bit multiply-accumulate")
    # same source: 64-bit read of an 8 KB SRAM about 10 pJ -> 0.16 pJ per bit
    sram_bit_pj: float = param(0.16, "pJ", 0.0, 1e3, "on-chip SRAM read, per bit")
    # same source: 32-bit DRAM read 640 pJ -> 20 pJ per bit (the digital baseline's KV cache)
    dram_bit_pj: float = param(20.0, "pJ", 0.0, 1e4, "off-chip DRAM read, per bit")
    # SPRINT (reference file): ReRAM 3.1 pJ/bit read, 24.4 pJ/bit write at 65 nm
    reram_read_bit_pj: float = param(3.1, "pJ", 0.0, 1e4, "ReRAM read (low bits, values), per bit")
    reram_write_bit_pj: float = param(24.4, "pJ", 0.0, 1e4, "ReRAM write, per bit")
    # softmax: exponent by table + accumulate + one divide, about 4 MACs' worth (our assumption)
    exp_pj: float = param(6.0, "pJ", 0.0, 1e3, "one softmax element")
    # SAR ADC at a Walden figure of merit of 10 fJ per conversion step (Murmann's ADC survey, 65 nm class)
    adc_step_fj: float = param(10.0, "fJ", 0.0, 1e6, "ADC energy per conversion step (x 2^bits)")
    # gain-cell paper: DAC 330 pJ per head per token for 64 query elements -> about 5 pJ each
    dac_pj: float = param(5.2, "pJ", 0.0, 1e3, "one DAC conversion (query element)")
    bits: int = param(16, "bits", 1, 64, "digital word (keys, values, queries)")
    macs_per_ns: float = param(64.0, "1/ns", 1e-3, 1e6, "digital MAC throughput (64 lanes at 1 GHz)")
    fetch_gbps: float = param(64.0, "GB/s", 1e-3, 1e6, "bandwidth of fetches from memory to the chip")
    adc_ns: float = param(5.0, "ns", 0.0, 1e6, "ADC conversion time (one conversion per column in parallel)")


def bundle_value(bundle, name, default):
    return float(bundle[name]()) if bundle is not None and name in bundle else default


def ideal_cost(n_layers, n_heads, n_kv, d, context, dc: DigitalCosts = DigitalCosts()):
    """A digital accelerator with the KV cache in DRAM: fetch every key and value, score, softmax,
    weighted sum (per token, all layers)."""
    per_head = {
        "fetch_kv": 0.0,
        "score_macs": context * d * dc.mac_pj,
        "softmax": context * dc.exp_pj,
        "value_macs": context * d * dc.mac_pj,
    }
    fetch = 2 * context * d * dc.bits * dc.dram_bit_pj * n_kv  # once per KV head (GQA shares it)
    e_head = sum(per_head.values())
    e_layer = e_head * n_heads + fetch
    t_layer = (2 * context * d * n_heads / dc.macs_per_ns) + (2 * context * d * dc.bits / 8 * n_kv) / dc.fetch_gbps
    parts = {k: v * n_heads * n_layers * 1e-12 for k, v in per_head.items()}
    parts["fetch_kv"] = fetch * n_layers * 1e-12
    return result(parts, e_layer * 1e-12, t_layer * 1e-9, n_layers, n_heads)


def result(parts, e_layer, t_layer, n_layers, n_heads):
    total = sum(parts.values())
    return {"energy_per_token_J": total, "energy_per_layer_J": e_layer, "energy_per_head_J": e_layer / n_heads,
            "latency_per_token_s": t_layer * n_layers, "latency_per_layer_s": t_layer, "energy_parts_J": parts}
