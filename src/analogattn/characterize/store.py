"""HDF5 store of characterizations. Every analysis is a group ``/<family>/<analysis>`` whose
datasets carry ``units`` and ``description`` attributes, and whose attributes carry the
provenance: netlist text, parameters as JSON, ngspice and package versions, UTC timestamp,
wall time, measurement method.

Writes go to a temporary file in the same folder that replaces the old file in one step;
groups of the old file that this run does not regenerate are copied over unchanged. An existing
file that is not a characterization (another HDF5 file, a text file) is never overwritten.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import replacing
from ..errors import AnalogAttnError

SCHEMA = "analogattn-characterization/1"


def is_characterization(path) -> bool:
    """True if ``path`` is an analogattn characterization (HDF5 with our schema attribute) or an
    empty file (nothing to lose: e.g. made by mktemp); False for anything else."""
    from ..userio import is_hdf5_with_schema
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return True
    except OSError:
        return False
    return is_hdf5_with_schema(SCHEMA)(path)


def write(out: Path, groups, ngspice_version: str) -> None:
    out = Path(out)
    if out.exists() and not is_characterization(out):
        raise AnalogAttnError(f"existing output {out} is not an analogattn characterization (or is corrupted); "
                              "move it away or choose another -o")
    with replacing(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["package_version"] = __version__
            new = {f"{a.family}/{a.name}" for a, _, _ in groups}
            if out.exists() and out.stat().st_size > 0:
                try:
                    with h5py.File(out, "r") as old:
                        for fam in old:
                            for name in old[fam]:
                                path = f"{fam}/{name}"
                                if path not in new:
                                    f.require_group(fam)
                                    old.copy(old[path], f[fam], name=name)
                except OSError as e:
                    raise AnalogAttnError(f"existing output {out} is not a readable HDF5 file ({e}); "
                                          "move it away or choose another -o") from None
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            for a, datasets, wall in groups:
                g = f.require_group(a.family).create_group(a.name)
                g.attrs["netlist"] = "\n".join(dict.fromkeys(t.netlist for t in a.tasks))
                g.attrs["parameters"] = a.params_json
                g.attrs["ngspice_version"] = str(ngspice_version)
                g.attrs["package_version"] = __version__
                g.attrs["created_utc"] = now
                g.attrs["wall_time_s"] = wall
                g.attrs["method"] = a.method
                g.attrs["cell_name"] = _cell_name(a)
                for k, v in a.attrs.items():
                    g.attrs[k] = v
                for name, ds in datasets.items():
                    d = g.create_dataset(name, data=np.asarray(ds.data))
                    d.attrs["units"] = ds.units
                    d.attrs["description"] = ds.description


def _cell_name(a) -> str:
    first = a.tasks[0].netlist.splitlines()[0] if a.tasks else ""
    return first.lstrip("* ").split(" ")[0]


def read_group(path, group: str) -> tuple[dict, dict, dict]:
    """(arrays, units, attrs) of one stored analysis."""
    with h5py.File(path, "r") as f:
        if group not in f:
            raise AnalogAttnError(f"{path} has no group {group}")
        g = f[group]
        arrays = {k: g[k][()] for k in g}
        units = {k: g[k].attrs.get("units", "") for k in g}
        attrs = dict(g.attrs)
    return arrays, units, attrs


def parameters(path, group: str) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f[group].attrs["parameters"])
