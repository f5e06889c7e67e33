"""Technology layer: how a process instantiates devices, and which process a design uses.

Two objects:

- :class:`Process` knows a process: how a transistor is instantiated (an ``M`` card naming a
  ``.model``, or a subcircuit ``X... <name> W=.. L=..`` as foundry PDKs such as SKY130 ship
  them), the device name per role (core NMOS/PMOS, low-Vt, high-Vt, thick-oxide I/O), the
  lines that bring its models in (``.include`` files, or ``.lib file corner``), its corners,
  supply range, and how its Monte Carlo mismatch is drawn (a :class:`Mismatch` hook).
- :class:`Technology` is the design-file table (``[gaincell.technology]`` ...): it selects a
  process (the built-in generic 65-nm card, a user model-card file, or a registered process by
  name) and a corner. ``Technology.process`` is the :class:`Process` the netlists use.

Circuits describe their transistors as :class:`Mosfet` objects (terminals, role, W and L in um,
an optional threshold shift) and render them with ``process.mos(m)``: no family writes ``M``
lines or model names itself.

A foundry PDK of SKY130's shape needs no Python: a small TOML process table
(:mod:`~analogattn.circuits.process_table`, selected with ``process = "myfab.toml"``). The
advanced route is one :func:`register_process` call with a :class:`Process` (or a factory
returning one, to locate its files lazily), then ``process = "<name>"`` in the design's
technology table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Callable

from .. import netlists
from ..errors import DesignFileError, ParameterError
from ..params import Validated, param

# Corner shifts of the threshold voltage for the built-in card (V; + = slower). Ours, not PTM's:
# a +-30 mV global shift is a common stand-in for fast/slow corners of a 65-nm process.
BUILTIN_CORNERS = {
    "tt": (0.0, 0.0),
    "ff": (-0.03, -0.03),
    "ss": (0.03, 0.03),
    "fs": (-0.03, 0.03),
    "sf": (0.03, -0.03),
}


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")  # a SPICE model or section name (one token)
_MODEL = re.compile(r"^\s*\.model\s+([^\s(]+)", re.I | re.M)
_SUBCKT = re.compile(r"^\s*\.subckt\s+([^\s(]+)", re.I | re.M)
_SECTION = re.compile(r"^\s*\.lib\s+([^\s'\"]+)\s*$", re.I | re.M)  # .lib <section> (a section head)
_REF = re.compile(r"^\s*\.(?:include|inc|lib)\s+['\"]?([^'\"\s]+)['\"]?", re.I | re.M)
MAX_MODEL_BYTES = 256 << 20


def _read_model_text(p: Path, what: str) -> str:
    """Text of a SPICE model file, or a one-line DesignFileError naming it."""
    try:
        if p.stat().st_size > MAX_MODEL_BYTES:
            raise DesignFileError(f"{what} {p} is larger than {MAX_MODEL_BYTES >> 20} MB: not a SPICE model file")
        data = p.read_bytes()
    except OSError as e:
        raise DesignFileError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if b"\0" in data:
        raise DesignFileError(f"{what} {p} is not a text SPICE model file (binary data)")
    return data.decode("utf-8", errors="replace")


def model_names(path: Path, depth: int = 0, seen=None, subckts: bool = False) -> set[str]:
    """Lower-case names of the ``.model`` cards (and with ``subckts`` the ``.subckt`` names) in a
    SPICE file and the files it includes (``.include``/``.lib 'file'``, relative to the including
    file; sections are not told apart)."""
    seen = set() if seen is None else seen
    path = Path(path)
    key = str(path.resolve())
    if key in seen or depth > 8:
        return set()
    seen.add(key)
    text = _read_model_text(path, "model file" if depth == 0 else "file included by a model file,")
    names = {m.lower() for m in _MODEL.findall(text)}
    if subckts:
        names |= {m.lower() for m in _SUBCKT.findall(text)}
    for ref in _REF.findall(text):
        q = Path(ref) if Path(ref).is_absolute() else path.parent / ref
        if q.is_file():  # a section head (.lib tt) names no file; a missing include is ngspice's to report
            names |= model_names(q, depth + 1, seen, subckts)
    return names


def _has_model(names: set[str], want: str) -> bool:
    """``want`` or binned ``want.1``, ``want.2`` ... (case-insensitive, as ngspice)."""
    w = want.lower()
    return any(n == w or (n.startswith(w + ".") and n[len(w) + 1:].isdigit()) for n in names)


# -- devices ----------------------------------------------------------------------------------
ROLES = {
    "nmos": "core NMOS", "pmos": "core PMOS",
    "nmos_lvt": "low-Vt NMOS", "pmos_lvt": "low-Vt PMOS",
    "nmos_hvt": "high-Vt NMOS", "pmos_hvt": "high-Vt PMOS",
    "nmos_io": "thick-oxide (I/O) NMOS", "pmos_io": "thick-oxide (I/O) PMOS",
}
MODEL_CARD, SUBCIRCUIT = "model", "subckt"  # how a process instantiates a transistor


@dataclasses.dataclass(frozen=True)
class Mosfet:
    """One transistor as a circuit describes it, independent of the process: instance name (as
    the circuit names it, e.g. ``mp0``), drain, gate, source, bulk, device role (a key of
    :data:`ROLES`), W and L in um, and an optional Monte Carlo threshold shift ``dvt`` (V)."""

    name: str
    d: str
    g: str
    s: str
    b: str
    role: str
    w: float
    l: float
    dvt: float | None = None


class Mismatch:
    """How a process's Monte Carlo mismatch reaches a netlist.

    ``explicit_shifts`` True: the pipeline draws a threshold shift per device (Pelgrom) and the
    hook writes it (``instance_params`` on the instance line, ``alter`` commands to change it
    between runs). False: the process's models draw their own mismatch (a PDK's statistical
    models), switched on by ``header`` lines; the seed is the simulator's."""

    name = "none"
    explicit_shifts = False

    def header(self, seed: int | None = None) -> str:
        """Netlist lines that switch the mismatch models on (``seed`` given: a Monte Carlo
        netlist drawn with that seed) or off (None), before the model includes."""
        return ""

    def instance_params(self, dvt: float) -> str:
        raise NotImplementedError(f"mismatch {self.name!r} takes no per-device threshold shift")

    def alter(self, instance: str, dvt: float) -> list[str]:
        raise NotImplementedError(f"mismatch {self.name!r} takes no per-device threshold shift")


