"""Energy and latency of attention per generated token, from the surrogate bundle's measured
energies and delays plus stated per-operation costs of the digital parts.

Scenario (the papers' own): token-by-token decoding with a KV cache of ``context`` tokens, one
query per head per token. Circuit numbers come from the bundle (ngspice): gain-cell read and
write energy per cell and read time; ReRAM column energy and settling time per evaluation;
comparator energy and delay per decision. Digital numbers are the stated constants below;
change them with ``DigitalCosts(...)``. The per-head, per-token kept fraction and locality of the
pruning kernel are the ones measured in the run.
"""
from __future__ import annotations

import dataclasses
import math

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


# Published figures printed beside ours (../shared/reference/*.md)
PAPER = {
    "gaincell_per_head_nj": 6.15, "gaincell_per_token_12heads_nj": 73.8, "gaincell_latency_ns": 65.0,
    "rtx4090_per_token_us": 22.4, "rtx4090_per_token_mj": 7.18, "jetson_nano_per_token_us": 489.0,
    "jetson_nano_per_token_mj": 3.25, "sprint_speedup": 7.5, "sprint_energy_reduction": 19.6,
}


def _b(bundle, name, default):
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
    return _result(parts, e_layer * 1e-12, t_layer * 1e-9, n_layers, n_heads)


def sprint_cost(n_layers, n_heads, n_kv, d, context, kept_fraction, new_fraction, bundle=None,
                dc: DigitalCosts = DigitalCosts(), key_bits=4, rows=64):
    """Per token: write the new key (crossbar, key_bits per cell) and K, V (ReRAM); per query head:
    DAC the query, evaluate every column twice (two signed phases) plus the reference column,
    one comparator decision per key; fetch the keys and values newly kept (the previous query's
    kept set is on chip: SPRINT's locality), recompute their scores exactly, softmax and
    weighted sum over the kept keys."""
    e_col = _b(bundle, "reram.energy", 44e-15) * 1e12  # pJ per column evaluation
    t_col = _b(bundle, "reram.time", 10e-9) * 1e9
    e_cmp = _b(bundle, "comparator.energy", 27e-15) * 1e12
    t_cmp = 0.1  # ns, comparator decision (bundle delay model at ~10 mV overdrive, rounded up)
    if bundle is not None and "comparator.delay" in bundle:
        t_cmp = float(bundle["comparator.delay"](0.01)) * 1e9
    cols = math.ceil(d / rows)
    kept = kept_fraction * context
    fetched = new_fraction * context
    per_head = {
        "dac": d * dc.dac_pj,
        "columns": 2 * (context + 1) * cols * e_col,
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
    return _result(parts, e_layer * 1e-12, t_layer * 1e-9, n_layers, n_heads)


def gaincell_cost(n_layers, n_heads, n_kv, d, context, bundle=None, dc: DigitalCosts = DigitalCosts(),
                  activation="softmax", adc_bits=8, output_levels=32, rows=64):
    """Per token: write k and v (2 d cells per KV head); per query head: DAC the query, read the
    score array (context x d cells, two signed phases), softmax path: one ADC conversion per
    score and a digital softmax (hardsigmoid: charge-to-pulse, counted as one comparator-class
    conversion per score), read the value array (context x d cells), one ADC conversion per
    value tile column (output_levels), output scaler."""
    e_rd = _b(bundle, "gaincell.energy_read", 31e-15) * 1e12  # pJ per cell read
    e_wr = _b(bundle, "gaincell.energy_write", 0.6e-15) * 1e12
    t_rd = _b(bundle, "gaincell.t_read", 10e-9) * 1e9
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
    return _result(parts, e_layer * 1e-12, t_layer * 1e-9, n_layers, n_heads)


def _result(parts, e_layer, t_layer, n_layers, n_heads):
    total = sum(parts.values())
    return {"energy_per_token_J": total, "energy_per_layer_J": e_layer, "energy_per_head_J": e_layer / n_heads,
            "latency_per_token_s": t_layer * n_layers, "latency_per_layer_s": t_layer, "energy_parts_J": parts}


def cost_for(kernel_name, model_config, context, bundle=None, stats=None, kernel=None,
             dc: DigitalCosts = DigitalCosts()):
    c = model_config
    args = (c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, context)
    if kernel_name == "sprint" and stats is not None:
        s = stats.summary()
        return sprint_cost(*args, s["kept_fraction"], s["newly_fetched_fraction"], bundle, dc,
                           key_bits=kernel.cfg.key_bits if kernel is not None else 4)
    if kernel_name == "gaincell":
        cfg = kernel.cfg if kernel is not None else None
        return gaincell_cost(*args, bundle, dc, activation=cfg.activation if cfg else "softmax",
                             adc_bits=cfg.adc_bits if cfg else 8, output_levels=cfg.output_levels if cfg else 32,
                             rows=cfg.rows if cfg else 64)
    return ideal_cost(*args, dc=dc)


def format_cost(name, r) -> str:
    parts = ", ".join(f"{k} {v * 1e9:.3g}" for k, v in sorted(r["energy_parts_J"].items(), key=lambda kv: -kv[1]))
    return (f"{name}: attention energy {r['energy_per_token_J'] * 1e9:.4g} nJ/token "
            f"({r['energy_per_head_J'] * 1e9:.4g} nJ per head per layer; nJ: {parts}); "
            f"latency {r['latency_per_token_s'] * 1e6:.4g} us/token ({r['latency_per_layer_s'] * 1e9:.4g} ns/layer)")


def paper_lines() -> list[str]:
    p = PAPER
    return [f"paper (gain cell, GPT-2 12 heads, 1024 context): {p['gaincell_per_head_nj']} nJ per head per token, "
            f"{p['gaincell_per_token_12heads_nj']} nJ/token, {p['gaincell_latency_ns']} ns/token",
            f"paper GPU baselines (batch 64, 12 heads, d 64, 1024 KV): RTX 4090 {p['rtx4090_per_token_us']} us and "
            f"{p['rtx4090_per_token_mj']} mJ per token; Jetson Nano {p['jetson_nano_per_token_us']} us and "
            f"{p['jetson_nano_per_token_mj']} mJ",
            f"paper (SPRINT): {p['sprint_speedup']}x speedup, {p['sprint_energy_reduction']}x energy reduction vs its "
            f"digital baseline"]
