"""A design: every circuit family's parameters and sweep settings, from built-in defaults
overridden by a TOML file. Unknown keys and bad values are errors naming the key."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from ..circuits.comparator import ComparatorParams
from ..circuits.gaincell import GainCellParams, GainCellSweep
from ..circuits.reram import ReramColumnParams
from .comparator import ComparatorSweep
from .reram import ReramSweep
from ..errors import DesignFileError
from ..params import Validated, param

FAMILIES = ("gaincell", "reram", "comparator")


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
    simulator: SimulatorOptions = dataclasses.field(default_factory=SimulatorOptions)
    gaincell: GainCellParams = dataclasses.field(default_factory=GainCellParams)
    gaincell_sweep: GainCellSweep = dataclasses.field(default_factory=GainCellSweep)
    reram: ReramColumnParams = dataclasses.field(default_factory=ReramColumnParams)
    reram_sweep: ReramSweep = dataclasses.field(default_factory=ReramSweep)
    comparator: ComparatorParams = dataclasses.field(default_factory=ComparatorParams)
    comparator_sweep: ComparatorSweep = dataclasses.field(default_factory=ComparatorSweep)

    def analyses(self, selection: dict) -> list:
        """Analyses of the selected families: {family: None (all) | set of analysis names}."""
        from . import comparator, gaincell, reram
        mods = {"gaincell": gaincell, "reram": reram, "comparator": comparator}
        out = []
        for fam in FAMILIES:
            if fam in selection:
                out += mods[fam].analyses(getattr(self, fam), getattr(self, f"{fam}_sweep"), selection[fam],
                                          self.simulator.as_options())
        return out

    @classmethod
    def from_mapping(cls, data: dict) -> "Design":
        known = set(FAMILIES) | {"simulator"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DesignFileError(f"unknown design table [{unknown[0]}] (known: {', '.join(sorted(known))})")
        kw = {"simulator": SimulatorOptions.from_dict(data.get("simulator", {}), "simulator")}
        for fam in FAMILIES:
            table = dict(data.get(fam, {}))
            sweep = table.pop("sweep", {})
            kw[fam] = _cls(cls, fam).from_dict(table, fam)
            kw[f"{fam}_sweep"] = _cls(cls, f"{fam}_sweep").from_dict(sweep, f"{fam}.sweep")
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path | None) -> "Design":
        if path is None:
            return cls()
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise DesignFileError(f"cannot read design file {p}: {e.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DesignFileError(f"design file {p} is not valid TOML: {e}") from None
        return cls.from_mapping(data)


def _cls(design_cls, name):
    import typing
    return typing.get_type_hints(design_cls)[name]
