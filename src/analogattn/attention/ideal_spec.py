"""Registry entry of the ideal kernel (exact float32 softmax attention, no options)."""
from __future__ import annotations

import dataclasses

from .base import IdealAttention
from .config import ComposedConfig
from .costs import DigitalCosts, ideal_cost


@dataclasses.dataclass(frozen=True, init=False)
class IdealConfig(ComposedConfig):
    """The ideal kernel has no options."""


def build(model, bundle, config, calibration_windows, cal_file=None, log=None):
    return IdealAttention()


def cost(model_config, context, bundle=None, kernel=None, stats=None, dc: DigitalCosts = DigitalCosts()):
    c = model_config
    return ideal_cost(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, context, dc=dc)


def comparison(ctx):
    yield "float32 softmax", IdealAttention()


def _spec():
    from .registry import KernelSpec
    return KernelSpec("ideal", "exact softmax attention (float32): the reference", IdealConfig, build, cost,
                      comparison=comparison)


SPEC = _spec()
