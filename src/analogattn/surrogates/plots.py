"""PNG figures of the fits against SPICE (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_all(char_path, models: dict, outdir) -> list[Path]:
    """Every registered family's plot hook on the characterization file."""
    from ..characterize import families
    plt = _plt()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with h5py.File(char_path, "r") as f:
        for fam in families.families().values():
            hook = fam.plot_hook()
            if hook is not None:
                files += hook(f, models, out, plt)
    return files


def plot_gaincell(f, models: dict, out: Path, plt) -> list[Path]:
    """The gaincell family's figures from the open characterization ``f``."""
    files = []
    if "gaincell.read_surface" in models and "gaincell/read_surface" in f:
        g = f["gaincell/read_surface"]
        I, vs, vi = g["current"][()], g["v_store"][()], g["v_in"][()]
        VS, VI = np.meshgrid(vs, vi, indexing="ij")
        m = models["gaincell.read_surface"]
        res = m(VS, VI) - I
        fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
        for j in range(0, len(vi), max(1, len(vi) // 6)):
            ax[0].plot(vs, I[:, j] * 1e6, "o", ms=3)
            ax[0].plot(vs, m(vs, np.full_like(vs, vi[j])) * 1e6, "-", lw=1, label=f"V_in={vi[j]:.2f}")
        ax[0].set(xlabel="V_store (V)", ylabel="I (uA)", title=f"read surface: SPICE (o) vs {m.kind}")
        ax[0].legend(fontsize=7)
        im = ax[1].imshow(I.T * 1e6, origin="lower", aspect="auto", extent=[vs[0], vs[-1], vi[0], vi[-1]])
        fig.colorbar(im, ax=ax[1], label="uA")
        ax[1].set(xlabel="V_store (V)", ylabel="V_in (V)", title="SPICE surface")
        rel = res.T / (I.max() - I.min()) * 100
        lim = max(float(np.nanmax(np.abs(rel))), 1e-6)
        im = ax[2].imshow(rel, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                          extent=[vs[0], vs[-1], vi[0], vi[-1]])
        fig.colorbar(im, ax=ax[2], label="% of full scale")
        ax[2].set(xlabel="V_store (V)", ylabel="V_in (V)",
                  title=f"residual ({m.kind}), held-out NRMSE {100 * m.scores['nrmse']:.3f}%")
        files.append(_save(fig, out / "gaincell_read_surface.png", plt))
    if "gaincell.write" in models and "gaincell/write_read" in f:
        g = f["gaincell/write_read"]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(g["v_written"][()], g["v_stored"][()], "o", label="SPICE")
        x = np.linspace(0, g["v_written"][()].max(), 200)
        ax.plot(x, models["gaincell.write"](x), "-", label="surrogate")
        ax.plot(x, x, ":", c="gray", label="ideal")
        ax.set(xlabel="written V (V)", ylabel="stored V (V)", title="gain-cell write transfer")
        ax.legend()
        files.append(_save(fig, out / "gaincell_write_transfer.png", plt))
    if "gaincell.retention" in models and "gaincell/retention" in f:
        g = f["gaincell/retention"]
        t, v, temps, starts = g["time"][()], g["v_store"][()], g["temperature"][()], g["v_start"][()]
        m = models["gaincell.retention"]
        fig, ax = plt.subplots(figsize=(6, 4))
        bound = list(m.meta.get("tau_lower_bound", [])) if isinstance(m.meta, dict) else []
        for i, T in enumerate(temps):
            tau = m.params_at(T)[0]
            txt = f"{tau * 1e6:.1f} us" if tau < 1e-3 else f"{tau:.3g} s"
            txt = ("tau >= " if i < len(bound) and bound[i] else "tau = ") + txt
            for k in range(len(starts)):
                ax.semilogx(t[1:], v[i, k, 1:], ".", ms=2, c=f"C{i}")
                ax.semilogx(t[1:], m(v[i, k, 0], t[1:], T), "-", lw=1, c=f"C{i}",
                            label=f"{T:g} degC fit, {txt}" if k == 0 else None)
        ax.set(xlabel="time after write (s)", ylabel="V_store (V)", title="retention: SPICE (.) and decay fit")
        ax.legend(fontsize=8)
        files.append(_save(fig, out / "gaincell_retention.png", plt))
    return files


def plot_reram(f, models: dict, out: Path, plt) -> list[Path]:
    """The reram family's figures from the open characterization ``f``."""
    files = []
    if "reram.column" in models and "reram/patterns" in f:
        g = f["reram/patterns"]
        held = g["held_out"][()]
        m = models["reram.column"]
        pred = m(g["k_levels"][()][held], g["v_in"][()][held])
        fig, ax = plt.subplots(figsize=(5, 5))
        y = g["current"][()][held] * 1e6
        ax.plot(y, pred * 1e6, ".", label=f"surrogate, NRMSE {100 * m.scores['nrmse']:.3f}%")
        ax.plot(y, g["ideal"][()][held] * 1e6, "x", ms=3, alpha=0.5, label="ideal dot product")
        ax.plot([y.min(), y.max()], [y.min(), y.max()], "k:")
        ax.set(xlabel="SPICE column current (uA)", ylabel="predicted (uA)", title="ReRAM column, held-out patterns")
        ax.legend(fontsize=8)
        files.append(_save(fig, out / "reram_column_scatter.png", plt))
    return files


def plot_comparator(f, models: dict, out: Path, plt) -> list[Path]:
    """The comparator family's figures from the open characterization ``f``."""
    files = []
    if "comparator.probit" in models and "comparator/decision" in f:
        g = f["comparator/decision"]
        m = models["comparator.probit"]
        dv = g["dv"][()]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(dv * 1e3, g["p_keep"][()], "o", ms=3, label="Monte Carlo (SPICE)")
        ax.plot(dv * 1e3, m(dv, include_mismatch=True), "-", label=f"probit, sigma={1e3 * float(m.offset_sigma):.2f} mV")
        ax.set(xlabel="differential input (mV)", ylabel="P(keep)", title="comparator decision transfer")
        ax.legend(fontsize=8)
        files.append(_save(fig, out / "comparator_probit.png", plt))
    return files


def _save(fig, path, plt):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
