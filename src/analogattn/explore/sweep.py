"""The sweep driver: designs -> circuit variants (corner, temperature) -> characterization (ngspice
tasks on the backend's executor, results back here, the task cache shared by every point) -> fit
(a worker) -> chips: calibrate and evaluate (workers) -> one row each, written the moment it
arrives. This process owns every file; a killed sweep re-run with the same command skips what is
stored (rows, bundles, the ideal perplexity, the study's finished trials)."""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..atomic import exclusive_lock, write_bytes
from ..params import digest
from . import point as P
from .results import ResultsDir, pareto_table
from .spec import SweepSpec


class PointFailure(Exception):
    pass


@dataclasses.dataclass
class Report:
    table: object
    designs: object
    pareto: str
    files: list
    counts: dict
    wall_s: float

    def line(self) -> str:
        c = self.counts
        return (f"designs {c['designs']}; rows {c['rows']} (evaluated {c['evaluated']}, reused {c['reused']}, "
                f"failed {c['failed']}); circuit variants characterized {c['characterized']}, reused "
                f"{c['bundles_reused']}; wall time {self.wall_s:.1f} s")


def _jkey(obj) -> str:
    return digest(json.dumps(obj, sort_keys=True, default=str))


def bundle_digest(data: bytes) -> str:
    """Digest of a bundle's models (every group's attributes and arrays), not of its file: the
    file's root attributes name the characterization's digest, which holds creation times."""
    import hashlib
    import io

    import h5py
    h = hashlib.sha256()
    with h5py.File(io.BytesIO(data), "r") as f:
        for name in sorted(f):
            g = f[name]
            h.update(name.encode())
            for k in sorted(g.attrs):
                h.update(f"{k}={g.attrs[k]!r}".encode())
            for k in sorted(g):
                a = np.asarray(g[k][()])
                h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


