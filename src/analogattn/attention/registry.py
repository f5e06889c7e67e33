"""The kernel registry: per attention kernel its name, composed config class, builder,
calibration, cost model, comparison settings and whether it needs a surrogate bundle.

Everything that offers a choice of kernel goes through here (the command line's ``--attention``,
:mod:`analogattn.evaluate.cost`, :mod:`analogattn.evaluate.compare`), so a new kernel is one new
package plus one :func:`register` call.

How to add a kernel
-------------------
1. A config: a ``@dataclass(frozen=True, init=False)`` subclass of
   :class:`~analogattn.attention.config.ComposedConfig` whose fields are sections, each a frozen
   :class:`~analogattn.params.Validated` dataclass of ``param`` fields (unit, range, doc); leaf
   names unique in the tree (the command line makes one flag per leaf).
2. The kernel: an :class:`~analogattn.attention.base.AttentionKernel` (``new_cache``,
   ``__call__`` or ``attend``), arrays in, arrays out, observed through a ``recorder`` argument.
3. ``build(model, bundle, config, calibration_windows, cal_file=None, log=None) -> kernel``:
   adapt the bundle, calibrate (through :mod:`analogattn.attention.capture`; load or write
   ``cal_file``), construct.
4. ``cost(model_config, context, bundle=None, kernel=None, stats=None, dc=DigitalCosts())`` ->
   the dict of :func:`analogattn.attention.costs.result`.
5. Optionally ``comparison(ctx)``: yields (setting, kernel) pairs for the comparison table, and
   ``summary(kernel)``: a dict of run statistics (``kept_fraction`` and ``softmax_mass_kept`` fill
   the table's columns), stored in a row under ``summary_key``.
6. ``register(KernelSpec(...))``. ``tests/test_registry.py`` shows a toy kernel end to end.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Iterator

from ..errors import AnalogAttnError


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class ComparisonContext:
    """What a kernel's comparison settings may use: the model, calibration windows, bundle and
    the comparison's options (``levels``, ``keeps``, ``masses``, ...), and ``captured``: the ideal
    model's q, k, v on the calibration windows, captured once for every kernel (:meth:`captured`)."""

    model: object
    cal_windows: list
    bundle: object
    out_dir: Path
    window: int
    options: dict
    log: Callable = print
    _captured: object = None

    def captured(self):
        if self._captured is None:
            from .capture import capture
            self._captured = capture(self.model, self.cal_windows)
        return self._captured


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    name: str
    doc: str
    config: type                     # composed config class (a ComposedConfig subclass)
    make: Callable                   # (model, bundle, config, calibration_windows, cal_file, log) -> kernel
    cost: Callable                   # (model_config, context, bundle, kernel, stats, dc) -> cost dict
    needs_bundle: bool = False
    needs_calibration: bool = False  # build needs calibration windows (or an existing cal_file)
    calibrate: Callable | None = None  # the kernel's calibration entry point (see its package)
    comparison: Callable | None = None  # (ComparisonContext) -> iterator of (setting, kernel)
    summary: Callable = lambda kernel: None  # run statistics of a kernel, or None
    summary_key: str = "stats"

    def build(self, model, bundle=None, config=None, calibration_windows=(), cal_file: Path | None = None,
              log: Callable = log_stderr):
        """A ready kernel: ``config`` (default: the config class's defaults), calibrated on the
        token windows ``calibration_windows``, or loaded from ``cal_file`` when it exists (written
        there after calibrating otherwise); ``log`` gets one line per file read or written."""
        if self.needs_bundle and bundle is None:
            raise AnalogAttnError(f"--attention {self.name} needs --surrogates FILE (made by: analogattn fit)")
        config = self.config() if config is None else config
        if not isinstance(config, self.config):
            raise AnalogAttnError(f"kernel {self.name}: config must be a {self.config.__name__}, "
                                  f"not {type(config).__name__}")
        cal_file = Path(cal_file) if cal_file is not None else None
        if (self.needs_calibration and not list(calibration_windows)
                and not (cal_file is not None and cal_file.exists())):
            raise AnalogAttnError(f"--attention {self.name} needs calibration text (no calibration windows)")
        return self.make(model, bundle, config, list(calibration_windows), cal_file, log)

    def options(self):
        """(section, dataclasses.Field) of every leaf option of the config."""
        from .config import leaf_fields
        return leaf_fields(self.config)


_KERNELS: dict[str, KernelSpec] = {}
_loaded = False


def _builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import ideal_spec
        from .gaincell import spec as gaincell_spec
        from .sprint import spec as sprint_spec
        for spec in (ideal_spec.SPEC, sprint_spec.SPEC, gaincell_spec.SPEC):
            _KERNELS.setdefault(spec.name, spec)


def register(spec: KernelSpec, replace: bool = False) -> KernelSpec:
    """Add a kernel (after the built-in ones, in registration order)."""
    _builtins()
    if spec.name in _KERNELS and not replace:
        raise ValueError(f"kernel {spec.name!r} is already registered")
    _KERNELS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _builtins()
    _KERNELS.pop(name, None)


def get(name: str) -> KernelSpec:
    _builtins()
    if name not in _KERNELS:
        raise AnalogAttnError(f"--attention {name!r} is not available (allowed: {', '.join(_KERNELS)})")
    return _KERNELS[name]


def names() -> tuple[str, ...]:
    _builtins()
    return tuple(_KERNELS)


def specs() -> Iterator[KernelSpec]:
    _builtins()
    return iter(list(_KERNELS.values()))
