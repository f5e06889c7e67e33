"""Registry entry of the gain-cell kernel: build (calibration file included), cost, comparison."""
from __future__ import annotations

from ..costs import DigitalCosts
from ..registry import KernelSpec
from .calibration import calibrated_kernel
from .config import GainCellConfig
from .cost import gaincell_cost
from .device import CellModel
from .kernel import GainCellAttention
from .scalers import Scalers


def calibration_meta(model, bundle, config: GainCellConfig) -> dict:
    """What a calibration file records and must match: model, surrogate bundle, configuration."""
    return {"model": model.name, "surrogates": bundle.info.get("source_digest", ""),
            "config": config.calibration_key()}


def build(model, bundle, config: GainCellConfig, calibration_windows, cal_file=None, log=None):
    """The gain-cell kernel from a surrogate bundle, its scalers calibrated on the windows (or
    loaded from ``cal_file`` when it exists; written there after calibrating otherwise). The
    kernel returned is a fresh one (its random draws start from the seed)."""
    cell = CellModel.from_bundle(bundle, temperature=config.array.cell_temperature)
    meta = calibration_meta(model, bundle, config)
    if cal_file is not None and cal_file.exists():
        sc = Scalers.load(cal_file, expect=meta)
        if log:
            log(f"calibration: loaded {cal_file}")
        return GainCellAttention(cell, config, sc)
    calibrated, _ = calibrated_kernel(model, calibration_windows, cell, config)
    if cal_file is not None:
        calibrated.sc.save(cal_file, meta)
        if log:
            log(f"calibration: wrote {cal_file}")
    return GainCellAttention(cell, config, calibrated.sc, readout=calibrated.readout)


def cost(model_config, context, bundle=None, kernel=None, stats=None, dc: DigitalCosts = DigitalCosts()):
    c = model_config
    cv = kernel.cfg.converters if kernel is not None else None
    ar = kernel.cfg.array if kernel is not None else None
    return gaincell_cost(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, context, bundle, dc,
                         activation=ar.activation if ar else "softmax", adc_bits=cv.adc_bits if cv else 8,
                         output_levels=cv.output_levels if cv else 32, rows=ar.rows if ar else 64,
                         refresh_interval=ar.refresh_interval if ar else 0)


def comparison(ctx):
    """The softmax hybrid over storage levels (``levels``), hardsigmoid at 8 levels per output
    calibration method; ranges calibrated once and shared."""
    cell = CellModel.from_bundle(ctx.bundle)
    base = GainCellConfig(window=ctx.window)
    ranges = None
    for act, lv, method in ([("softmax", n, "meanstd") for n in ctx.options.get("levels", (4, 8, 16, 32, 64))]
                            + [("hardsigmoid", 8, m) for m in ("meanstd", "lstsq")]):
        cfg = base.replace(activation=act, storage_levels=lv)
        ker, ranges = calibrated_kernel(ctx.model, ctx.cal_windows, cell, cfg, method, ranges=ranges,
                                        captured=ctx.captured())
        yield f"{act}, {lv} storage levels, {method}", ker


SPEC = KernelSpec("gaincell", "gain-cell KV cache: analog scores and values, retention decay, converters",
                  GainCellConfig, build, cost, needs_bundle=True, needs_calibration=True,
                  calibrate=calibrated_kernel, comparison=comparison)
