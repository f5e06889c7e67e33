"""Energy and latency of attention per generated token, from the surrogate bundle's measured
energies and delays plus stated per-operation costs of the digital parts.

Scenario (the papers' own): token-by-token decoding with a KV cache of ``context`` tokens, one
query per head per token. Circuit numbers come from the bundle (ngspice): gain-cell read and
write energy per cell and read time; ReRAM column energy and settling time per evaluation;
comparator energy and delay per decision. Digital numbers are the stated constants below;
change them with ``DigitalCosts(...)``. The per-head, per-token kept fraction and locality of the
pruning kernel are the ones measured in the run.

Each kernel's cost model sits with the kernel (``attention/<kernel>/cost.py``, the digital
baseline and the stated constants in :mod:`analogattn.attention.costs`) and is reached through
the kernel registry (:mod:`analogattn.attention.registry`), so a new kernel needs no edit here.
"""
from __future__ import annotations

from ..attention import registry
from ..attention.costs import DigitalCosts, ideal_cost
from ..attention.gaincell.cost import gaincell_cost
from ..attention.sprint.cost import sprint_cost

__all__ = ["DigitalCosts", "PAPER", "cost_for", "format_cost", "paper_lines", "ideal_cost", "gaincell_cost",
           "sprint_cost"]


# Published figures printed beside ours (../shared/reference/*.md)
PAPER = {
    "gaincell_per_head_nj": 6.15, "gaincell_per_token_12heads_nj": 73.8, "gaincell_latency_ns": 65.0,
    "rtx4090_per_token_us": 22.4, "rtx4090_per_token_mj": 7.18, "jetson_nano_per_token_us": 489.0,
    "jetson_nano_per_token_mj": 3.25, "sprint_speedup": 7.5, "sprint_energy_reduction": 19.6,
}


def cost_for(kernel_name, model_config, context, bundle=None, stats=None, kernel=None,
             dc: DigitalCosts = DigitalCosts()):
    """Energy and latency per token of the registered kernel ``kernel_name`` (its statistics
    ``stats`` and configuration from ``kernel`` where the cost model uses them)."""
    return registry.get(kernel_name).cost(model_config, context, bundle, kernel, stats, dc)


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
