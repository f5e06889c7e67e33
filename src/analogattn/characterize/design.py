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
from ..errors import AnalogAttnError, DesignFileError, ParameterError
from ..params import Validated, _short, param

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
        if not isinstance(data, dict):
            raise DesignFileError(f"a design is a table of tables, got {_short(data)}")
        known = set(FAMILIES) | {"simulator"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DesignFileError(f"unknown design table [{unknown[0]}] (known: {', '.join(sorted(known))})")
        for name in sorted(known & set(data)):
            if not isinstance(data[name], dict):
                how = (f"an array of tables [[{name}]]" if isinstance(data[name], list)
                       else f"{name} = {_short(data[name])}")
                raise DesignFileError(f"[{name}] must be one table of keys, not {how}: write [{name}] "
                                      "followed by key = value lines")
        kw = {"simulator": SimulatorOptions.from_dict(data.get("simulator", {}), "simulator")}
        given = {}
        for fam in FAMILIES:
            table = dict(data.get(fam, {}))
            sweep = table.pop("sweep", {})
            kw[fam] = _cls(cls, fam).from_dict(table, fam)
            kw[f"{fam}_sweep"] = _cls(cls, f"{fam}_sweep").from_dict(sweep, f"{fam}.sweep")
            given[fam] = set(table)
            given[f"{fam}.sweep"] = set(sweep) if isinstance(sweep, dict) else set()
        design = cls(**kw)
        design.check_given(given)
        return design

    def check_given(self, given: dict) -> None:
        """Rules across a family's circuit and sweep tables. ``given``: {"gaincell.sweep": keys
        set in the file, ...}. A default sweep list is adapted to the circuit (points beyond the
        array or the supply dropped or clipped, as the analyses do); a list the user wrote is
        refused when it does not fit."""
        g, gs = self.gaincell, self.gaincell_sweep
        if "retention_starts" in given.get("gaincell.sweep", ()):
            for i, v in enumerate(gs.retention_starts):
                if v > g.vdd:
                    raise ParameterError(f"gaincell.sweep.retention_starts[{i}]", v,
                                         f"0 to gaincell.vdd ({g.vdd:g} V)")
        r, rs = self.reram, self.reram_sweep
        rgiven = given.get("reram.sweep", ())
        for field, limit, what in (("ir_positions", r.rows - 1, f"0 to reram.rows - 1 ({r.rows - 1})"),
                                   ("ir_counts", r.rows, f"1 to reram.rows ({r.rows})"),
                                   ("ir_levels", r.levels - 1, f"0 to reram.levels - 1 ({r.levels - 1})")):
            if field in rgiven:
                for i, v in enumerate(getattr(rs, field)):
                    if v > limit:
                        raise ParameterError(f"reram.sweep.{field}[{i}]", v, what)
        if not any(lv < r.levels for lv in rs.ir_levels):
            raise ParameterError("reram.sweep.ir_levels", list(rs.ir_levels),
                                 f"at least one level below reram.levels ({r.levels})")
        c, cs = self.comparator, self.comparator_sweep
        swing = max([cs.dv_range] + [abs(v) for v in cs.noise_dv] + list(cs.overdrives))
        if c.v_cm - swing / 2 < 0 or c.v_cm + swing / 2 > c.vdd:
            raise ParameterError("comparator.v_cm", c.v_cm,
                                 f"{swing / 2:g} to comparator.vdd - {swing / 2:g} V: the inputs v_cm +- dv/2 "
                                 f"(largest dv {swing:g} V of sweep.dv_range, noise_dv, overdrives) must stay "
                                 f"within 0 to vdd ({c.vdd:g} V)")
        from .comparator import T_EVAL
        if c.t_edge >= T_EVAL / 2:
            raise ParameterError("comparator.t_edge", c.t_edge,
                                 f"below {T_EVAL / 2:g} s: a decision is read {T_EVAL:g} s after the clock edge "
                                 "starts, less one edge")

    @classmethod
    def load(cls, path: str | Path | None) -> "Design":
        if path is None:
            return cls()
        p = Path(path)
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
        try:
            return cls.from_mapping(data)
        except AnalogAttnError as e:
            e.args = (f"design file {p}: {e}",)  # same class and fields, message names the file
            raise


def _cls(design_cls, name):
    import typing
    return typing.get_type_hints(design_cls)[name]
