"""Perplexity by context age: bins of scored tokens by the age of the oldest key they read (a
teacher-forced decode's or a prefill window's position), their table and figure."""
from __future__ import annotations

import math

import numpy as np


def age_bins(token_position, token_nll, bin_tokens: int = 256) -> list[dict]:
    """[{"from", "to", "tokens", "nll", "perplexity"}] of the scored tokens whose position (the
    age in tokens of the oldest key their query reads) lies in [from, to); empty bins left out."""
    pos = np.asarray(token_position, np.int64)
    nll = np.asarray(token_nll, np.float64)
    if pos.size == 0:
        return []
    out = []
    for a in range(0, int(pos.max()) + 1, bin_tokens):
        m = (pos >= a) & (pos < a + bin_tokens)
        if m.any():
            mean = float(nll[m].mean())
            out.append({"from": a, "to": a + bin_tokens, "tokens": int(m.sum()), "nll": mean,
                        "perplexity": float(math.exp(mean))})
    return out


def format_age_table(bins: list[dict]) -> str:
    lines = [f"{'context age [tokens]':>22s} {'tokens':>7s} {'perplexity':>11s}"]
    for b in bins:
        lines.append(f"{b['from']:>10d} - {b['to']:<9d} {b['tokens']:7d} {b['perplexity']:11.4f}")
    return "\n".join(lines)


def plot_by_age(curves: dict, path, title: str = "", reference: str | None = None) -> None:
    """PNG of perplexity per context-age bin, one line per entry of ``curves`` (label -> bins of
    :func:`age_bins`); with ``reference`` (a label of ``curves``) a second panel of each curve's
    ratio to it, bin by bin (the same tokens)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    two = reference is not None and reference in curves and len(curves) > 1
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(10 if two else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
    for label, bins in curves.items():
        c = [0.5 * (b["from"] + b["to"]) for b in bins]
        ax.plot(c, [b["perplexity"] for b in bins], "o-", label=label)
    ax.set_xlabel("context age (oldest key read) [tokens], bin centre")
    ax.set_ylabel("perplexity (teacher-forced)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    if title:
        import textwrap
        fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=8)
    if two:
        ref = {b["from"]: b["perplexity"] for b in curves[reference]}
        ax2 = axes[0, 1]
        for label, bins in curves.items():
            if label == reference:
                continue
            pts = [(0.5 * (b["from"] + b["to"]), b["perplexity"] / ref[b["from"]]) for b in bins if b["from"] in ref]
            if pts:
                ax2.plot(*zip(*pts), "o-", label=label)
        ax2.axhline(1.0, color="k", lw=0.6)
        ax2.set_xlabel("context age (oldest key read) [tokens], bin centre")
        ax2.set_ylabel(f"perplexity / {reference} (same tokens)")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
