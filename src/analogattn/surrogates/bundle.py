"""The surrogate bundle: one HDF5 file.

Layout: root attributes ``schema`` = "analogattn-surrogates", ``schema_version``,
``source_digest`` (sha256 of the characterization file), ``source_file``, ``package_version``;
one group per model (``/gaincell.read_surface`` ...) whose attributes hold ``kind``, ``domain``,
``units``, ``scores``, ``meta`` (JSON) and ``out_of_domain`` = "clip", and whose datasets hold
coefficients or tables. Loading needs NumPy and h5py only.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import open_hdf5, replacing
from ..errors import AnalogAttnError
from .models import EXPECTED_KINDS, KINDS, Damaged

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
    path: Path | None = None

    def need(self, name: str):
        if name not in self:
            where = f"surrogate bundle {self.path}" if self.path is not None else "the surrogate bundle"
            raise BundleError(f"{where} has no model {name!r} (has: {', '.join(sorted(self)) or 'none'}; "
                              "re-run analogattn fit on a characterization with that family)")
        return self[name]


def load(path) -> Bundle:
    path = Path(path)
    f = open_hdf5(path, "surrogate bundle", "run: analogattn fit", BundleError)
    out = Bundle()
    out.path = path
    try:
        with f:
            if f.attrs.get("schema") != SCHEMA:
                raise BundleError(f"{path} is not a surrogate bundle (schema {f.attrs.get('schema')!r})")
            ver = int(f.attrs.get("schema_version", -1))
            if ver != SCHEMA_VERSION:
                raise BundleError(f"{path} has schema version {ver}; this analogattn reads version {SCHEMA_VERSION}")
            out.info = dict(f.attrs)
            for name, g in f.items():
                if not isinstance(g, h5py.Group):
                    raise BundleError(f"{path}: {name!r} is a dataset, not a model group (damaged or incomplete; "
                                      "re-run analogattn fit)")
                kind = g.attrs.get("kind")
                if not isinstance(kind, str) or kind not in KINDS:
                    raise BundleError(f"{path}: model {name!r} has unknown kind {kind!r}")
                if name in EXPECTED_KINDS and kind not in EXPECTED_KINDS[name]:
                    raise BundleError(f"{path}: model {name!r} has kind {kind!r}, expected "
                                      f"{' or '.join(EXPECTED_KINDS[name])} (wrong kind; re-run analogattn fit)")
                arrays = {}
                for k, d in g.items():
                    if not isinstance(d, h5py.Dataset):
                        raise BundleError(f"{path}: model {name!r} has a group {k!r} where a dataset should be "
                                          "(damaged or incomplete; re-run analogattn fit)")
                    arrays[k] = d[()]
                attrs = dict(g.attrs)
                for k in ("domain", "units", "scores", "meta"):
                    try:
                        json.loads(attrs[k])
                    except (KeyError, TypeError, ValueError):
                        raise BundleError(f"surrogate bundle {path} is damaged or incomplete: model {name!r} "
                                          f"({kind}) attribute {k} is {'missing' if k not in attrs else 'not JSON'} "
                                          "(re-run analogattn fit)") from None
                try:
                    m = KINDS[kind].from_stored(attrs, arrays)
                    m.check()  # every dataset the kind needs, numeric, finite, of matching shapes
                except Damaged as e:
                    raise BundleError(f"surrogate bundle {path} is damaged or incomplete: model {name!r} ({kind}) "
                                      f"{e.item}: {e.why} (re-run analogattn fit)") from None
                except (KeyError, ValueError, TypeError, AttributeError) as e:
                    raise BundleError(f"surrogate bundle {path} is damaged or incomplete: model {name!r} ({kind}) "
                                      f"attribute {str(e).splitlines()[0] if str(e) else type(e).__name__} "
                                      "is missing or not valid JSON (re-run analogattn fit)") from None
                out[name] = m
    except BundleError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise BundleError(f"surrogate bundle {path} is truncated or corrupted "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return out
