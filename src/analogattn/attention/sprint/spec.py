"""Registry entry of the ReRAM pruning kernel: build (calibration file included), cost, comparison."""
from __future__ import annotations

from ..costs import DigitalCosts
from ..registry import KernelSpec
from .calibration import calibrate_sprint
from .config import SprintConfig
from .cost import sprint_cost
from .device import Crossbar
from .kernel import SprintAttention
from .scales import SprintScales


def calibration_meta(model, bundle, config: SprintConfig) -> dict:
    return {"model": model.name, "surrogates": bundle.info.get("source_digest", ""),
            "config": config.calibration_key()}


def build(model, bundle, config: SprintConfig, calibration_windows, cal_file=None, log=None):
    """The pruning kernel from a surrogate bundle, calibrated (key scales, TIA gains, thresholds
    for the config's keep) on the windows, or loaded from ``cal_file`` (written after calibrating
    when it does not exist)."""
    xbar = Crossbar.from_bundle(bundle)
    meta = calibration_meta(model, bundle, config)
    if cal_file is not None and cal_file.exists():
        sc = SprintScales.load(cal_file, expect=meta)
        if log:
            log(f"calibration: loaded {cal_file}")
    else:
        sc = calibrate_sprint(model, calibration_windows, xbar, config)
        if cal_file is not None:
            sc.save(cal_file, meta)
            if log:
                log(f"calibration: wrote {cal_file}")
    return SprintAttention(xbar, config, sc, model.config.n_layers)


def cost(model_config, context, bundle=None, kernel=None, stats=None, dc: DigitalCosts = DigitalCosts()):
    """The pruning kernel's cost at the kept and newly fetched fractions measured in its run
    (``stats``, default the kernel's); without statistics, the digital baseline's."""
    from ..costs import ideal_cost
    c = model_config
    args = (c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, context)
    stats = stats if stats is not None else getattr(kernel, "stats", None)
    if stats is None:
        return ideal_cost(*args, dc=dc)
    s = stats.summary()
    return sprint_cost(*args, s["kept_fraction"], s["newly_fetched_fraction"], bundle, dc,
                       key_bits=kernel.cfg.converters.key_bits if kernel is not None else 4)


def comparison(ctx):
    """Anchor (global budget) and fixed (per-head) thresholds over the keep targets (``keeps``),
    the oracle over softmax masses (``masses``); saves the anchor rule's calibration for 0.3."""
    xbar = Crossbar.from_bundle(ctx.bundle)
    keeps = tuple(ctx.options.get("keeps", (0.15, 0.2, 0.3, 0.4)))
    n_layers = ctx.model.config.n_layers
    for rule in ("anchor", "fixed"):
        cfg = SprintConfig(rule=rule, budget="global" if rule == "anchor" else "head")
        ctx.log(f"sprint, {rule} thresholds: calibrating for keep fractions {', '.join(map(str, keeps))}")
        cals = calibrate_sprint(ctx.model, ctx.cal_windows, xbar, cfg, keeps=keeps, captured=ctx.captured())
        cals = cals if isinstance(cals, dict) else {keeps[0]: cals}
        for kp, sc in cals.items():
            yield f"{rule} rule, target keep {kp:.2f}", SprintAttention(xbar, cfg.replace(keep=kp), sc, n_layers)
            if rule == "anchor" and kp == 0.3:
                sc.save(ctx.out_dir / "calibration_sprint.npz", {"model": ctx.model.name, "keep": kp})
    for mass in ctx.options.get("masses", (0.9, 0.95, 0.99)):
        yield (f"oracle, {mass:.2f} softmax mass",
               SprintAttention(xbar, SprintConfig(rule="oracle", mass=mass), cals[keeps[0]], n_layers))


SPEC = KernelSpec("sprint", "ReRAM pruning: keys in a crossbar, comparators keep keys, exact recompute of the kept",
                  SprintConfig, build, cost, needs_bundle=True, needs_calibration=True, calibrate=calibrate_sprint,
                  comparison=comparison, summary=lambda kernel: {**kernel.stats.summary(),
                                                   "column_vs_spice_nrmse": kernel.x.kernel_nrmse},
                  summary_key="pruning")
