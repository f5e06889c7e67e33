"""The pruning kernel's options: converters, pruning rule, noise and calibration (leaf names unique)."""
from __future__ import annotations

import dataclasses

from ...params import Validated, param
from ..config import ComposedConfig


@dataclasses.dataclass(frozen=True)
class SprintConverters(Validated):
    key_bits: int = param(4, "bits", 1, 4, "key MSBs stored as conductance levels (at most log2 of 16 levels)")
    dac_bits: int = param(4, "bits", 1, 12, "query DAC bits per sign (the sign is a second read phase)")


@dataclasses.dataclass(frozen=True)
class SprintPruning(Validated):
    rule: str = param("anchor", choices=("anchor", "fixed", "oracle", "none"), doc="threshold rule")
    keep: float = param(0.30, "", 0.0, 1.0, "fraction of causal scores the thresholds are calibrated to keep",
                        lo_open=True, hi_open=True)
    sink: int = param(1, "tokens", 0, 4096, "anchor rule: first tokens of the sequence, always kept and exact")
    local: int = param(4, "tokens", 0, 4096, "anchor rule: most recent tokens, always kept and exact")
    budget: str = param("global", choices=("global", "layer", "head"),
                        doc="heads sharing one calibrated threshold (anchor: a margin in logits, so a shared "
                            "one keeps more keys where attention is diffuse and fewer where it is peaked)")
    mass: float = param(0.99, "", 0.0, 1.0, "oracle rule: softmax mass each query keeps", lo_open=True)
    window: int = param(0, "tokens", 0, 10**7, "causal sliding window (0 = the model's mask)")


@dataclasses.dataclass(frozen=True)
class SprintNoise(Validated):
    variation: bool = param(True, doc="fixed lognormal conductance variation per cell and a fixed input offset "
                                      "per comparator")
    circuit_noise: bool = param(True, doc="fresh relative read noise on every column evaluation and fresh "
                                          "comparator noise per decision")
    seed: int = param(0, "", 0, 2**31 - 1, "seed of the variation, offset and noise draws")


@dataclasses.dataclass(frozen=True)
class SprintCalibration(Validated):
    calibration_windows: int = param(2, "", 1, 1000, "calibration windows (of the run's window length)")
    equalise: bool = param(True, doc="per-channel key equalisation folded into the query (exact digitally)")
    swing: float = param(0.3, "V", 0.001, 0.9, "comparator input swing the calibration scores are scaled to "
                                              "(sets each array's differential TIA gain)")
    key_quantile: float = param(0.999, "", 0.5, 1.0, "quantile of |k| mapped to the largest key code")


@dataclasses.dataclass(frozen=True, init=False)
class SprintConfig(ComposedConfig):
    converters: SprintConverters = dataclasses.field(default_factory=SprintConverters)
    pruning: SprintPruning = dataclasses.field(default_factory=SprintPruning)
    noise: SprintNoise = dataclasses.field(default_factory=SprintNoise)
    calibrate: SprintCalibration = dataclasses.field(default_factory=SprintCalibration)

    # the flat config's separate switches, each now one of a pair
    ALIASES = {"read_noise": "circuit_noise", "comparator_noise": "circuit_noise", "comparator_offset": "variation"}

    def calibration_key(self) -> str:
        """What a calibration file must match: calibration runs the mean circuit, so the seed and
        the noise switches are not compared (nor the number of calibration windows, as before)."""
        return self.leaves_json(drop=("seed", "variation", "circuit_noise", "calibration_windows"))
