"""The circuit-family registry: one :func:`register` call wires a family into every stage.

A :class:`Family` names, for one circuit family:

- its design-file tables: the circuit parameter class (``[<name>]``) and the sweep class
  (``[<name>.sweep]``), both :class:`~analogattn.params.Validated` dataclasses, and cross-table
  rules (``check_design``);
- its analyses (:class:`AnalysisSpec`: name, the workers its tasks run, the scheduling weight of
  those tasks) and the builder that turns parameters and sweep into
  :class:`~analogattn.characterize.tasks.Analysis` objects; ``analogattn characterize --only``
  offers exactly these names;
- its fit (:class:`FitSpec`: the datasets the fit reads per analysis, the checks, the function
  that returns surrogate models, the model kinds, the validation targets);
- its plot hook and the cost terms (bundle constants) the evaluation reads.

Hooks of higher layers (fit, plots) may be given as ``"module:attribute"`` strings, resolved when
used, so this module (the characterization layer) imports nothing above it. The built-in
families register themselves at the end of their modules (:data:`BUILTIN_MODULES`, imported on
first use of the registry). A new family is one module that defines its circuit, sweep,
workers and builder, plus one ``register(Family(...))`` (see the README's "Adding a circuit
family").
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

BUILTIN_MODULES = ("analogattn.characterize.gaincell", "analogattn.characterize.reram",
                   "analogattn.characterize.comparator")


@dataclasses.dataclass(frozen=True)
class AnalysisSpec:
    """One analysis of a family: its name (the HDF5 group, an ``--only`` choice), the workers
    (``"module:function"``) its tasks run, and the relative run time of one of those tasks
    (tasks of heavier workers are started first); ``default`` False: an opt-in analysis, built only
    when ``--only`` names it."""

    name: str
    workers: tuple[str, ...]
    weight: float = 1.0
    doc: str = ""
    default: bool = True  # False: run only when named (``--only <family>.<analysis>``)


@dataclasses.dataclass(frozen=True)
class FitSpec:
    """What the surrogate fit does with a family.

    reads: {analysis: ({dataset: shape}, {optional dataset: shape})}, a shape a tuple of symbols
    that must agree within the analysis (``()`` = one value); parameters: {analysis: circuit
    parameters read from the group's provenance JSON}; check(checker, data, degree): rules
    across datasets (one-line errors through ``checker.fail``); fit(data, path, degree, surface)
    -> {model name: model}; ``data`` holds the analyses of ``reads`` present in the file;
    models: {model name: allowed kinds}; targets: {model name: (metric, limit)};
    needs: what a file must hold for the family to be fitted (for the "nothing to fit" message)."""

    reads: dict
    fit: Callable | str
    check: Callable | str | None = None
    parameters: dict = dataclasses.field(default_factory=dict)
    models: dict = dataclasses.field(default_factory=dict)
    targets: dict = dataclasses.field(default_factory=dict)
    needs: str = ""


@dataclasses.dataclass(frozen=True)
class CostTerm:
    """A surrogate-bundle model the energy/latency accounting reads (a measured constant)."""

    model: str
    unit: str
    what: str


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    params: type
    sweep: type
    analyses: tuple[AnalysisSpec, ...]
    build: Callable | str  # (params, sweep, only: set | None, sim_options: dict) -> list[Analysis]
    check_design: Callable | str | None = None  # (params, sweep, given_params: set, given_sweep: set)
    fit: FitSpec | str | None = None
    plot: Callable | str | None = None  # (h5py.File, models, outdir: Path, plt) -> list[Path]
    cost_terms: tuple[CostTerm, ...] = ()
    doc: str = ""

    @property
    def analysis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.analyses)

    def analyses_of(self, params, sweep, only=None, sim_options=None) -> list:
        return resolve(self.build)(params, sweep, only, dict(sim_options or {}))

    def fit_spec(self) -> FitSpec | None:
        return resolve(self.fit) if self.fit is not None else None

    def plot_hook(self) -> Callable | None:
        return resolve(self.plot) if self.plot is not None else None


_REGISTRY: dict[str, Family] = {}
_loaded = False


def resolve(ref: Any) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported now); anything else as is."""
    if isinstance(ref, str):
        mod, _, attr = ref.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return ref


def register(family: Family, replace: bool = False) -> Family:
    """Add a family. Its name must be new (``replace=True`` to redefine it) and must not clash
    with the design file's other tables."""
    if family.name in ("simulator",) or not family.name.isidentifier():
        raise ValueError(f"family name {family.name!r}: an identifier other than 'simulator'")
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise ValueError(f"family {family.name!r} is already registered")
    names = [a.name for a in family.analyses]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"family {family.name!r}: analysis names must be unique and at least one")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for m in BUILTIN_MODULES:
            importlib.import_module(m)


def _order(item) -> tuple:
    i, (name, fam) = item
    mod = getattr(resolve(fam.build), "__module__", "") if not isinstance(fam.build, str) else \
        fam.build.partition(":")[0]
    return (BUILTIN_MODULES.index(mod), 0) if mod in BUILTIN_MODULES else (len(BUILTIN_MODULES), i)


def families() -> dict[str, Family]:
    """Every registered family: the built-ins in BUILTIN_MODULES order (whichever module was
    imported first), then the others in registration order."""
    _load_builtins()
    return dict(kv for _, kv in sorted(enumerate(_REGISTRY.items()), key=_order))


def names() -> tuple[str, ...]:
    return tuple(families())


def get(name: str) -> Family:
    fams = families()
    if name not in fams:
        raise KeyError(f"unknown circuit family {name!r} (known: {', '.join(fams)})")
    return fams[name]


def scheduling_weights() -> dict[str, float]:
    """{worker "module:function": weight} over every registered analysis (the largest weight
    where analyses share a worker)."""
    out: dict[str, float] = {}
    for fam in families().values():
        for a in fam.analyses:
            for w in a.workers:
                out[w] = max(out.get(w, a.weight), a.weight)
    return out
