"""The results folder: one row file per (design, chip) written atomically the moment it arrives,
the table rebuilt from them (Parquet, one line of pandas to read), per-design aggregates
(median and 90th-percentile perplexity ratio, yield), the Pareto front.

Folder layout::

    sweep.json         spec digest, spec text, package version (a folder of another spec is refused)
    rows/<point>.json  one finished row each (a resumed sweep skips them)
    ideal.json         the ideal kernel's perplexity on the sweep's text
    chars/, bundles/   characterization and surrogate bundle per circuit variant (content-keyed)
    study.db           the Optuna study (nsga2, tpe)
    results.parquet    one row per (design, chip): pandas.read_parquet("sweep-results/results.parquet")
    designs.parquet    one row per design: aggregates, yield, on the Pareto front or not
    pareto.txt, pareto.png, yield.png
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import check_writable_dir, clean_stale_temps, replacing, write_bytes
from ..errors import AnalogAttnError
from .spec import OBJECTIVES, SweepSpec

MARK = "analogattn-sweep/1"
ID_COLUMNS = ["point_id", "design_id", "design_index", "is_default", "chip", "corner", "temperature", "seed"]
OBJ_COLUMNS = ["perplexity", "ppl_ratio", "energy_per_token_J", "latency_per_token_s", "area_per_element_um2",
               "area_per_array_um2", "area_cell_um2", "kept_fraction", "scored_tokens"]
INFO_COLUMNS = ["status", "message", "wall_s", "bundle_digest", "worker_pid", "weight_products"]  # the last: which BLAS
UNITS = {"perplexity": "", "ppl_ratio": "", "energy_per_token_J": "J", "latency_per_token_s": "s",
         "area_per_element_um2": "um^2", "area_per_array_um2": "um^2", "area_cell_um2": "um^2", "wall_s": "s"}


def check_output(path) -> Path:
    """A folder ``sweep`` may write: missing (created later), empty, or one of ours. Touches nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise AnalogAttnError(f"-o/--output {p}: exists and is not a folder")
    if p.is_dir() and any(p.iterdir()) and not (p / "sweep.json").is_file():
        raise AnalogAttnError(f"-o/--output {p}: a non-empty folder that is not a sweep's results (no sweep.json)")
    if p.is_dir():
        check_writable_dir(p, "-o/--output")
    elif not p.parent.is_dir() if str(p.parent) else False:
        raise AnalogAttnError(f"-o/--output {p}: its folder {p.parent} does not exist")
    return p


