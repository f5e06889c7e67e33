"""The gain-cell kernel's options: converters, array, noise and calibration (section ``calibrate``:
``calibration`` is the name of its method option). Leaf names are unique in the tree."""
from __future__ import annotations

import dataclasses

from ...params import Validated, param
from ..config import ComposedConfig


@dataclasses.dataclass(frozen=True)
class GainCellConverters(Validated):
    input_levels: int = param(16, "", 2, 65536, "pulse-width levels per sign (0 = unquantised)", off=0)
    output_levels: int = param(32, "", 2, 65536, "levels of each value tile's digitised output (0 = none)", off=0)
    adc_bits: int = param(8, "bits", 0, 24, "ADC on the scores before the digital softmax (0 = none)")
    query_scale: bool = param(False, doc="scale each query's pulses to its largest element (DAC reference "
                                        "per token), undone digitally on the scores")
    tile_scale: bool = param(True, doc="softmax: each value tile's pulses span the tile's largest weight (a "
                                       "per-tile DAC reference), multiplied back digitally after its ADC")
    ratiometric: bool = param(True, doc="softmax: each value tile's ADC reference follows the tile's pulse sum "
                                        "(a reference column of full-scale cells driven by the same pulses), so "
                                        "the ADC digitises the weighted mean of the tile's values")


@dataclasses.dataclass(frozen=True)
class GainCellArray(Validated):
    storage_levels: int = param(8, "", 2, 65536, "stored-voltage levels over [0, VDD] (0 = unquantised)", off=0)
    rows: int = param(64, "", 1, 65536, "rows per array: cells summed on one bit line")
    token_period: float = param(65e-9, "s", 0.0, 1.0, "time between tokens (0 = no decay)")
    refresh_interval: int = param(0, "tokens", 0, 10**7, "refresh: every N tokens re-write every stored cell to "
                                  "its written value (resets its decay; costs one write per cell; 0 = never)")
    cell_temperature: float = param(27.0, "degC", -55.0, 150.0, "temperature of the cell's retention model")
    activation: str = param("softmax", choices=("softmax", "hardsigmoid"), doc="score activation")
    window: int = param(1024, "tokens", 0, 10**7, "causal sliding window (0 = unlimited)")
    poly_degree: int = param(5, "", 1, 12, "degree of the cell expansion used when decay is on")
    predistort: bool = param(True, doc="write through the inverse cell and write-transfer curves, so the "
                                       "read current (not the voltage) is linear in k and v")
    retention_comp: bool = param(True, doc="softmax: undo the known decay digitally (each score divided by "
                                           "its decay factor after the ADC; each weight's pulse lengthened by it)")


@dataclasses.dataclass(frozen=True)
class GainCellNoise(Validated):
    mismatch: bool = param(False, doc="fixed per-cell deviations: the written voltage (write Monte Carlo, "
                                      "gaincell.write_sigma) and the read current (read Monte Carlo)")
    circuit_read_noise: bool = param(True, doc="the cell's characterized read noise (gaincell.read_noise of the "
                                               "bundle: .noise of the read stack integrated over a read pulse) on "
                                               "every score and value-tile read; no effect without that model")
    read_noise: float = param(0.0, "", 0.0, 1.0, "extra per-read Gaussian noise, relative to a tile's full scale")
    seed: int = param(0, "", 0, 2**31 - 1, "seed of mismatch and noise draws")


@dataclasses.dataclass(frozen=True)
class GainCellCalibration(Validated):
    calibration: str = param("meanstd", choices=("meanstd", "lstsq", "none"),
                             doc="output-scaler calibration against the ideal model")
    calibration_windows: int = param(2, "", 1, 1000, "calibration windows (of the run's window length)")
    equalise: bool = param(True, doc="per-channel k/v equalisation folded into q and the output (exact digitally)")
    range_quantile: float = param(0.999, "", 0.5, 1.0, "quantile of |q|, |k|, |v| mapped to full scale")
    headroom: float = param(0.9, "", 0.01, 1.0, "fraction of the cell's range the k, v quantile is written to")
    score_margin: float = param(1.0, "", 0.01, 100.0, "score tiles' full scale over the quantile of |q.k|")
    tile_quantile: float = param(0.999, "", 0.5, 1.0, "quantile of |value-tile output| for the tile full scale")
    tile_margin: float = param(1.1, "", 0.5, 100.0, "value-tile full scale over that quantile")


@dataclasses.dataclass(frozen=True, init=False)
class GainCellConfig(ComposedConfig):
    converters: GainCellConverters = dataclasses.field(default_factory=GainCellConverters)
    array: GainCellArray = dataclasses.field(default_factory=GainCellArray)
    noise: GainCellNoise = dataclasses.field(default_factory=GainCellNoise)
    calibrate: GainCellCalibration = dataclasses.field(default_factory=GainCellCalibration)

    ALIASES = {"temperature": "cell_temperature"}

    def calibration_key(self) -> str:
        """What a calibration file must match (JSON of the leaves; the number of calibration
        windows is not compared, as before)."""
        return self.leaves_json(drop=("calibration_windows",))