class PelgromDelvto(Mismatch):
    """Built-in: Pelgrom threshold shifts drawn by the pipeline (sigma = A_VT / sqrt(W L)),
    written as BSIM4's ``delvto`` instance parameter and changed with ``alter``."""

    name = "pelgrom-delvto"
    explicit_shifts = True

    def instance_params(self, dvt: float) -> str:
        return f" delvto={dvt:.6g}"

    def alter(self, instance: str, dvt: float) -> list[str]:
        return [f"alter {instance} delvto={dvt:.10g}"]


@dataclasses.dataclass(frozen=True)
class PdkMismatchSwitch(Mismatch):
    """A PDK whose models draw their own mismatch when a ``.param`` switch is set (SKY130:
    ``mc_mm_switch=1``). Per-device shifts are not available through it: analyses that need
    them (the comparator's guided offset search) must be adapted by the process's work."""

    switch: str = "mc_mm_switch"
    on: str = "1"
    off: str = "0"
    name: str = "pdk-switch"
    explicit_shifts = False

    def header(self, seed: int | None = None) -> str:
        if seed is None:
            return f".param {self.switch}={self.off}\n"
        return f".param {self.switch}={self.on}\n.option seed={int(seed)}\n"


@dataclasses.dataclass(frozen=True)
class Process:
    """How a process instantiates devices and brings its models in.

    instantiation: :data:`MODEL_CARD` (``m<name> d g s b <model> W=<m> L=<m>``, sizes in metres)
    or :data:`SUBCIRCUIT` (``x<name> d g s b <subckt> W=<w> L=<l>``, sizes times
    ``size_unit`` um: 1.0 for PDKs whose subcircuits take microns, as SKY130's).
    devices: role -> model or subcircuit name. includes: files brought in with ``.include``;
    lib: a library file brought in as ``.lib 'lib' <corner>``; corner_params: per corner, lines
    written before the includes (the built-in card's threshold shifts)."""

    name: str
    devices: dict
    instantiation: str = MODEL_CARD
    includes: tuple = ()
    lib: str = ""
    corners: tuple = ()
    corner_params: dict = dataclasses.field(default_factory=dict)
    vdd_range: tuple = (0.5, 1.5)
    mismatch: Mismatch = dataclasses.field(default_factory=PelgromDelvto)
    size_unit: float | None = None  # None: 1e-6 for model cards (metres), 1.0 for subcircuits (um)
    inner_device: str = "m{device}"  # subcircuits: the device inside, for operating-point vectors
    # Limits the circuits' parameters are checked against (instead of one process's numbers):
    # gate_ranges: role suffix ("" core, "_io", "_lvt" ...) -> (lowest, highest) gate voltage a
    # word line or select line may take; min_size: (W, L) in um (a PDK checks its bins instead).
    gate_ranges: dict = dataclasses.field(default_factory=lambda: {"": (-0.5, 2.0)})
    min_size: tuple = (0.06, 0.06)
    leakage_gmin: float | None = None  # ngspice gmin for leakage (retention) netlists; None: default

    def __post_init__(self):
        if self.instantiation not in (MODEL_CARD, SUBCIRCUIT):
            raise ValueError(f"process {self.name}: instantiation must be {MODEL_CARD!r} or {SUBCIRCUIT!r}")
        unknown = sorted(set(self.devices) - set(ROLES))
        if unknown:
            raise ValueError(f"process {self.name}: unknown device role {unknown[0]!r} (roles: {', '.join(ROLES)})")

    @property
    def scale(self) -> float:
        if self.size_unit is not None:
            return self.size_unit
        return 1e-6 if self.instantiation == MODEL_CARD else 1.0

    def device(self, role: str) -> str:
        try:
            return self.devices[role]
        except KeyError:
            have = ", ".join(f"{r} ({ROLES[r]})" for r in self.devices)
            raise ParameterError("technology", self.name, f"a process with a {ROLES.get(role, role)} device "
                                 f"(role {role!r}); process {self.name} has: {have}") from None

    def instance_name(self, name: str) -> str:
        """The netlist instance name of a circuit's transistor ``name`` (``mp0`` -> ``mp0`` for
        model cards, ``xmp0`` for subcircuits)."""
        return name if self.instantiation == MODEL_CARD else "x" + name

    def mos(self, m: Mosfet) -> str:
        """One netlist line for transistor ``m``."""
        u = self.scale
        extra = "" if m.dvt is None else self.mismatch.instance_params(m.dvt)
        return (f"{self.instance_name(m.name)} {m.d} {m.g} {m.s} {m.b} {self.device(m.role)} "
                f"W={m.w * u:.6g} L={m.l * u:.6g}{extra}\n")

    def alter_dvt(self, name: str, dvt: float) -> list[str]:
        """ngspice commands that set transistor ``name``'s threshold shift between runs."""
        return self.mismatch.alter(self.instance_name(name), dvt)

    def op_vector(self, m: Mosfet, quantity: str) -> str:
        """The ngspice vector of an operating-point quantity of ``m`` (``@m1[gm]``; inside a
        subcircuit ``@m.x<name>.<inner device>[gm]``)."""
        if self.instantiation == MODEL_CARD:
            return f"@{m.name}[{quantity}]"
        inner = self.inner_device.format(device=self.device(m.role))
        return f"@m.{self.instance_name(m.name)}.{inner}[{quantity}]"

    def header(self, corner: str, seed: int | None = None) -> str:
        """Netlist lines that bring the device models in at ``corner`` (``seed``: a Monte Carlo
        netlist of a process whose models draw their own mismatch)."""
        out = self.mismatch.header(seed) + self.corner_params.get(corner, "")
        out += "".join(f".include '{f}'\n" for f in self.includes)
        if self.lib:
            out += f".lib '{self.lib}' {corner}\n"
        return out

    def finish(self, netlist: str, corner: str) -> str:
        """The finished netlist (a PDK that includes only the devices in use fills them in)."""
        return netlist

    def gate_range(self, role: str) -> tuple:
        suffix = role.partition("_")[2]
        return self.gate_ranges.get("_" + suffix if suffix else "", self.gate_ranges[""])

    def check_gate(self, where: str, role: str, v: float) -> None:
        lo, hi = self.gate_range(role)
        if not lo <= v <= hi:
            raise ParameterError(where, v, f"{lo:g} to {hi:g} V (gate of the {ROLES.get(role, role)} "
                                 f"of process {self.name})")

    def check_vdd(self, where: str, v: float) -> None:
        lo, hi = self.vdd_range
        if not lo <= v <= hi:
            raise ParameterError(where, v, f"{lo:g} to {hi:g} V (supply range of process {self.name})")

    def check_size(self, where: str, role: str, w: float, l: float) -> None:
        """One-line error when W or L (um) is below the process's minimum (or outside a PDK's bins)."""
        self.device(role)
        w0, l0 = self.min_size
        if w < w0 or l < l0:
            raise ParameterError(where, f"W={w:g} L={l:g} um", f"W >= {w0:g} um and L >= {l0:g} um "
                                 f"(process {self.name})")

    def model_files(self) -> list[Path]:
        return [Path(f) for f in (*self.includes, *([self.lib] if self.lib else []))]

    def digest(self) -> str:
        h = hashlib.sha256()
        for f in self.model_files():
            h.update(f.read_bytes())
        return h.hexdigest()

    def check(self, corner: str) -> None:
        """One-line errors before any simulation: an unknown corner, a missing model file."""
        if self.corners and corner not in self.corners:
            raise ParameterError("corner", corner, f"a corner of process {self.name}: {', '.join(self.corners)}")
        for f in self.model_files():
            if not f.is_file():
                raise DesignFileError(f"process {self.name}: model file {f} does not exist")


