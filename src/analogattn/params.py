"""Frozen, validated parameter classes.

Every numeric field carries a unit and an allowed range in its metadata (use :func:`param`).
Instances validate themselves on construction, so a bad value raises :class:`ParameterError`
naming the field and the range. A parameter set's cache key and name derive from its content
(:func:`digest`), never by hand.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from typing import Any

from .errors import DesignFileError, ParameterError


def param(default, unit: str = "", lo=None, hi=None, doc: str = "", choices=None, off=None,
          lo_open: bool = False, hi_open: bool = False):
    """A dataclass field with unit and range [lo, hi] (None = unbounded; ``lo_open``/``hi_open``
    exclude the end), or a set of choices. ``off``: one more allowed value outside the range
    that switches the feature off (e.g. 0 levels = unquantised, while 1 level is meaningless)."""
    return dataclasses.field(
        default=default,
        metadata={"unit": unit, "lo": lo, "hi": hi, "doc": doc, "choices": choices, "off": off,
                  "lo_open": lo_open, "hi_open": hi_open},
    )


def fmt_number(x) -> str:
    """1,048,576 for large whole numbers, %g otherwise."""
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= 10000 else f"{x:g}"


def _fmt_range(meta) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi, unit = meta.get("lo"), meta.get("hi"), meta.get("unit") or ""
    u = f" {unit}" if unit else ""
    lo_op, hi_op = meta.get("lo_open"), meta.get("hi_open")
    if lo is not None and hi is not None:
        if lo_op or hi_op:
            text = (f"{'above' if lo_op else 'from'} {fmt_number(lo)} {'and below' if hi_op else 'to'} "
                    f"{fmt_number(hi)}{u}")
        else:
            text = f"{fmt_number(lo)} to {fmt_number(hi)}{u}"
    elif lo is not None:
        text = f"{'>' if lo_op else '>='} {fmt_number(lo)}{u}"
    elif hi is not None:
        text = f"{'<' if hi_op else '<='} {fmt_number(hi)}{u}"
    else:
        text = "any value"
    if meta.get("off") is not None:
        text += f", or {fmt_number(meta['off'])} (off)"
    return text


def _outside(value, meta) -> bool:
    lo, hi = meta.get("lo"), meta.get("hi")
    if value == meta.get("off"):
        return False
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        return True
    return hi is not None and (value > hi or (meta.get("hi_open") and value == hi))


def _check_scalar(name: str, value, meta, typ) -> Any:
    choices = meta.get("choices")
    if choices is not None:
        if value not in choices:
            raise ParameterError(name, value, _fmt_range(meta))
        return value
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(name, value, f"a number, {_fmt_range(meta)}")
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ParameterError(name, value, f"a whole number, {_fmt_range(meta)}")
        try:
            value = typ(value)
            if not math.isfinite(value):
                raise OverflowError
        except (OverflowError, ValueError):  # inf, nan, or an integer too large for a float
            raise ParameterError(name, value, _fmt_range(meta)) from None
        if _outside(value, meta):
            raise ParameterError(name, value, _fmt_range(meta))
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ParameterError(name, value, "true or false")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ParameterError(name, value, "a string")
        return value
    return value


def validate(obj, prefix: str = "") -> None:
    """Check and normalise every field of a frozen dataclass instance in place."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name = prefix + f.name
        value = getattr(obj, f.name)
        typ = hints[f.name]
        origin = typing.get_origin(typ)
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, typ):
                raise ParameterError(name, value, f"a {typ.__name__} table")
            continue
        if origin is tuple:
            (elem,) = {a for a in typing.get_args(typ) if a is not Ellipsis}
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ParameterError(name, value, f"a list, each {_fmt_range(f.metadata)}")
            vals = tuple(_check_scalar(f"{name}[{i}]", v, f.metadata, elem) for i, v in enumerate(value))
            if len(vals) == 0:
                raise ParameterError(name, value, "a non-empty list")
            object.__setattr__(obj, f.name, vals)
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(typ) if a is not type(None)]
            if value is None:
                continue
            typ = args[0]
        object.__setattr__(obj, f.name, _check_scalar(name, value, f.metadata, typ))


class Validated:
    """Mixin: validates on construction; JSON/TOML round trip; content digest."""

    def __post_init__(self):
        validate(self)
        self.check()

    def check(self) -> None:  # cross-field rules, overridden where needed
        pass

    def check_given(self, given: set) -> None:
        """Cross-field rules that apply only when the user set these fields (``given``: the keys
        of the table read from the design): a default that the other fields adapt (a default
        list filtered to the array's size) is not the user's mistake. Overridden where needed."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, where: str = ""):
        """Build from a (possibly partial) mapping; unknown keys are errors."""
        if not isinstance(data, dict):
            raise DesignFileError(f"[{where or cls.__name__}] must be a table of keys (got {_short(data)})")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DesignFileError(
                f"unknown key {where + '.' if where else ''}{unknown[0]} "
                f"(known keys: {', '.join(sorted(names))})"
            )
        kwargs = {}
        for k, v in data.items():
            typ = hints[k]
            if dataclasses.is_dataclass(typ):
                kwargs[k] = typ.from_dict(v, f"{where}.{k}" if where else k)
            elif typing.get_origin(typ) is tuple and isinstance(v, list):
                kwargs[k] = tuple(v)
            else:
                kwargs[k] = v
        try:
            obj = cls(**kwargs)
            obj.check_given(set(data))
            return obj
        except ParameterError as e:
            if where:
                raise ParameterError(f"{where}.{e.field}", e.value, e.allowed) from None
            raise
        except DesignFileError as e:
            if where:
                raise DesignFileError(f"{where}: {e}") from None
            raise

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def describe(self) -> list[tuple[str, Any, str, str]]:
        """(field, value, unit, allowed range) rows, for docs and --help."""
        rows = []
        for f in dataclasses.fields(self):
            rows.append((f.name, getattr(self, f.name), f.metadata.get("unit", ""), _fmt_range(f.metadata)))
        return rows


def _short(value, n: int = 60) -> str:
    """A value for a one-line message: its repr, cut to ``n`` characters."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def digest(*parts: str | bytes, n: int = 16) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:n]
