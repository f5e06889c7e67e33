"""Pareto figure (perplexity ratio vs energy per token and vs area; front highlighted, the default
design marked, chip p10-p90 error bars) and the yield figure of a chip sweep."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write(d, spec, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..atomic import replacing
    files = []
    if d.empty:
        return files
    ok = d[np.isfinite(d.ppl_ratio)]
    chips = spec.chip_sweep and spec.chips.n > 1
    # y range: the medians, the budget and the error bars, but not a broken chip's 1e7 (its bar is
    # cut at the top and marked with an arrow)
    med = ok.ppl_ratio.to_numpy(float)
    top = max(1.5 * np.nanmax(med), 1.1 * spec.chips.budget if chips else 0.0) if len(med) else 2.0
    if chips and len(ok):
        top = min(max(top, np.nanmax(ok.ppl_ratio_p90.to_numpy(float)) * 1.05), 3.0 * np.nanmax(med))
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, col, scale, label in ((axs[0], "energy_per_token_J", 1e9, "attention energy per token [nJ]"),
                                  (axs[1], "area_per_element_um2", 1.0, "area per stored K/V element [um$^2$]")):
        for sub, style in ((ok[~ok.pareto], dict(color="0.6", ms=5, label="designs")),
                           (ok[ok.pareto], dict(color="C3", ms=7, label="Pareto front"))):
            x = sub[col].to_numpy(float) * scale
            y = sub.ppl_ratio.to_numpy(float)
            yerr = None
            if chips:
                hi = sub.ppl_ratio_p90.to_numpy(float)
                yerr = np.vstack([y - sub.ppl_ratio_p10.to_numpy(float), np.minimum(hi, top) - y])
                cut = hi > top
                if cut.any():
                    ax.plot(x[cut], np.full(cut.sum(), top), "^", color=style["color"], ms=5, clip_on=False)
            ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=2, lw=0.8, **style)
        front = ok[ok.pareto].sort_values(col)
        ax.plot(front[col] * scale, front.ppl_ratio, "-", color="C3", lw=0.8, alpha=0.6)
        for _, r in front.iterrows():  # the design index of pareto.txt's first column
            ax.annotate(str(int(r.design_index)), (r[col] * scale, r.ppl_ratio), xytext=(4, 3),
                        textcoords="offset points", fontsize=7, color="C3")
        dflt = ok[ok.is_default]
        if len(dflt):
            ax.plot(dflt[col] * scale, dflt.ppl_ratio, "*", color="k", ms=14, mfc="gold", label="default design")
        if chips:
            ax.axhline(spec.chips.budget, color="k", ls="--", lw=0.8, label=f"budget {spec.chips.budget:g}x")
        xs = ok[col].to_numpy(float) * scale
        if len(xs) and np.nanmin(xs) > 0 and np.nanmax(xs) / np.nanmin(xs) > 5:
            ax.set_xscale("log")
        ax.set_ylim(top=top)
        ax.set_xlabel(label)
        ax.set_ylabel("perplexity / ideal" + (" (median, p10-p90 over chips;\n^: p90 above the axis)"
                                               if chips else ""))
        ax.legend(fontsize=8)
    linked = "".join(f"; {lk.name} = {lk.scale:g} x {lk.follow}" for lk in spec.links)
    fig.suptitle(f"{spec.evaluation.attention} sweep: {len(d)} designs, {int(d.pareto.sum())} on the front "
                 f"(labels: design index) ; objectives: {', '.join(spec.evaluation.objectives)}\n"
                 f"{spec.chips.n} chip(s) per design, {spec.evaluation.max_scored} scored tokens{linked}", fontsize=9)
    fig.tight_layout()
    files.append(out / "pareto.png")
    with replacing(files[-1]) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    if chips:
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(d) + 2), 4))
        colors = ["C3" if p else "C0" for p in d.pareto]
        ax.bar(np.arange(len(d)), d["yield"], color=colors)
        ax.set_xticks(np.arange(len(d)))
        ax.set_xticklabels([f"{i}{'*' if dd else ''}" for i, dd in zip(d.design_index, d.is_default)], fontsize=7)
        ax.set_xlabel("design index (* default; red: on the Pareto front)")
        ax.set_ylabel(f"yield (chips within {spec.chips.budget:g}x ideal)")
        ax.set_ylim(0, 1.05)
        fig.tight_layout()
        files.append(out / "yield.png")
        with replacing(files[-1]) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    return files
