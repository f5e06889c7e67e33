"""The sweep spec: a TOML file, every part validated before any work starts.

```toml
[sweep]                       # strategy and budget
strategy = "grid"             # grid | random | lhs | nsga2 | tpe
points = 8                    # designs drawn by random/lhs, or evaluated by nsga2/tpe (grid: all)
seed = 0
include_default = true        # also evaluate the unmodified design (marked in the plots)

[design]                      # fixed design settings (the design TOML's tables)
gaincell.sweep.n_store = 13

[axes]                        # dotted design keys and kernel.<option>: a list, or a range
"gaincell.w_read_n" = [0.12, 0.48, 1.92]
"gaincell.c_store" = { low = 5e-15, high = 40e-15, log = true, steps = 3 }  # steps: grid only
"kernel.storage_levels" = [8, 32]
[axes.links]                  # keys tied to an axis: value = scale x the axis's value
"gaincell.w_read_p" = { follow = "gaincell.w_read_n", scale = 5.0 }   # read PMOS scales with the NMOS

[evaluation]
model = "smollm2"             # or a .gguf file / Hugging Face folder (readable on every worker)
attention = "gaincell"
window = 128
max_scored = 256
objectives = ["ppl_ratio", "energy_per_token_J", "area_per_element_um2"]
[evaluation.kernel]           # fixed kernel options
mismatch = true

[chips]                       # optional: per-chip random draws, crossed with corners/temperatures
n = 8
budget = 1.15
corners = ["tt", "ss"]
temperatures = [27.0, 85.0]
```

Axes, their ranges and types come from the parameter classes' ``param`` metadata (the design's
families and the kernel's composed config): there is no second list. A linked key (``[axes.links]``)
is validated the same way, at every value its axis takes (a range: both ends; the link is
linear with a positive scale, so the values between lie between). A mistake is one
:class:`AnalogAttnError` line naming the spec file and the key.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path

from ..errors import AnalogAttnError, ParameterError
from ..params import Validated, _fmt_range, _short, digest, param

STRATEGIES = ("grid", "random", "lhs", "nsga2", "tpe")
# objective -> (unit, what); every one is minimised
OBJECTIVES = {
    "ppl_ratio": ("", "perplexity / ideal perplexity (chips: median over chips)"),
    "ppl_ratio_p90": ("", "90th percentile over chips of perplexity / ideal"),
    "energy_per_token_J": ("J", "attention energy per generated token"),
    "latency_per_token_s": ("s", "attention latency per generated token"),
    "area_per_element_um2": ("um^2", "array area per stored K/V element (periphery included)"),
    "area_per_array_um2": ("um^2", "area of one array with its periphery"),
}
# kernels whose registry entry does not name its circuit families (yet): which ones they read
KERNEL_FAMILIES = {"ideal": (), "gaincell": ("gaincell",), "sprint": ("reram", "comparator")}
RUN_LEVEL = {"window": "evaluation.window", "seed": "chips.seed (one seed per chip)"}


class SpecError(AnalogAttnError):
    pass


@dataclasses.dataclass(frozen=True)
class SweepSettings(Validated):
    strategy: str = param("grid", choices=STRATEGIES, doc="how designs are chosen")
    points: int = param(8, "", 1, 100000, "designs to draw (random, lhs) or to evaluate (nsga2, tpe)")
    seed: int = param(0, "", 0, 2**31 - 1, "seed of the draws and of the search")
    include_default: bool = param(True, doc="also evaluate the unmodified design")


@dataclasses.dataclass(frozen=True)
class EvaluationSettings(Validated):
    model: str = param("smollm2", doc="smollm2, a .gguf file or a Hugging Face folder (on every worker)")
    text: str = param("", doc="UTF-8 text (default: a text shipped with the system); sent to the workers")
    calibration_text: str = param("", doc="calibration text (default: the last 40,000 characters of the text)")
    attention: str = param("gaincell", doc="attention kernel (the kernel registry)")
    window: int = param(128, "tokens", 8, 1 << 16, "tokens per window")
    max_scored: int = param(256, "tokens", 8, 10**9, "scored tokens per point")
    max_chars: int = param(200000, "chars", 1000, 10**9, "characters of the text sent to the workers")
    objectives: tuple[str, ...] = param(("ppl_ratio", "energy_per_token_J", "area_per_element_um2"),
                                        choices=tuple(OBJECTIVES), doc="objectives (all minimised)")
    degree: int = param(3, "", 1, 8, "read-surface polynomial degree of the fit")
    surface: str = param("auto", choices=("auto", "poly", "table"), doc="read-surface model of the fit")


@dataclasses.dataclass(frozen=True)
class ChipSettings(Validated):
    n: int = param(1, "", 1, 100000, "chips per design (each its own draw of every random effect)")
    seed: int = param(1000, "", 0, 2**31 - 100001, "seed of chip 0 (chip i draws with seed + i)")
    budget: float = param(1.15, "", 1.0, 1000.0, "perplexity ratio to ideal a chip must stay within (yield)")


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str                       # "gaincell.c_store" or "kernel.storage_levels"
    values: tuple | None = None     # a list axis
    low: float | None = None        # a range axis
    high: float | None = None
    log: bool = False
    steps: int | None = None
    kind: type = float              # int, float, str, bool

    @property
    def is_kernel(self) -> bool:
        return self.name.startswith("kernel.")

    @property
    def leaf(self) -> str:
        return self.name.split(".", 1)[1]

    def grid(self) -> list:
        if self.values is not None:
            return list(self.values)
        return self.at([(i + 0.5) / self.steps if self.steps == 1 else i / (self.steps - 1)
                        for i in range(self.steps)], dedupe=True)

    def at(self, us, dedupe=False) -> list:
        """Values at positions ``us`` in [0, 1) (a list axis: its entries, a range: its span)."""
        out = []
        for u in us:
            if self.values is not None:
                out.append(self.values[min(int(u * len(self.values)), len(self.values) - 1)])
                continue
            if self.log:
                x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
            else:
                x = self.low + u * (self.high - self.low)
            x = min(max(x, self.low), self.high)
            out.append(int(round(x)) if self.kind is int else float(f"{x:.12g}"))
        return list(dict.fromkeys(out)) if dedupe else out


@dataclasses.dataclass(frozen=True)
class Link:
    """A key varied with an axis: ``value = scale x (the followed axis's value)``, e.g. the read
    NMOS width held at 0.2x the read PMOS width. Recorded as its own column of every table."""
    name: str                       # "gaincell.w_read_n"
    follow: str                     # an axis of [axes]
    scale: float = 1.0
    kind: type = float              # int or float

    def value(self, leader):
        x = float(leader) * self.scale
        return int(round(x)) if self.kind is int else float(f"{x:.12g}")


@dataclasses.dataclass
class SweepSpec:
    path: Path
    text: str
    sweep: SweepSettings
    evaluation: EvaluationSettings
    chips: ChipSettings
    corners: tuple
    temperatures: tuple
    design_base: dict               # the [design] tables
    kernel_fixed: dict              # [evaluation.kernel]
    axes: list[Axis]
    families: tuple                 # circuit families the kernel reads
    chip_sweep: bool                # a [chips] table was given
    links: list = dataclasses.field(default_factory=list)   # [axes.links]: list[Link]

    @property
    def columns(self) -> list[str]:
        """Every key a design point sets: the axes, then the linked keys."""
        return [a.name for a in self.axes] + [lk.name for lk in self.links]

    def complete(self, values: dict) -> dict:
        """Axis values plus the linked keys' values."""
        out = dict(values)
        for lk in self.links:
            out[lk.name] = lk.value(values[lk.follow])
        return out

    def digest(self) -> str:
        """What the stored results depend on (not the budget: a sweep may be extended)."""
        d = {"sweep": {k: v for k, v in self.sweep.to_dict().items() if k != "points"},
             "evaluation": self.evaluation.to_dict(), "chips": self.chips.to_dict(), "corners": list(self.corners),
             "temperatures": list(self.temperatures), "design": self.design_base, "kernel": self.kernel_fixed,
             "axes": [dataclasses.asdict(a) | {"kind": a.kind.__name__} for a in self.axes]}
        if self.links:  # (absent when there are none: the digests of earlier sweeps stay)
            d["links"] = [dataclasses.asdict(lk) | {"kind": lk.kind.__name__} for lk in self.links]
        return digest(json.dumps(d, sort_keys=True, default=str))

    # -- the parts of one point -------------------------------------------------------------
    def design_mapping(self, values: dict, corner=None, temperature=None) -> dict:
        """The design table of a point: [design] + the point's design axes (+ a chip corner or
        temperature for every family the kernel reads), restricted to the kernel's families."""
        m = _deep_copy(self.design_base)
        for k, v in values.items():
            if not k.startswith("kernel."):
                _set(m, k, v)
        for fam in self.families:
            if corner is not None:
                _set(m, f"{fam}.technology.corner", corner)
            if temperature is not None:
                _set(m, f"{fam}.temperature", float(temperature))
        return {k: v for k, v in m.items() if k in self.families or k == "simulator"}

    def kernel_leaves(self, values: dict, temperature=None, seed=None) -> dict:
        leaves = dict(self.kernel_fixed)
        leaves.update({k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("kernel.")})
        names = _kernel_leaf_names(self.evaluation.attention)
        if temperature is not None and "cell_temperature" in names:
            leaves["cell_temperature"] = float(temperature)
        if seed is not None and "seed" in names:
            leaves["seed"] = int(seed)
        if "window" in names:
            leaves["window"] = self.evaluation.window
        return leaves

    def default_values(self) -> dict:
        """Axis values of the unmodified design (the [design] table and fixed kernel options)."""
        from ..characterize.design import Design
        design = Design.from_mapping(self.design_base)
        cfg = _kernel_cls(self.evaluation.attention)(**self.kernel_fixed)
        out = {}
        for name in self.columns:  # the linked keys too: the default design's own values
            if name.startswith("kernel."):
                out[name] = getattr(cfg, name.split(".", 1)[1])
            else:
                out[name] = _get_attr_path(design, name)
        return out

    def variants(self) -> list[tuple]:
        """(corner, temperature) pairs every chip is evaluated at (None: the design's own)."""
        return [(c, t) for c in self.corners for t in self.temperatures]


# ------------------------------------------------------------------------------------------------
def _deep_copy(d):
    return json.loads(json.dumps(d))


def _set(m: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        m = m.setdefault(p, {})
    m[parts[-1]] = value


def _get_attr_path(design, dotted: str):
    fam, *rest = dotted.split(".")
    obj = getattr(design, fam)
    if rest and rest[0] == "sweep":
        obj, rest = getattr(design, f"{fam}_sweep"), rest[1:]
    for r in rest:
        obj = getattr(obj, r)
    return obj


def _kernel_cls(attention: str):
    from ..attention import registry
    return registry.get(attention).config


def _kernel_leaf_names(attention: str) -> set:
    from ..attention.config import leaf_fields
    return {f.name for _, f in leaf_fields(_kernel_cls(attention))}


def kernel_families(attention: str) -> tuple:
    from ..attention import registry
    spec = registry.get(attention)
    fams = getattr(spec, "families", None)
    if fams is not None:
        return tuple(fams)
    return KERNEL_FAMILIES.get(attention, ())


def family_classes(fam: str):
    """(circuit parameter class, sweep class) of a circuit family, or None: from the family
    registry (characterize/families.py) where it exists, else from the Design's fields."""
    try:
        from ..characterize import families as F
    except ImportError:
        from ..characterize.design import FAMILIES, Design
        if fam not in FAMILIES:
            return None
        hints = typing.get_type_hints(Design)
        return hints[fam], hints[f"{fam}_sweep"]
    f = F.families().get(fam)
    return (f.params, f.sweep) if f is not None else None


def design_field(dotted: str):
    """(dataclasses.Field, type) of a dotted design key, or None when it names no field."""
    parts = dotted.split(".")
    classes = family_classes(parts[0])
    if classes is None:
        return None
    cls, rest = classes[0], parts[1:]
    if rest and rest[0] == "sweep":
        cls, rest = classes[1], rest[1:]
    f = None
    for i, r in enumerate(rest):
        fields = {x.name: x for x in dataclasses.fields(cls)}
        if r not in fields:
            return None
        f, t = fields[r], typing.get_type_hints(cls)[r]
        if dataclasses.is_dataclass(t):
            if i == len(rest) - 1:
                return None
            cls = t
        elif i != len(rest) - 1:
            return None
    return (f, t) if f is not None else None


def _base(t):
    if typing.get_origin(t) in (typing.Union, __import__("types").UnionType):
        t = [a for a in typing.get_args(t) if a is not type(None)][0]
    return t


# ------------------------------------------------------------------------------------------------
def load(path) -> SweepSpec:
    from ..userio import check_input_file
    p = check_input_file(path, "SPEC", "sweep spec")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise SpecError(f"sweep spec {p} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"sweep spec {p} is not valid TOML: {str(e).splitlines()[0]}") from None
    # a relative process table (process = "fab.toml") is relative to the spec file, not the
    # current folder: in [design.<family>.technology] and in a *.technology.process axis
    from ..circuits.technology import resolve_process_files
    resolve_process_files(data.get("design"), p.parent)
    _resolve_process_axes(data.get("axes"), p.parent)
    try:
        return from_mapping(data, p, text)
    except AnalogAttnError as e:
        raise SpecError(f"sweep spec {p}: {e}") from None


def _resolve_process_axes(t, folder: Path, prefix: str = "") -> None:
    """Relative ``.toml`` values of a ``<family>.technology.process`` axis made relative to
    ``folder`` (in place; anything malformed is left for the axis checks)."""
    from ..circuits.process_table import is_table
    if not isinstance(t, dict):
        return
    for k, v in t.items():
        name = prefix + k
        if isinstance(v, dict):
            _resolve_process_axes(v, folder, name + ".")
        elif isinstance(v, list) and name.endswith(".technology.process"):
            t[k] = [str(Path(folder).absolute() / x) if isinstance(x, str) and is_table(x)
                    and not Path(x).is_absolute() else x for x in v]


def _table(data, name) -> dict:
    t = data.get(name, {})
    if not isinstance(t, dict):
        raise SpecError(f"[{name}] must be a table of keys, not {_short(t)}")
    return t


def from_mapping(data: dict, path: Path = Path("<spec>"), text: str = "") -> SweepSpec:
    from ..characterize.design import Design
    known = {"sweep", "design", "axes", "evaluation", "chips"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"unknown table [{unknown[0]}] (known: {', '.join(sorted(known))})")
    sweep = SweepSettings.from_dict(_table(data, "sweep"), "sweep")
    ev_t = dict(_table(data, "evaluation"))
    kernel_fixed = ev_t.pop("kernel", {})
    if not isinstance(kernel_fixed, dict):
        raise SpecError(f"[evaluation.kernel] must be a table of kernel options, not {_short(kernel_fixed)}")
    if isinstance(ev_t.get("objectives"), list):
        ev_t["objectives"] = tuple(ev_t["objectives"])
    ev = EvaluationSettings.from_dict(ev_t, "evaluation")
    if len(set(ev.objectives)) != len(ev.objectives):
        raise SpecError(f"evaluation.objectives lists an objective twice: {list(ev.objectives)}")
    from ..attention import registry
    if ev.attention not in registry.names():
        raise ParameterError("evaluation.attention", ev.attention, "one of " + ", ".join(registry.names()))
    kspec = registry.get(ev.attention)
    families = kernel_families(ev.attention)
    leaf_names = _kernel_leaf_names(ev.attention)
    for k in kernel_fixed:
        _check_kernel_leaf(k, ev.attention, leaf_names, "evaluation.kernel")
    try:
        kspec.config(**kernel_fixed)
    except ParameterError as e:
        raise ParameterError(f"evaluation.kernel.{e.field}", e.value, e.allowed) from None
    design_base = _table(data, "design")
    Design.from_mapping(_deep_copy(design_base))  # one-line errors naming the key
    if ev.model not in ("smollm2", "minilm") and not Path(ev.model).exists():
        raise SpecError(f"evaluation.model {ev.model!r}: not smollm2, an existing .gguf file or a model folder")
    for key in ("text", "calibration_text"):
        if getattr(ev, key):
            from ..evaluate.texts import check_text
            check_text(getattr(ev, key), f"evaluation.{key}")
    if "area_per_element_um2" in ev.objectives or "area_per_array_um2" in ev.objectives:
        if ev.attention not in ("gaincell", "sprint"):
            raise SpecError(f"evaluation.objectives: area has no model for attention {ev.attention!r}")

    chips_t = dict(_table(data, "chips"))
    corners = chips_t.pop("corners", None)
    temps = chips_t.pop("temperatures", None)
    chips = ChipSettings.from_dict(chips_t, "chips")
    corners = _list_or_none(corners, "chips.corners")
    temps = _list_or_none(temps, "chips.temperatures")
    for c in corners or ():
        if not families:
            raise SpecError(f"chips.corners: attention {ev.attention} simulates no circuit")
        m = _deep_copy(design_base)
        for fam in families:
            _set(m, f"{fam}.technology.corner", c)
        Design.from_mapping(m)
    for t in temps or ():
        m = _deep_copy(design_base)
        if not families:
            raise SpecError(f"chips.temperatures: attention {ev.attention} simulates no circuit")
        for fam in families:
            _set(m, f"{fam}.temperature", t)
        Design.from_mapping(m)
        if "cell_temperature" in leaf_names:
            kspec.config(**{**kernel_fixed, "cell_temperature": t})

    axes_t = dict(_table(data, "axes"))
    links_t = axes_t.pop("links", {})
    axes = []
    for name, val in _flatten_axes(axes_t):
        axes.append(_axis(name, val, ev.attention, families, leaf_names, design_base, kernel_fixed, sweep.strategy))
    if not axes:
        raise SpecError("[axes] is empty: name at least one design key or kernel.<option> to sweep")
    links = _links(links_t, axes, ev.attention, families, leaf_names, design_base, kernel_fixed)
    for a in axes:
        if a.name.split(".")[-1] in ("corner", "temperature") and ((corners and a.name.endswith("corner"))
                                                                  or (temps and a.name.endswith("temperature"))):
            raise SpecError(f"axes.{a.name}: also set per chip by [chips]; use one of the two")
    return SweepSpec(path, text, sweep, ev, chips, tuple(corners or (None,)), tuple(temps or (None,)),
                     design_base, dict(kernel_fixed), axes, families, "chips" in data, links)


def _list_or_none(v, where):
    if v is None:
        return None
    if not isinstance(v, list):
        raise SpecError(f"{where} must be a list, not {_short(v)}")
    if not v:
        raise SpecError(f"{where} is empty (leave it out to use the design's own)")
    return list(dict.fromkeys(v))


def _flatten_axes(t: dict, prefix=""):
    for k, v in t.items():
        name = prefix + k
        if isinstance(v, list) or (isinstance(v, dict) and ({"low", "high"} & set(v))):
            yield name, v
        elif isinstance(v, dict):
            yield from _flatten_axes(v, name + ".")
        else:
            raise SpecError(f"axes.{name} = {_short(v)}: an axis is a list of values or a range "
                            "{ low = .., high = .., log = false, steps = .. }")


def _check_kernel_leaf(leaf, attention, names, where):
    from ..attention import registry
    from ..attention.config import leaf_fields
    if leaf in RUN_LEVEL:
        raise SpecError(f"{where}.{leaf}: set by {RUN_LEVEL[leaf]}, not as a kernel option")
    if leaf not in names:
        others = sorted(s.name for s in registry.specs()
                        if leaf in {f.name for _, f in leaf_fields(s.config)})
        if others:
            raise SpecError(f"{where}.{leaf}: an option of attention {' and '.join(others)}, "
                            f"not used by attention {attention}")
        raise SpecError(f"{where}.{leaf}: unknown option of attention {attention} "
                        f"(options: {', '.join(sorted(names - set(RUN_LEVEL)))})")


def _axis(name, val, attention, families, leaf_names, design_base, kernel_fixed, strategy) -> Axis:
    where = f"axes.{name}"
    fld, typ, check = _key(name, where, attention, families, leaf_names, design_base, kernel_fixed)
    return _axis_values(name, where, val, fld, typ, check, strategy)


def _key(name, where, attention, families, leaf_names, design_base, kernel_fixed):
    """(field, type, check(value)) of a design key or kernel option that a sweep may vary;
    ``check`` raises a one-line error naming ``where`` for a value the parameter refuses."""
    from ..characterize.design import FAMILIES, Design
    if name.startswith("kernel."):
        leaf = name.split(".", 1)[1]
        _check_kernel_leaf(leaf, attention, leaf_names, where[: -len(leaf) - 1])
        from ..attention.config import leaf_fields
        fld = {f.name: f for _, f in leaf_fields(_kernel_cls(attention))}[leaf]
        hints = {}
        for _, sub in __import__("analogattn.attention.config", fromlist=["sections"]).sections(_kernel_cls(attention)):
            hints.update(typing.get_type_hints(sub))
        typ = _base(hints[leaf])

        def check(v):
            try:
                _kernel_cls(attention)(**{**kernel_fixed, leaf: v})
            except ParameterError as e:
                raise ParameterError(f"{where}", e.value, e.allowed) from None
    else:
        fam = name.split(".")[0]
        if fam not in FAMILIES:
            raise SpecError(f"{where}: unknown axis (a design key such as gaincell.c_store, or kernel.<option>; "
                            f"families: {', '.join(FAMILIES)})")
        if fam not in families:
            raise SpecError(f"{where}: attention {attention} does not use the {fam} circuit "
                            f"(it reads: {', '.join(families) or 'no circuit'})")
        ft = design_field(name)
        if ft is None:
            m = _deep_copy(design_base)
            _set(m, name, 0)
            try:
                Design.from_mapping(m)
            except AnalogAttnError as e:
                raise SpecError(f"{where}: {e}") from None
            raise SpecError(f"{where}: not a design parameter")
        fld, typ = ft[0], _base(ft[1])
        if typing.get_origin(typ) is tuple:
            raise SpecError(f"{where}: a list-valued design key cannot be an axis")

        def check(v):
            m = _deep_copy(design_base)
            _set(m, name, v)
            try:
                Design.from_mapping(m)
            except ParameterError as e:
                raise ParameterError(where, e.value, e.allowed) from None
            except AnalogAttnError as e:
                raise SpecError(f"{where}: {e}") from None
    return fld, typ, check


def _axis_values(name, where, val, fld, typ, check, strategy) -> Axis:
    if isinstance(val, list):
        if not val:
            raise SpecError(f"{where} is empty: give at least one value")
        vals = []
        for i, v in enumerate(val):
            if isinstance(v, (list, dict)):
                raise SpecError(f"{where}[{i}] = {_short(v)}: a value, not a {type(v).__name__}")
            check(v)
            vals.append(typ(v) if typ in (int, float) and not isinstance(v, bool) else v)
        if len(set(map(repr, vals))) != len(vals):
            raise SpecError(f"{where} lists a value twice: {_short(val)}")
        return Axis(name, values=tuple(vals), kind=typ)
    extra = sorted(set(val) - {"low", "high", "log", "steps"})
    if extra:
        raise SpecError(f"{where}: unknown range key {extra[0]!r} (known: low, high, log, steps)")
    if typ not in (int, float) or fld.metadata.get("choices") is not None:
        raise SpecError(f"{where}: a range needs a numeric parameter; give a list of values "
                        f"({_fmt_range(fld.metadata)})")
    if "low" not in val or "high" not in val:
        raise SpecError(f"{where}: a range needs both low and high")
    lo, hi, log = val["low"], val["high"], val.get("log", False)
    for k, v in (("low", lo), ("high", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ParameterError(f"{where}.{k}", v, f"a number, {_fmt_range(fld.metadata)}")
        try:
            check(typ(v))
        except ParameterError as e:
            raise ParameterError(f"{where}.{k}", e.value, e.allowed) from None
    if not isinstance(log, bool):
        raise ParameterError(f"{where}.log", log, "true or false")
    if not lo < hi:
        raise SpecError(f"{where}: low ({lo:g}) must be below high ({hi:g})")
    if log and lo <= 0:
        raise ParameterError(f"{where}.low", lo, "above 0 for a log range")
    steps = val.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10000):
        raise ParameterError(f"{where}.steps", steps, "a whole number, 1 to 10,000")
    if strategy == "grid" and steps is None:
        raise SpecError(f"{where}: a range axis of a grid needs steps (values between low and high)")
    return Axis(name, low=typ(lo), high=typ(hi), log=log, steps=steps, kind=typ)


LINK_FORM = '{ follow = "<an axis of [axes]>", scale = <number above 0> }'


def _flatten_links(t: dict, prefix=""):
    for k, v in t.items():
        name = prefix + k
        if isinstance(v, dict) and not ({"follow", "scale"} & set(v)) and v:
            yield from _flatten_links(v, name + ".")
        else:
            yield name, v


def _links(t, axes, attention, families, leaf_names, design_base, kernel_fixed) -> list[Link]:
    """[axes.links]: each key follows an axis (``value = scale x axis value``), checked against its
    own parameter's range at every value the axis takes."""
    if not isinstance(t, dict):
        raise SpecError(f"axes.links = {_short(t)}: a table of linked keys, each {LINK_FORM}")
    by_name = {a.name: a for a in axes}
    out: list[Link] = []
    items = list(_flatten_links(t))
    linked = {n for n, _ in items}
    for name, v in items:
        where = f"axes.links.{name}"
        if not isinstance(v, dict):
            raise SpecError(f"{where} = {_short(v)}: a link is a table {LINK_FORM}")
        extra = sorted(set(v) - {"follow", "scale"})
        if extra:
            raise SpecError(f"{where}: unknown link key {extra[0]!r} (known: follow, scale)")
        if name in by_name:
            raise SpecError(f"{where}: {name} is an axis already; a key is either swept or linked")
        if any(lk.name == name for lk in out):
            raise SpecError(f"{where}: linked twice")
        follow = v.get("follow")
        names = ", ".join(by_name)
        if follow is None:
            raise SpecError(f"{where}: a link needs follow = the axis it scales with ({names})")
        if not isinstance(follow, str):
            raise SpecError(f"{where}.follow = {_short(follow)}: the name of an axis of [axes] ({names})")
        if follow not in by_name:
            what = "a linked key; link to an axis" if follow in linked else "not an axis of [axes]"
            raise SpecError(f"{where}.follow = {follow!r}: {what} (axes: {names})")
        scale = v.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ParameterError(f"{where}.scale", scale, "a number above 0")
        fld, typ, check = _key(name, where, attention, families, leaf_names, design_base, kernel_fixed)
        if typ not in (int, float) or fld.metadata.get("choices") is not None:
            raise SpecError(f"{where}: a {getattr(typ, '__name__', typ)} parameter; "
                            "only a number can be linked")
        lead = by_name[follow]
        if lead.kind not in (int, float) or (lead.values is not None and any(
                isinstance(x, bool) or not isinstance(x, (int, float)) for x in lead.values)):
            raise SpecError(f"{where}.follow = {follow!r}: that axis is not numeric; a link scales a number")
        lk = Link(name, follow, float(scale), typ)
        for x in (lead.values if lead.values is not None else (lead.low, lead.high)):
            y = lk.value(x)
            try:
                check(y)
            except ParameterError as e:
                raise ParameterError(where, e.value, f"{e.allowed}; it is {scale:g} x {follow} = {x!r}") from None
        out.append(lk)
    return out
