"""A design: every circuit family's parameters and sweep settings, from built-in defaults
overridden by a TOML file. Unknown keys and bad values are errors naming the key."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from . import families
from ..errors import AnalogAttnError, DesignFileError
from ..params import Validated, _short, param


def __getattr__(name):
    if name == "FAMILIES":  # the registered families' names (registered later ones included)
        return families.names()
    raise AttributeError(name)


@dataclasses.dataclass(frozen=True)
class SimulatorOptions(Validated):
    """ngspice ``.options`` applied to every simulation (ngspice's defaults)."""

    reltol: float = param(1e-3, "", 1e-12, 0.1, "relative error tolerance")
    abstol: float = param(1e-12, "A", 1e-24, 1e-6, "absolute current tolerance")
    vntol: float = param(1e-6, "V", 1e-16, 1e-2, "absolute voltage tolerance")
    itl1: int = param(100, "", 1, 100000, "DC iteration limit")
    itl4: int = param(10, "", 1, 100000, "transient iteration limit per time point")

    def as_options(self) -> dict:
        """Only the options that differ from ngspice's defaults (keeps cache keys stable)."""
        default = SimulatorOptions()
        return {k: v for k, v in self.to_dict().items() if v != getattr(default, k)}


@dataclasses.dataclass(frozen=True)
class Design:
    """Simulator options and, per registered circuit family, its circuit parameters and sweep
    (``design.gaincell``, ``design.gaincell_sweep``; defaults where not given)."""

    simulator: SimulatorOptions = dataclasses.field(default_factory=SimulatorOptions)
    circuits: dict = dataclasses.field(default_factory=dict)  # family -> circuit parameters
    sweeps: dict = dataclasses.field(default_factory=dict)  # family -> sweep settings

    def __post_init__(self):
        fams = families.families()
        unknown = sorted((set(self.circuits) | set(self.sweeps)) - set(fams))
        if unknown:
            raise DesignFileError(f"unknown circuit family {unknown[0]!r} (known: {', '.join(fams)})")
        object.__setattr__(self, "circuits", {n: self.circuits.get(n) or f.params() for n, f in fams.items()})
        object.__setattr__(self, "sweeps", {n: self.sweeps.get(n) or f.sweep() for n, f in fams.items()})

    def __getattr__(self, name):
        d = self.__dict__
        if name.endswith("_sweep") and name[:-6] in d.get("sweeps", {}):
            return d["sweeps"][name[:-6]]
        if name in d.get("circuits", {}):
            return d["circuits"][name]
        raise AttributeError(name)

    def analyses(self, selection: dict) -> list:
        """Analyses of the selected families: {family: None (all) | set of analysis names}."""
        out = []
        for name, fam in families.families().items():
            if name in selection:
                out += fam.analyses_of(self.circuits[name], self.sweeps[name], selection[name],
                                       self.simulator.as_options())
        return out

    @classmethod
    def from_mapping(cls, data: dict) -> "Design":
        if not isinstance(data, dict):
            raise DesignFileError(f"a design is a table of tables, got {_short(data)}")
        fams = families.families()
        known = set(fams) | {"simulator"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DesignFileError(f"unknown design table [{unknown[0]}] (known: {', '.join(sorted(known))})")
        for name in sorted(known & set(data)):
            if not isinstance(data[name], dict):
                how = (f"an array of tables [[{name}]]" if isinstance(data[name], list)
                       else f"{name} = {_short(data[name])}")
                raise DesignFileError(f"[{name}] must be one table of keys, not {how}: write [{name}] "
                                      "followed by key = value lines")
        sim = SimulatorOptions.from_dict(data.get("simulator", {}), "simulator")
        circuits, sweeps, given = {}, {}, {}
        for name, fam in fams.items():
            table = dict(data.get(name, {}))
            sweep = table.pop("sweep", {})
            circuits[name] = fam.params.from_dict(table, name)
            sweeps[name] = fam.sweep.from_dict(sweep, f"{name}.sweep")
            given[name] = set(table)
            given[f"{name}.sweep"] = set(sweep) if isinstance(sweep, dict) else set()
        design = cls(sim, circuits, sweeps)
        design.check_given(given)
        return design

    def check_given(self, given: dict) -> None:
        """Rules across a family's circuit and sweep tables (each family's ``check_design``).
        ``given``: {"gaincell.sweep": keys set in the file, ...}. A default sweep list is adapted
        to the circuit (points beyond the array or the supply dropped or clipped, as the
        analyses do); a list the user wrote is refused when it does not fit."""
        for name, fam in families.families().items():
            if fam.check_design is not None:
                families.resolve(fam.check_design)(self.circuits[name], self.sweeps[name],
                                                   given.get(name, set()), given.get(f"{name}.sweep", set()))

    @classmethod
    def load(cls, path: str | Path | None) -> "Design":
        if path is None:
            return cls()
        p = Path(path)
        if not p.exists() and p.parent == Path(".") and p.suffix in ("", ".toml"):
            from .. import designs  # a shipped design by name: "sky130"
            p = designs.path(p.name) or p
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DesignFileError(f"cannot read design file {p}: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DesignFileError(f"design file {p} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                                  f"{e.start}): save it as UTF-8 TOML") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DesignFileError(f"design file {p} is not valid TOML: {str(e).splitlines()[0]}") from None
        from ..circuits.technology import resolve_process_files
        resolve_process_files(data, p.parent)  # process = "fab.toml": relative to the design file
        try:
            return cls.from_mapping(data)
        except AnalogAttnError as e:
            e.args = (f"design file {p}: {e}",)  # same class and fields, message names the file
            raise

