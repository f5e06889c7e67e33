"""Calibration files: a kernel's calibrated arrays in one .npz with a JSON header that says what
they were calibrated for (kind, model, surrogate bundle digest, kernel configuration). Written
atomically; a file calibrated for something else is refused, never silently reused; a file that
is not one of ours is never overwritten."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..errors import AnalogAttnError

FLAG = "--calibration-file"


def _read_meta(f) -> dict | None:
    """The JSON header of an open .npz, or None when it has none (not one of ours)."""
    if "__meta__" not in f.files:
        return None
    raw = f["__meta__"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        return None
    meta = json.loads(bytes(raw).decode("utf-8"))
    return meta if isinstance(meta, dict) and isinstance(meta.get("kind"), str) else None


def is_calibration_file(path) -> bool:
    """True when ``path`` is a readable calibration file written by analogattn (any kind)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return _read_meta(f) is not None
    except Exception:  # anything unreadable is not ours: never overwritten
        return False


def save(path, kind: str, arrays: dict, meta: dict) -> None:
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise AnalogAttnError(f"{FLAG} {p} is a link to nothing: refusing to replace it (pass another path)")
    if p.exists():
        if not p.is_file():
            raise AnalogAttnError(f"{FLAG} {p} exists and is not a file: pass a file path")
        if not is_calibration_file(p):
            raise AnalogAttnError(f"{FLAG} {p} exists and is not an analogattn calibration file: refusing to "
                                  "overwrite it (pass another path)")
    buf = io.BytesIO()
    header = json.dumps({"kind": kind, **meta}, sort_keys=True).encode()
    np.savez(buf, __meta__=np.frombuffer(header, np.uint8), **{k: v for k, v in arrays.items() if v is not None})
    try:
        write_bytes(p, buf.getvalue())
    except OSError as e:
        raise AnalogAttnError(f"{FLAG} {p}: cannot write it ({e.strerror or e})") from None


def _check_shapes(path, arrays: dict, shapes: dict) -> None:
    """``shapes``: {name: (symbol, ...)}; symbols must agree across arrays (one line on error)."""
    dims: dict = {}
    for name, shape in shapes.items():
        a = arrays.get(name)
        if a is None:
            continue
        if a.ndim != len(shape):
            raise AnalogAttnError(f"{FLAG} {path}: {name} has shape {a.shape}, expected {len(shape)} dimensions "
                                  "(a damaged calibration file: delete it to recalibrate)")
        for sym, n in zip(shape, a.shape):
            if dims.setdefault(sym, (n, name))[0] != n:
                raise AnalogAttnError(f"{FLAG} {path}: {name} has shape {a.shape}, which does not match "
                                      f"{dims[sym][1]} (a damaged calibration file: delete it to recalibrate)")


def load(path, kind: str, required, optional=(), expect: dict | None = None, shapes: dict | None = None):
    """(arrays, meta). ``expect``: header entries that must match (else a one-line error);
    ``shapes``: symbolic shapes the arrays must agree on."""
    p = Path(path)
    if not p.exists():
        raise AnalogAttnError(f"{FLAG} {p}: no such calibration file")
    if not p.is_file():
        raise AnalogAttnError(f"{FLAG} {p} is not a file: pass a calibration file (.npz)")
    try:
        with np.load(p, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise AnalogAttnError(f"{FLAG} {p}: not a readable calibration file (a bare NumPy array, not "
                                      "an analogattn calibration .npz)")
            meta = _read_meta(f)
            if meta is None:
                raise AnalogAttnError(f"{FLAG} {p}: not a readable calibration file (no analogattn header)")
            if meta.get("kind") != kind:
                raise AnalogAttnError(f"{FLAG} {p} is a {meta.get('kind')!r} calibration, not {kind!r}")
            missing = [k for k in required if k not in f.files]
            if missing:
                raise AnalogAttnError(f"{FLAG} {p}: calibration lacks {', '.join(missing)} "
                                      "(delete it to recalibrate)")
            arrays = {**{k: f[k] for k in required}, **{k: (f[k] if k in f.files else None) for k in optional}}
    except AnalogAttnError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile,
            zipfile.LargeZipFile, NotImplementedError, RuntimeError) as e:
        # np.load on an empty, truncated, pickled or foreign file; bad JSON is a ValueError
        raise AnalogAttnError(f"{FLAG} {p}: not a readable calibration file ({type(e).__name__}; an empty, "
                              "truncated or foreign file)") from None
    for k, v in arrays.items():
        if v is None:
            continue
        if v.dtype.kind not in "fiub" or (v.dtype.kind == "f" and np.isnan(v).any()):
            raise AnalogAttnError(f"{FLAG} {p}: {k} is not numeric or holds NaN "
                                  "(a damaged calibration file: delete it to recalibrate)")
    _check_shapes(p, arrays, shapes or {})
    for k, v in (expect or {}).items():
        have = meta.get(k)
        if have != v:
            if k == "config":  # name the differing fields, not two whole JSON texts
                try:
                    a, b = json.loads(have or "{}"), json.loads(v)
                except (TypeError, ValueError):
                    a, b = {}, {"config": v}
                if not isinstance(a, dict):
                    a = {}
                diff = ", ".join(f"{f} = {a.get(f)!r} (asked: {b.get(f)!r})" for f in sorted(set(a) | set(b))
                                 if a.get(f) != b.get(f))
                raise AnalogAttnError(f"{FLAG} {p} was calibrated for another configuration: {diff} "
                                      f"(delete it or pass another {FLAG})")
            raise AnalogAttnError(f"{FLAG} {p} was calibrated for {k} = {_short(have)}, not {_short(v)} "
                                  f"(delete it or pass another {FLAG})")
    return arrays, meta


def _short(v, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."