def builtin_process(nmos: str = "nch", pmos: str = "pch") -> Process:
    """The built-in generic 65-nm BSIM4 card: model cards, corners as threshold shifts."""
    return Process(
        name="builtin", devices={"nmos": nmos, "pmos": pmos}, instantiation=MODEL_CARD,
        includes=(str(netlists.path(netlists.BUILTIN_MODEL)),), corners=tuple(BUILTIN_CORNERS),
        corner_params={c: f".param dvthn={dn} dvthp={dp}\n" for c, (dn, dp) in BUILTIN_CORNERS.items()},
        vdd_range=(0.5, 1.5), mismatch=PelgromDelvto())


def model_file_process(path: Path, corner: str, nmos: str, pmos: str) -> Process:
    """A user's model-card file: ``.lib 'file' corner`` (or ``.include`` with no corner)."""
    return Process(name=str(path), devices={"nmos": nmos, "pmos": pmos}, instantiation=MODEL_CARD,
                   includes=() if corner else (str(path),), lib=str(path) if corner else "",
                   mismatch=PelgromDelvto())


PROCESSES: dict[str, Process | Callable[[], Process]] = {}


def register_process(name: str, process: Process | Callable[[], Process]) -> None:
    """Make a process selectable as ``process = "<name>"`` in a technology table. A callable is
    called when a design selects it (locate the PDK's files then; raise DesignFileError with
    the install command when they are missing)."""
    PROCESSES[name] = process


