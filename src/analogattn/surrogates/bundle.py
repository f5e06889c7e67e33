"""The surrogate bundle: one HDF5 file.

Layout: root attributes ``schema`` = "analogattn-surrogates", ``schema_version``,
``source_digest`` (sha256 of the characterization file), ``source_file``, ``package_version``;
one group per model (``/gaincell.read_surface`` ...) whose attributes hold ``kind``, ``domain``,
``units``, ``scores``, ``meta`` (JSON) and ``out_of_domain`` = "clip", and whose datasets hold
coefficients or tables. Loading needs NumPy and h5py only.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import open_hdf5, replacing
from ..errors import AnalogAttnError
from .models import KINDS

SCHEMA = "analogattn-surrogates"
SCHEMA_VERSION = 1


class BundleError(AnalogAttnError):
    pass


def save(path, models: dict, source_digest: str, source_file: str = "") -> None:
    with replacing(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "source_digest": source_digest,
                            "source_file": source_file, "package_version": __version__})
            for name, m in models.items():
                g = f.create_group(name)
                for k, v in m.attrs().items():
                    g.attrs[k] = v
                for k, v in m.arrays().items():
                    g.create_dataset(k, data=np.asarray(v))


class Bundle(dict):
    """name -> model, plus the file's attributes in ``.info``."""

    info: dict

    def need(self, name: str):
        if name not in self:
            raise BundleError(f"the surrogate bundle has no model {name!r} (has: {', '.join(sorted(self))})")
        return self[name]


def load(path) -> Bundle:
    path = Path(path)
    f = open_hdf5(path, "surrogate bundle", "run: analogattn fit", BundleError)
    out = Bundle()
    try:
        with f:
            if f.attrs.get("schema") != SCHEMA:
                raise BundleError(f"{path} is not a surrogate bundle (schema {f.attrs.get('schema')!r})")
            ver = int(f.attrs.get("schema_version", -1))
            if ver != SCHEMA_VERSION:
                raise BundleError(f"{path} has schema version {ver}; this analogattn reads version {SCHEMA_VERSION}")
            out.info = dict(f.attrs)
            for name, g in f.items():
                kind = g.attrs.get("kind")
                if kind not in KINDS:
                    raise BundleError(f"{path}: model {name!r} has unknown kind {kind!r}")
                arrays = {k: g[k][()] for k in g}
                try:
                    m = KINDS[kind].from_stored(dict(g.attrs), arrays)
                    m.arrays()  # every field the kind needs is there
                except (KeyError, ValueError, AttributeError) as e:
                    raise BundleError(f"{path}: model {name!r} of kind {kind} is damaged or incomplete "
                                      f"({type(e).__name__}: {e})") from None
                out[name] = m
    except BundleError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise BundleError(f"surrogate bundle {path} is corrupted ({str(e).splitlines()[0]})") from None
    return out
