"""What a worker runs. Everything a task needs travels with it (surrogate bundle and text as
bytes, design and kernel options as plain values), and its result travels back: workers need no
shared file system. A worker keeps the last model it loaded and the files it materialised (keyed
by content) in its own temporary folder, ``<tmp>/analogattn-sweep-<pid>``: removed when the worker
exits (atexit and multiprocessing's exit hooks), and, for a worker that was killed, by the next
process that opens a scratch folder or by the sweep client when its cluster has shut down
(folders whose pid no longer runs)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import shutil
import tempfile
import time
import traceback
from pathlib import Path

_MODEL: dict = {}
_BUNDLE: dict = {}
SCRATCH_PREFIX = "analogattn-sweep-"
_SCRATCH_RE = re.compile(re.escape(SCRATCH_PREFIX) + r"(\d+)$")
_OWNED: dict[int, Path] = {}  # pid -> its scratch folder (a forked child gets its own)


def _scratch() -> Path:
    pid = os.getpid()
    d = _OWNED.get(pid)
    if d is None:
        clean_stale_scratch()
        d = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{pid}"
        _OWNED[pid] = d
        import atexit
        from multiprocessing import util
        atexit.register(_remove_own, pid)
        util.Finalize(None, _remove_own, args=(pid,), exitpriority=0)  # spawned workers' exit path
    d.mkdir(exist_ok=True)
    return d


def _remove_own(pid: int) -> None:
    d = _OWNED.get(pid)
    if d is not None and os.getpid() == pid:  # never a parent's folder from a forked child
        shutil.rmtree(d, ignore_errors=True)


def clean_stale_scratch(directory=None) -> int:
    """Remove scratch folders (``analogattn-sweep-<pid>``) in ``directory`` (default: the temporary
    folder) whose process no longer runs. Returns how many were removed."""
    from ..atomic import pid_alive
    root = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for e in entries:
        m = _SCRATCH_RE.match(e.name)
        if not m or int(m[1]) == os.getpid() or pid_alive(int(m[1])):
            continue
        try:
            if not e.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        removed += not os.path.exists(e.path)
    return removed


def _materialise(data: bytes, suffix: str) -> Path:
    p = _scratch() / (hashlib.sha256(data).hexdigest()[:24] + suffix)
    if not p.exists():
        from ..atomic import write_bytes
        write_bytes(p, data)
    return p


def model(spec: str):
    if spec not in _MODEL:
        from ..transformer.loaders import load
        _MODEL.clear()
        _MODEL[spec] = load(spec)
    return _MODEL[spec]


def bundle_from(data: bytes):
    key = hashlib.sha256(data).hexdigest()
    if key not in _BUNDLE:
        from ..surrogates import bundle
        if len(_BUNDLE) > 8:
            _BUNDLE.clear()
        _BUNDLE[key] = bundle.load(_materialise(data, ".h5"))
    return _BUNDLE[key]


def fit_remote(char_bytes: bytes, source: str, degree: int, surface: str) -> bytes:
    """A characterization file's bytes -> the surrogate bundle's bytes (analogattn fit)."""
    from ..surrogates import bundle
    from ..surrogates.fit import file_digest, fit_all
    char = _materialise(char_bytes, ".char.h5")
    models = fit_all(char, degree=degree, surface=surface)
    out = _scratch() / f"fit-{os.getpid()}-{time.monotonic_ns()}.h5"
    bundle.save(out, models, file_digest(char), source)
    try:
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def _texts(ev: dict):
    text = _materialise(ev["text_bytes"], ".txt")
    cal = _materialise(ev["cal_bytes"], ".txt") if ev.get("cal_bytes") else None
    return text, cal


def _perplexity(m, text: Path, ev: dict, kernel):
    from ..evaluate.perplexity import perplexity, stream_tokens
    return perplexity(m, stream_tokens(text, m.tokenizer), ev["window"], None, kernel, ev["max_scored"],
                      progress=False, source=f"evaluation.text {ev['text_name']}")


def ideal_remote(ev: dict) -> dict:
    """The ideal kernel's perplexity on the sweep's text (the ratio's denominator)."""
    from ..attention.base import IdealAttention, single_lane
    m = model(ev["model"])
    text, _ = _texts(ev)
    with single_lane():  # as every point (see evaluate_chip)
        r = _perplexity(m, text, ev, IdealAttention())
    return {"perplexity": r.perplexity, "scored": r.scored}


def evaluate_chip(ev: dict, design_map: dict, leaves: dict, bundle_bytes: bytes | None, ideal: float) -> dict:
    """Calibrate and evaluate one chip: perplexity, its ratio to ideal, energy and latency per
    token (the kernel's cost model, from the bundle), area (:mod:`analogattn.evaluate.area`).
    A failure is a row with status "failed" and a one-line message, never an exception."""
    t0 = time.perf_counter()
    try:
        from ..attention.base import single_lane
        with single_lane():  # one core a point: its numbers do not depend on where it ran
            from .. import cli
            from ..attention import registry
            from ..characterize.design import Design
            from ..evaluate.area import area_for
            from ..evaluate.cost import cost_for
            spec = registry.get(ev["attention"])
            cfg = spec.config(**leaves)
            m = model(ev["model"])
            b = bundle_from(bundle_bytes) if bundle_bytes is not None else None
            text, cal = _texts(ev)
            files = cli.CalibrationFiles(calibration_text=str(cal) if cal else None)
            with contextlib.redirect_stderr(io.StringIO()):  # its notes about short texts: not per chip
                wins = cli._calibration_windows(spec, cfg, files, m, text, ev["window"])
            kernel = spec.build(m, b, cfg, wins, None, log=lambda *_: None)
            r = _perplexity(m, text, ev, kernel)
            cost = cost_for(spec.name, m.config, ev["window"], b, getattr(kernel, "stats", None), kernel)
            area = area_for(spec.name, Design.from_mapping(design_map), cfg, m.config.head_dim)
            row = {"status": "ok", "message": "", "perplexity": r.perplexity, "ppl_ratio": r.perplexity / ideal,
                   "scored_tokens": r.scored, "energy_per_token_J": cost["energy_per_token_J"],
                   "latency_per_token_s": cost["latency_per_token_s"], **area,
                   "weight_products": m.weight_products}  # which BLAS (float32 rounding differs)
            sm = spec.summary(kernel)
            if sm and "kept_fraction" in sm:
                row["kept_fraction"] = float(sm["kept_fraction"])
            if not math.isfinite(r.perplexity):
                row.update(status="failed", message=f"non-finite perplexity ({r.perplexity})")
    except Exception as e:  # recorded, the sweep goes on
        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
        row = {"status": "failed", "message": " ".join(f"{type(e).__name__}: {e}{where}".split())[:500]}
    row["wall_s"] = time.perf_counter() - t0
    row["worker_pid"] = os.getpid()
    return row
