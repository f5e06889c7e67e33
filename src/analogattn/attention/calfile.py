"""Calibration files: a kernel's calibrated arrays in one .npz with a JSON header that says what
they were calibrated for (kind, model, surrogate bundle digest, kernel configuration). Written
atomically; a file calibrated for something else is refused, never silently reused."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from ..atomic import write_bytes
from ..errors import AnalogAttnError


def save(path, kind: str, arrays: dict, meta: dict) -> None:
    buf = io.BytesIO()
    header = json.dumps({"kind": kind, **meta}, sort_keys=True).encode()
    np.savez(buf, __meta__=np.frombuffer(header, np.uint8), **{k: v for k, v in arrays.items() if v is not None})
    write_bytes(path, buf.getvalue())


def load(path, kind: str, required, optional=(), expect: dict | None = None):
    """(arrays, meta). ``expect``: header entries that must match (else a one-line error)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["__meta__"]).decode())
            if meta.get("kind") != kind:
                raise AnalogAttnError(f"{path} is a {meta.get('kind')!r} calibration, not {kind!r}")
            missing = [k for k in required if k not in f.files]
            if missing:
                raise AnalogAttnError(f"{path}: calibration lacks {', '.join(missing)}")
            arrays = {**{k: f[k] for k in required}, **{k: (f[k] if k in f.files else None) for k in optional}}
    except FileNotFoundError:
        raise AnalogAttnError(f"{path}: no such calibration file") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnalogAttnError(f"{path}: not a readable calibration file ({type(e).__name__})") from None
    for k, v in (expect or {}).items():
        have = meta.get(k)
        if have != v:
            if k == "config":  # name the differing fields, not two whole JSON texts
                a, b = json.loads(have or "{}"), json.loads(v)
                diff = ", ".join(f"{f} = {a.get(f)!r} (asked: {b.get(f)!r})" for f in sorted(set(a) | set(b))
                                 if a.get(f) != b.get(f))
                raise AnalogAttnError(f"{path} was calibrated for another configuration: {diff} "
                                      f"(delete it or pass another --calibration-file)")
            raise AnalogAttnError(f"{path} was calibrated for {k} = {have!r}, not {v!r} "
                                  f"(delete it or pass another --calibration-file)")
    return arrays, meta
