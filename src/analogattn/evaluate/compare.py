"""The end-to-end comparison: one model, one text, ideal attention next to the circuit kernels
(gain cell with both activations over storage levels, ReRAM pruning over keep fractions with
three threshold rules), with energy, latency and speed; a table, a JSON file and figures."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..attention import registry
from ..attention.base import IdealAttention
from .cost import paper_lines
from .perplexity import perplexity


@dataclasses.dataclass
class Row:
    kernel: str
    setting: str
    perplexity: float
    ratio: float
    kept: float | None
    mass: float | None
    energy_nj: float
    latency_us: float
    tokens_per_s: float
    extra: dict = dataclasses.field(default_factory=dict)


def _run(model, tokens, window, kernel, max_scored):
    return perplexity(model, tokens, window, kernel=kernel, max_scored=max_scored, progress=False)


def compare(model, tokens, cal_windows, bundle, out_dir: Path, window: int = 512, max_scored: int = 1024,
            levels=(4, 8, 16, 32, 64), keeps=(0.15, 0.2, 0.3, 0.4), masses=(0.9, 0.95, 0.99),
            log=print, kernels=None) -> list[Row]:
    """Every registered kernel's comparison settings (or those of ``kernels``, names), in
    registration order (the ideal kernel first: the ratios are to its perplexity). ``levels``,
    ``keeps`` and ``masses`` are the sweeps of the gain-cell and pruning kernels."""
    out_dir.mkdir(parents=True, exist_ok=True)
    c = model.config
    rows: list[Row] = []
    ctx = registry.ComparisonContext(model, cal_windows, bundle, out_dir, window,
                                     {"levels": tuple(levels), "keeps": tuple(keeps), "masses": tuple(masses)}, log)

    def add(spec, setting, r, kernel):
        cost = spec.cost(c, window, bundle, kernel)
        s = spec.summary(kernel)
        row = Row(spec.name, setting, r.perplexity, r.perplexity / rows[0].perplexity if rows else 1.0,
                  s.get("kept_fraction") if s else None, s.get("softmax_mass_kept") if s else None,
                  cost["energy_per_token_J"] * 1e9, cost["latency_per_token_s"] * 1e6, r.tokens_per_s,
                  {spec.summary_key: s} if s else {})
        rows.append(row)
        log(f"  {spec.name:9s} {setting:34s} ppl {row.perplexity:9.4f}  x{row.ratio:7.4f}"
            + (f"  kept {row.kept:.3f}" if row.kept is not None else "") + f"  {row.tokens_per_s:6.1f} tok/s")
        return row

    t0 = time.perf_counter()
    for spec in registry.specs():
        if spec.comparison is None or (kernels is not None and spec.name not in kernels):
            continue
        if spec.needs_bundle and bundle is None:
            log(f"{spec.name}: skipped (no surrogate bundle)")
            continue
        if spec.name == "ideal":
            log(f"ideal attention ({window}-token windows, {max_scored} scored tokens)")
        for setting, kernel in spec.comparison(ctx):
            add(spec, setting, _run(model, tokens, window, kernel, max_scored), kernel)
    log(f"comparison done in {time.perf_counter() - t0:.0f} s")
    (out_dir / "comparison.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    return rows


def table(rows: list[Row]) -> str:
    head = (f"{'kernel':9s} {'setting':36s} {'perplexity':>10s} {'x ideal':>8s} {'kept':>6s} {'mass':>6s} "
            f"{'nJ/token':>10s} {'us/token':>9s} {'tok/s':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        k = f"{r.kept:6.3f}" if r.kept is not None else f"{'-':>6s}"
        m = f"{r.mass:6.3f}" if r.mass is not None else f"{'-':>6s}"
        lines.append(f"{r.kernel:9s} {r.setting:36s} {r.perplexity:10.4f} {r.ratio:8.4f} {k} {m} "
                     f"{r.energy_nj:10.4g} {r.latency_us:9.4g} {r.tokens_per_s:7.1f}")
    lines.append("energy/latency: attention only, per token when decoding at the window's context "
                 "(analogattn.evaluate.cost states the digital costs)")
    lines += paper_lines()
    return "\n".join(lines)


def plots(rows: list[Row], out_dir: Path, model=None, tokens=None, cal_windows=None, bundle=None,
          layer: int = 3, head: int = 0, n: int = 128) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    ideal = rows[0].perplexity
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pick in (("anchor rule (ours)", "anchor"), ("fixed per-head threshold", "fixed"),
                        ("99%-mass oracle family", "oracle")):
        pts = sorted((r.kept, r.ratio) for r in rows if r.kernel == "sprint" and pick in r.setting)
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("kept fraction of causal scores")
    ax.set_ylabel("perplexity / ideal")
    ax.set_title(f"ReRAM pruning (ideal perplexity {ideal:.3f})")
    ax.legend()
    fig.tight_layout()
    files.append(out_dir / "ppl_vs_keep.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = sorted((int(r.setting.split(",")[1].split()[0]), r.ratio) for r in rows
                 if r.kernel == "gaincell" and r.setting.startswith("softmax"))
    if pts:
        ax.plot(*zip(*pts), "o-", label="gain cell, softmax hybrid (all circuit effects)")
        ax.set_xscale("log", base=2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("storage levels")
    ax.set_ylabel("perplexity / ideal")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    files.append(out_dir / "ppl_vs_storage_levels.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    if model is not None and bundle is not None:
        files.append(attention_maps(model, tokens[:n], cal_windows, bundle, out_dir, layer, head))
    return files


def attention_maps(model, ids, cal_windows, bundle, out_dir, layer, head):
    """One head's attention weights on the first tokens: ideal, gain cell (softmax, 32 levels),
    and the pruning kernel's kept set over the ideal weights."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..attention import capture
    from ..attention.gaincell import CellModel, GainCellAttention, GainCellConfig, calibrated_kernel
    from ..attention.recorders import KeepLog, WeightProbe
    from ..attention.sprint import Crossbar, SprintAttention, SprintConfig, calibrate_sprint
    c = model.config
    T = len(ids)
    cap = {}

    def see(lyr, q, k, v, positions, mask):
        if lyr == layer:
            g = q.shape[0] // k.shape[0]
            s = q[head] @ k[head // g].T / np.sqrt(q.shape[-1])
            s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            cap["ideal"] = s / s.sum(axis=1, keepdims=True)

    capture.run(model, [ids], capture.Tap(IdealAttention(), see))
    cell = CellModel.from_bundle(bundle)
    captured = capture.capture(model, cal_windows)
    gk, _ = calibrated_kernel(model, cal_windows, cell, GainCellConfig(storage_levels=32), captured=captured)
    probe = WeightProbe(layer, head)
    # the calibrated kernel with a probe (same scalers, cell tables and random generator)
    gp = GainCellAttention(cell, gk.cfg, gk.sc, recorder=probe, rng=gk.rng, readout=gk.readout)
    capture.run(model, [ids], gp)
    gw = probe.out[2]
    xbar = Crossbar.from_bundle(bundle)
    cfg = SprintConfig()
    keep_log = KeepLog()
    sk = SprintAttention(xbar, cfg, calibrate_sprint(model, cal_windows, xbar, cfg, captured=captured), c.n_layers,
                         recorder=keep_log)
    capture.run(model, [ids], sk)
    g = c.n_heads // c.n_kv_heads
    keep = np.zeros((T, T), bool)
    for lyr, j, qp, kp, kmask in keep_log.log:
        if lyr == layer and j == head // g:
            keep[np.ix_(qp, kp)] = kmask[head % g]
    fig, axs = plt.subplots(1, 3, figsize=(13, 4.4))
    vmax = np.quantile(cap["ideal"][cap["ideal"] > 0], 0.99)
    axs[0].imshow(cap["ideal"], vmax=vmax, cmap="viridis")
    axs[0].set_title(f"ideal, layer {layer} head {head}")
    axs[1].imshow(gw / max(gw.max(), 1e-30), cmap="viridis", vmax=vmax / max(cap["ideal"].max(), 1e-30))
    axs[1].set_title("gain cell (softmax, 32 levels): weights")
    axs[2].imshow(np.where(keep, cap["ideal"], np.nan), vmax=vmax, cmap="viridis")
    axs[2].set_title(f"ReRAM pruning: kept {keep.sum() / np.tril(np.ones((T, T))).sum():.0%} (ideal weights)")
    for a in axs:
        a.set_xlabel("key")
        a.set_ylabel("query")
    fig.tight_layout()
    path = out_dir / "attention_map.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_stderr(msg):
    print(msg, file=sys.stderr, flush=True)