class Driver:
    def __init__(self, spec: SweepSpec, out: Path, backend, cache_dir: Path, progress: bool = True, log=print):
        self.spec, self.backend, self.cache_dir, self.log = spec, backend, cache_dir, log
        self.res = ResultsDir(out, spec)
        self.lock = threading.Lock()
        self.variants: dict[str, cf.Future] = {}
        self.counts = collections.Counter(designs=0, rows=0, evaluated=0, reused=0, failed=0, characterized=0,
                                          bundles_reused=0)
        self.progress = progress
        self.bar = None
        self.ev = self._payload()

    # -- what every worker task gets ------------------------------------------------------------------
    def _payload(self) -> dict:
        from ..evaluate.texts import default_text_path, read_text
        e = self.spec.evaluation
        path = Path(e.text) if e.text else default_text_path()
        text, _ = read_text(path, e.max_chars, "evaluation.text")
        cal = read_text(e.calibration_text, 40000, "evaluation.calibration_text")[0] if e.calibration_text else None
        return {"model": e.model, "attention": e.attention, "window": e.window, "max_scored": e.max_scored,
                "text_name": path.name, "text_bytes": text.encode(), "cal_bytes": cal.encode() if cal else None}

    def ideal(self) -> float:
        key = _jkey({k: (digest(v) if isinstance(v, bytes) else v) for k, v in self.ev.items() if k != "attention"})
        got = self.res.get_json("ideal.json")
        if got and got.get("key") == key:
            return got["perplexity"]
        r = self.backend.eval.submit(P.ideal_remote, self.ev).result()
        self.res.put_json("ideal.json", {"key": key, **r})
        return r["perplexity"]

    # -- circuit variants: characterize + fit, once per distinct design table ---------------------------
    def bundle(self, design_map: dict) -> tuple[bytes | None, str]:
        if not self.spec.families:
            return None, ""
        vkey = _jkey(design_map)
        with self.lock:
            fut = self.variants.get(vkey)
            mine = fut is None
            if mine:
                fut = self.variants[vkey] = cf.Future()
        if not mine:
            return fut.result()
        try:
            r = self._make_bundle(vkey, design_map)
            fut.set_result(r)
            return r
        except BaseException as e:
            fut.set_exception(e)
            raise

    def _make_bundle(self, vkey, design_map):
        from ..characterize.design import Design
        from ..characterize.runner import characterize
        bpath = self.res.root / "bundles" / f"{vkey}.h5"
        if bpath.exists():
            data = bpath.read_bytes()
            with self.lock:
                self.counts["bundles_reused"] += 1
            return data, bundle_digest(data)
        design = Design.from_mapping(json.loads(json.dumps(design_map)))
        analyses = design.analyses({f: None for f in self.spec.families})
        char = self.res.root / "chars" / f"{vkey}.h5"
        s = characterize(analyses, char, jobs=self.backend.workers, cache_dir=self.cache_dir, progress=False,
                         executor=self.backend.char)
        if s.errors:
            raise PointFailure(f"characterization: {len(s.errors)} task(s) failed, first: {s.errors[0]}")
        e = self.spec.evaluation
        try:
            data = self.backend.eval.submit(P.fit_remote, char.read_bytes(), char.name, e.degree, e.surface).result()
        except Exception as ex:
            raise PointFailure(f"fit failed: {type(ex).__name__}: {ex}") from None
        write_bytes(bpath, data)
        with self.lock:
            self.counts["characterized"] += 1
        return data, bundle_digest(data)

    # -- one design: every chip of every variant ----------------------------------------------------
    def run_design(self, index: int, values: dict, is_default: bool, ideal: float) -> list[dict]:
        spec = self.spec
        did = _jkey(values)
        rows, futs = [], {}
        for corner, temp in spec.variants():
            dmap = spec.design_mapping(values, corner, temp)
            todo = []
            for chip in range(spec.chips.n):
                seed = spec.chips.seed + chip
                pid = _jkey([did, corner, temp, chip])
                base = {"point_id": pid, "design_id": did, "design_index": index, "is_default": is_default,
                        "chip": chip, "corner": corner, "temperature": temp, "seed": seed, "axes": values}
                old = self.res.get_row(pid)
                if old is not None:
                    old.update(design_index=index, is_default=is_default)
                    rows.append(old)
                    self._tick("reused", old)
                    continue
                todo.append((base, spec.kernel_leaves(values, temp, seed)))
            if not todo:
                continue
            try:
                bundle_bytes, bdig = self.bundle(dmap)
            except Exception as e:
                msg = " ".join(str(e).split())[:500] if isinstance(e, PointFailure) else \
                    " ".join(f"{type(e).__name__}: {e}".split())[:500]
                for base, _ in todo:
                    self._finish({**base, "status": "failed", "message": msg, "bundle_digest": ""}, rows)
                continue
            for base, leaves in todo:
                f = self.backend.eval.submit(P.evaluate_chip, self.ev, dmap, leaves, bundle_bytes, ideal)
                futs[f] = {**base, "bundle_digest": bdig}
        for f in cf.as_completed(futs):
            base = futs[f]
            try:
                r = f.result()
            except Exception as e:  # the worker died (Dask gives up after its retries) or the task failed
                r = {"status": "failed", "message": " ".join(f"worker died: {type(e).__name__}: {e}".split())[:500]}
            self._finish({**base, **r}, rows)
        with self.lock:
            self.counts["designs"] += 1
        return rows

    def _finish(self, row, rows):
        self.res.put_row(row)
        rows.append(row)
        self._tick("evaluated", row)

    def _tick(self, what, row):
        with self.lock:
            self.counts[what] += 1
            self.counts["rows"] += 1
            self.counts["failed"] += row.get("status") != "ok"
            if self.bar is not None:
                self.bar.update()

    # -- strategies ---------------------------------------------------------------------------------
    def objectives(self, rows: list[dict]):
        ok = [r for r in rows if r.get("status") == "ok"]
        if not ok:
            return None
        out = []
        for o in self.spec.evaluation.objectives:
            if o == "ppl_ratio_p90":
                out.append(float(np.percentile([r["ppl_ratio"] for r in ok], 90)))
            else:
                out.append(float(np.median([r.get(o, np.nan) for r in ok])))
        return out

    def run(self) -> Report:
        from .strategies import Search, fixed_points
        t0 = time.perf_counter()
        spec = self.spec
        per_design = spec.chips.n * len(spec.variants())
        inflight = max(2, 2 * self.backend.workers)
        if self.progress:
            from tqdm import tqdm
            n_designs = (len(fixed_points(spec)) if spec.sweep.strategy in ("grid", "random", "lhs")
                         else spec.sweep.points + spec.sweep.include_default)
            self.bar = tqdm(total=n_designs * per_design, desc="sweep", unit="point", file=sys.stderr,
                            disable=None, dynamic_ncols=True)
        ideal = self.ideal()
        pool = cf.ThreadPoolExecutor(inflight, thread_name_prefix="sweep-design")
        try:
            if spec.sweep.strategy in ("grid", "random", "lhs"):
                pts = fixed_points(spec)
                dflt = spec.default_values() if spec.sweep.include_default else None
                futs = [pool.submit(self.run_design, i, p, p == dflt, ideal) for i, p in enumerate(pts)]
                for f in cf.as_completed(futs):
                    f.result()
                    self._snapshot()
            else:
                self._search(Search(spec, self.res.root / "study.db"), pool, inflight, ideal)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if self.bar is not None:
                self.bar.close()
        t, d = self.res.write_tables()
        text = pareto_table(d, spec)
        write_bytes(self.res.root / "pareto.txt", (text + "\n").encode())
        from .plots import write
        files = [self.res.root / "results.parquet", self.res.root / "designs.parquet", self.res.root / "pareto.txt"]
        files += write(d, spec, self.res.root)
        return Report(t, d, text, files, dict(self.counts), time.perf_counter() - t0)

    def _snapshot(self):
        try:
            self.res.write_tables()
        except Exception:  # a partial table is a convenience; the rows are the record
            pass

    def _search(self, search, pool, inflight, ideal):
        offset = int(self.spec.sweep.include_default)
        if offset:
            self.run_design(0, self.spec.default_values(), True, ideal)
        running = {}
        for number, vals in search.pending():  # asked before a kill, never told
            running[pool.submit(self.run_design, number + offset, vals, False, ideal)] = number
        while True:
            while len(running) < inflight and search.finished() + len(running) < self.spec.sweep.points:
                number, vals = search.ask()
                running[pool.submit(self.run_design, number + offset, vals, False, ideal)] = number
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for f in done:
                number = running.pop(f)
                search.tell(number, self.objectives(f.result()))
            self._snapshot()


def run(spec: SweepSpec, out, backend, cache_dir, progress: bool = True, log=print) -> Report:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    P.clean_stale_scratch()  # scratch folders of workers that were killed earlier, on this machine
    with exclusive_lock(out / "sweep", "sweep results folder"):
        return Driver(spec, out, backend, Path(cache_dir), progress, log).run()