def get_process(name: str) -> Process:
    """A registered process, or the process a table file (``*.toml``) describes."""
    from .process_table import is_table, load_table
    if is_table(name):
        return load_table(name)
    if name not in PROCESSES:
        raise ParameterError("process", name, "a registered process: " + (", ".join(sorted(PROCESSES)) or "none")
                             + " (or a process table file, *.toml; or \"\" for the built-in card or model_file)")
    p = PROCESSES[name]
    return p if isinstance(p, Process) else p()


def resolve_process_files(data, design_dir: Path) -> None:
    """In a parsed design file, make each ``[<family>.technology] process = "<file>.toml"`` that
    is a relative path relative to the design file's folder (in place; anything malformed is
    left for the design's own checks)."""
    from .process_table import is_table
    if not isinstance(data, dict):
        return
    for table in data.values():
        tech = table.get("technology") if isinstance(table, dict) else None
        proc = tech.get("process") if isinstance(tech, dict) else None
        if isinstance(proc, str) and is_table(proc) and not Path(proc).is_absolute():
            tech["process"] = str(Path(design_dir).absolute() / proc)


@dataclasses.dataclass(frozen=True)
class Technology(Validated):
    """Process and corner. ``model_file = ""`` and ``process = ""``: the built-in generic 65-nm
    BSIM4 card. ``model_file``: a user model-card file; a non-empty ``corner`` is used as
    ``.lib 'file' corner``, an empty corner means ``.include 'file'``. ``process``: a process
    registered with :func:`register_process` (its device names, models and Monte Carlo), or a
    process table file ``*.toml`` (:mod:`~analogattn.circuits.process_table`; a relative path in
    a design file is relative to the design file).
    """

    model_file: str = param("", doc="path to a SPICE model/PDK file; empty = built-in 65-nm card")
    corner: str = param("tt", doc="process corner (built-in: tt, ff, ss, fs, sf)")
    nmos: str = param("nch", doc="NMOS model name in the model file (with a process: replaces its core NMOS "
                      "device, e.g. sky130_fd_pr__nfet_01v8_lvt)")
    pmos: str = param("pch", doc="PMOS model name in the model file (with a process: replaces its core PMOS device)")
    process: str = param("", doc="a registered process by name (devices, models, Monte Carlo), or a process "
                         "table file (*.toml, relative to the design file); empty = built-in card or model_file")

    def check(self):
        for field in ("nmos", "pmos"):
            if not _NAME.match(getattr(self, field)):
                raise ParameterError(field, getattr(self, field), "a SPICE model name (letters, digits, _ . + -)")
        if self.corner and not _NAME.match(self.corner):
            raise ParameterError("corner", self.corner, "a .lib section name (letters, digits, _ . + -) or \"\"")
        if self.process:
            if self.model_file:
                raise ParameterError("process", self.process, "\"\" when model_file is set (one or the other)")
            self.as_process().check(self.corner)
        elif self.builtin:
            if self.corner not in BUILTIN_CORNERS:
                raise ParameterError("corner", self.corner,
                                     "one of " + ", ".join(BUILTIN_CORNERS))
        else:
            if any(c in self.model_file for c in "'\"\n\r\0"):
                raise ParameterError("model_file", self.model_file, "a path without quotes or line breaks")
            p = Path(self.model_file)
            if not p.is_file():
                raise ParameterError("model_file", self.model_file, "an existing file")
            self.check_model_file()

    def check_model_file(self) -> None:
        """The user's model file is readable text that defines the device models the netlists
        use (``.model <nmos>``, ``.model <pmos>``, case-insensitive, binned ``.1``... accepted)
        and, with a corner, has that ``.lib`` section: checked before any simulation, so a
        wrong file is one line here instead of a failed ngspice worker."""
        p = Path(self.model_file)
        names = model_names(p)
        missing = [n for n in dict.fromkeys((self.nmos, self.pmos)) if not _has_model(names, n)]
        if missing:
            found = ", ".join(sorted(names)[:6]) or "none"
            raise DesignFileError(
                f"model file {p} defines no {' and no '.join('.model ' + n for n in missing)} "
                f"(models found: {found}); set technology.nmos/pmos to its model names or use another model_file")
        if self.corner:
            sections = {m.lower() for m in _SECTION.findall(_read_model_text(p, "model file"))}
            if self.corner.lower() not in sections:
                raise DesignFileError(
                    f"model file {p} has no .lib {self.corner} section (technology.corner = {self.corner!r}); "
                    f"set corner = \"\" to .include the whole file, or one of: {', '.join(sorted(sections)) or 'none'}")

    @property
    def builtin(self) -> bool:
        return self.model_file == "" and self.process == ""

    @property
    def path(self) -> Path:
        """The (first) model file."""
        if self.process:
            return self.as_process().model_files()[0]
        return netlists.path(netlists.BUILTIN_MODEL) if self.builtin else Path(self.model_file).resolve()

    def as_process(self) -> Process:
        """The :class:`Process` this table selects (what the netlists instantiate through)."""
        if self.process:
            p = get_process(self.process)
            over = {r: n for r, n, d in (("nmos", self.nmos, "nch"), ("pmos", self.pmos, "pch")) if n != d}
            return dataclasses.replace(p, devices={**p.devices, **over}) if over else p
        if self.builtin:
            return builtin_process(self.nmos, self.pmos)
        return model_file_process(self.path, self.corner, self.nmos, self.pmos)

    def digest(self) -> str:
        # hashed every time: model files are small, and a stale digest would poison the cache
        if self.process:
            return self.as_process().digest()
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def header(self, seed: int | None = None) -> str:
        """Netlist lines that bring the device models in (``seed``: mismatch drawn by the
        process's own models, reproducibly)."""
        return self.as_process().header(self.corner, seed)

    def finish(self, netlist: str) -> str:
        """Every family's netlist passes through here once complete (a PDK fills in the device
        files its transistors use)."""
        return self.as_process().finish(netlist, self.corner)


def _sky130() -> Process:
    from .sky130 import sky130_process  # located lazily: a missing PDK is an error only when selected
    return sky130_process()


register_process("sky130", _sky130)