class ResultsDir:
    def __init__(self, root, spec: SweepSpec):
        self.root, self.spec = Path(root), spec
        meta = self.root / "sweep.json"
        if meta.exists():
            try:
                d = json.loads(meta.read_text())
            except (OSError, ValueError):
                raise AnalogAttnError(f"-o/--output {self.root}: sweep.json is damaged") from None
            if d.get("schema") != MARK:
                raise AnalogAttnError(f"-o/--output {self.root}: sweep.json is not an analogattn sweep's")
            if d.get("spec_digest") != spec.digest():
                raise AnalogAttnError(f"-o/--output {self.root} holds the results of another sweep spec "
                                      f"({d.get('spec_file')}); give another -o folder (only sweep.points may change "
                                      "between a sweep and its continuation)")
        for sub in ("rows", "chars", "bundles"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            clean_stale_temps(self.root / sub)
        clean_stale_temps(self.root)
        if not meta.exists():
            write_bytes(meta, json.dumps({"schema": MARK, "spec_digest": spec.digest(), "spec_file": str(spec.path),
                                          "spec": spec.text, "package_version": __version__}, indent=1).encode())

    # -- rows ---------------------------------------------------------------------------------
    def row_path(self, point_id: str) -> Path:
        return self.root / "rows" / f"{point_id}.json"

    def get_row(self, point_id: str) -> dict | None:
        p = self.row_path(point_id)
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def put_row(self, row: dict) -> None:
        write_bytes(self.row_path(row["point_id"]), json.dumps(row, sort_keys=True).encode())

    def rows(self) -> list[dict]:
        out = []
        for p in sorted((self.root / "rows").glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                pass  # a damaged row is recomputed by the next run
        return out

    # -- small JSON records ----------------------------------------------------------------------
    def get_json(self, name: str):
        try:
            return json.loads((self.root / name).read_text())
        except (OSError, ValueError):
            return None

    def put_json(self, name: str, data) -> None:
        write_bytes(self.root / name, json.dumps(data, sort_keys=True).encode())

    # -- tables ---------------------------------------------------------------------------------
    def table(self):
        """The per-(design, chip) table: axis and linked-key columns (dotted names), objectives,
        status; sorted."""
        import pandas as pd
        axes = self.spec.columns
        rows = self.rows()
        cols = ID_COLUMNS + axes + OBJ_COLUMNS + INFO_COLUMNS
        df = pd.DataFrame([{c: r.get(c, r.get("axes", {}).get(c)) for c in cols} for r in rows], columns=cols)
        for c in OBJ_COLUMNS + ["wall_s"]:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        for c in ("corner",):
            df[c] = df[c].astype(object)
        df["temperature"] = pd.to_numeric(df["temperature"], errors="coerce").astype(float)
        df = df.sort_values(["design_index", "corner", "temperature", "chip"], na_position="first", kind="stable")
        return df.reset_index(drop=True)

    def write_tables(self):
        """results.parquet and designs.parquet, each replaced in one step; the spec and package
        version in the Parquet metadata. Returns (table, designs)."""
        t = self.table()
        d = designs(t, self.spec)
        meta = {"spec": self.spec.text, "spec_digest": self.spec.digest(), "package_version": __version__,
                "units": json.dumps(UNITS), "objectives": json.dumps(list(self.spec.evaluation.objectives)),
                "chip_budget": str(self.spec.chips.budget)}
        _parquet(t, self.root / "results.parquet", meta)
        _parquet(d, self.root / "designs.parquet", meta)
        return t, d


def _parquet(df, path: Path, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    tab = pa.Table.from_pandas(df, preserve_index=False)
    tab = tab.replace_schema_metadata({**(tab.schema.metadata or {}),
                                       **{f"analogattn.{k}".encode(): str(v).encode() for k, v in meta.items()}})
    with replacing(path) as tmp:
        pq.write_table(tab, tmp)


def chip_yield(ratios, budget: float) -> float:
    """Fraction of chips whose perplexity ratio is within ``budget`` (a failed chip, NaN, is not)."""
    r = np.asarray(ratios, float)
    return float(np.mean(np.nan_to_num(r, nan=np.inf) <= budget)) if r.size else float("nan")


def designs(t, spec: SweepSpec):
    """One row per design: axis values, chips ok, median/p90 perplexity ratio, yield, energy,
    latency and area (medians over its chips), and ``pareto``: on the non-dominated front of the
    spec's objectives."""
    import pandas as pd
    axes = spec.columns
    out = []
    for did, g in t.groupby("design_id", sort=False):
        ok = g[g.status == "ok"]
        r = ok["ppl_ratio"].to_numpy(float)
        row = {"design_id": did, "design_index": int(g.design_index.iloc[0]), "is_default": bool(g.is_default.iloc[0])}
        row.update({a: g[a].iloc[0] for a in axes})
        row.update(chips=len(g), chips_ok=len(ok),
                   ppl_ratio=float(np.median(r)) if r.size else math.nan,
                   ppl_ratio_p10=float(np.percentile(r, 10)) if r.size else math.nan,
                   ppl_ratio_p90=float(np.percentile(r, 90)) if r.size else math.nan,
                   yield_=chip_yield(g["ppl_ratio"].where(g.status == "ok"), spec.chips.budget))
        for c in ("perplexity", "energy_per_token_J", "latency_per_token_s", "area_per_element_um2",
                  "area_per_array_um2", "area_cell_um2", "kept_fraction"):
            v = ok[c].to_numpy(float)
            row[c] = float(np.median(v)) if v.size and np.isfinite(v).any() else math.nan
        row["status"] = "ok" if len(ok) == len(g) else ("failed" if not len(ok) else "partial")
        msgs = [m for m in g.message if m]
        row["message"] = msgs[0] if msgs else ""
        out.append(row)
    d = pd.DataFrame(out)
    if d.empty:
        return d
    d = d.rename(columns={"yield_": "yield"}).sort_values("design_index", kind="stable").reset_index(drop=True)
    d["pareto"] = pareto_mask(d[list(spec.evaluation.objectives)].to_numpy(float))
    return d


def pareto_mask(values) -> np.ndarray:
    """True where a row (all objectives minimised) is not dominated by any other row; rows with a
    non-finite objective are never on the front. Equal rows are all kept."""
    v = np.asarray(values, float)
    n = len(v)
    ok = np.isfinite(v).all(axis=1) if n else np.zeros(0, bool)
    mask = ok.copy()
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort(v[idx].T[::-1])] if idx.size else idx
    front: list[int] = []
    for i in order:  # sorted lexicographically: a dominator always comes earlier
        if any(np.all(v[j] <= v[i]) and np.any(v[j] < v[i]) for j in front):
            mask[i] = False
        else:
            front.append(i)
    return mask


def pareto_table(d, spec: SweepSpec) -> str:
    """The front as text: design index (as labelled in the plots), axis and linked-key values,
    median (p90) perplexity ratio, yield, energy, latency, area."""
    if d.empty:
        return "(no designs)"
    f = d[d.pareto].sort_values(list(spec.evaluation.objectives))
    axes = spec.columns
    head = ["design", *axes, "ppl x ideal", "p90", "yield", "nJ/token", "us/token", "um2/elem", "default"]
    lines = []
    for _, r in f.iterrows():
        lines.append([str(int(r.design_index)), *(f"{r[a]:.4g}" if isinstance(r[a], float) else str(r[a]) for a in axes),
                      f"{r.ppl_ratio:.4f}", f"{r.ppl_ratio_p90:.4f}", f"{r['yield']:.2f}",
                      f"{r.energy_per_token_J * 1e9:.4g}", f"{r.latency_per_token_s * 1e6:.4g}",
                      f"{r.area_per_element_um2:.4g}", "*" if r.is_default else ""])
    w = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: " | ".join(c.rjust(w[i]) for i, c in enumerate(cells))  # noqa: E731
    objs = ", ".join(f"{o} [{OBJECTIVES[o][0] or '-'}]" for o in spec.evaluation.objectives)
    return "\n".join([f"Pareto front ({len(f)} of {len(d)} designs; minimising {objs}; "
                      f"yield: chips within {spec.chips.budget:g}x ideal)", fmt(head),
                      "-+-".join("-" * x for x in w), *map(fmt, lines)])
