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
    # y range: the front (medians and chip bars) and the budget; a design or a bar above it (a far
    # worse design, a broken chip's 1e7) is drawn as ^ at the top edge, labelled with its index
    front_ok = ok[ok.pareto]
    ref = front_ok if len(front_ok) else ok
    top = 2.0
    if len(ref):
        top = 1.15 * max(np.nanmax(ref.ppl_ratio_p90.to_numpy(float)) if chips else 0.0,
                         np.nanmax(ref.ppl_ratio.to_numpy(float)), spec.chips.budget if chips else 0.0)
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, col, scale, label in ((axs[0], "energy_per_token_J", 1e9, "attention energy per token [nJ]"),
                                  (axs[1], "area_per_element_um2", 1.0, "area per stored K/V element [um$^2$]")):
        for sub, style in ((ok[~ok.pareto], dict(color="0.6", ms=5, label="designs")),
                           (ok[ok.pareto], dict(color="C3", ms=7, label="Pareto front"))):
            sub_all = sub
            above = sub_all.ppl_ratio.to_numpy(float) > top
            ax.plot(sub_all[col].to_numpy(float)[above] * scale, np.full(above.sum(), top / 1.012), "^",
                    color=style["color"], ms=7)
            sub = sub_all[~above]
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
            ax.plot(dflt[col].to_numpy(float) * scale, np.minimum(dflt.ppl_ratio.to_numpy(float), top / 1.012), "*",
                    color="k", ms=14, mfc="gold", label="default design")
        if chips:
            ax.axhline(spec.chips.budget, color="k", ls="--", lw=0.8, label=f"budget {spec.chips.budget:g}x")
        xs = ok[col].to_numpy(float) * scale
        if len(xs) and np.nanmin(xs) > 0 and np.nanmax(xs) / np.nanmin(xs) > 5:
            ax.set_xscale("log")
        ax.set_ylim(top=top)
        ax.set_xlabel(label)
        ax.set_ylabel("perplexity / ideal" + (" (median, p10-p90 over chips)" if chips else "")
                      + "\n^: above the axis (design: median)")
        ax.legend(fontsize=8)
    linked = "".join(f"; {lk.name} = {lk.scale:g} x {lk.follow}" for lk in spec.links)
    fig.suptitle(f"{spec.evaluation.attention} sweep: {len(d)} designs, {int(d.pareto.sum())} on the front "
                 f"(labels: design index) ; objectives: {', '.join(spec.evaluation.objectives)}\n"
                 f"{spec.chips.n} chip(s) per design, {spec.evaluation.max_scored} scored tokens{linked}", fontsize=9)
    high = ok[ok.ppl_ratio > top].sort_values("design_index")
    fig.tight_layout()
    if len(high):
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.04)
    if len(high):  # placed after the layout (a figure text would squeeze the axes)
        fig.text(0.01, 0.01, "above the axis (design: median x ideal): " + ", ".join(
            f"{int(r.design_index)}{'*' if r.is_default else ''}: {r.ppl_ratio:.2f}" for _, r in high.iterrows()),
            fontsize=8, color="0.3")
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
