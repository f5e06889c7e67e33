"""Composed kernel configurations: a kernel's options as a few frozen sub-configs (converters,
array, noise, calibration, ...), each a :class:`~analogattn.params.Validated` dataclass whose
fields carry ``param`` metadata (unit, range or choices, doc).

A composed config is built

- from its sub-configs: ``GainCellConfig(array=GainCellArray(storage_levels=32))``;
- from leaf values, routed to the sub-config that owns them: ``GainCellConfig(storage_levels=32)``
  (leaf names are unique within one kernel's tree, checked when the class is defined; a few
  old flat names are accepted through ``ALIASES``);
- from nested tables: ``from_dict({"array": {"storage_levels": 32}})`` or ``from_toml(path)``
  (unknown keys and bad values are one-line errors naming the table and key).

Reading a leaf through the composed config (``cfg.storage_levels``) is the same as through its
sub-config (``cfg.array.storage_levels``).
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import ClassVar

from ..errors import DesignFileError, ParameterError
from ..params import Validated


def sections(cls) -> list[tuple[str, type]]:
    """(field name, sub-config class) of a composed config class, in order."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def leaf_fields(cls) -> list[tuple[str, dataclasses.Field]]:
    """(section, field) of every leaf option, in order: what a command line or a TOML file sets."""
    return [(name, f) for name, sub in sections(cls) for f in dataclasses.fields(sub)]


class ComposedConfig(Validated):
    """Base of a kernel's composed config. Subclasses are ``@dataclass(frozen=True, init=False)``
    with one field per section (a Validated dataclass, defaulted by ``default_factory``)."""

    # old flat name -> leaf name (kept for callers written against the flat configs)
    ALIASES: ClassVar[dict] = {}

    def __init__(self, **values):
        secs = sections(type(self))
        owner = self._owner()
        parts = {name: values.pop(name) for name, _ in secs if name in values}
        leaves: dict = {}
        for key, value in values.items():
            leaf = self.ALIASES.get(key, key)
            if leaf not in owner:
                raise ParameterError(key, value, f"an option of {type(self).__name__} "
                                     f"(known: {', '.join(sorted(owner))})")
            if leaf in leaves and leaves[leaf] != value:
                raise ParameterError(key, value, f"the same value as {leaf} = {leaves[leaf]!r}")
            leaves[leaf] = value
        for name, cls in secs:
            sub = parts.get(name)
            if sub is None:
                sub = cls()
            elif isinstance(sub, dict):
                sub = cls.from_dict(sub, name)
            changes = {k: v for k, v in leaves.items() if owner[k] == name}
            if changes:
                sub = dataclasses.replace(sub, **changes)
            object.__setattr__(self, name, sub)
        self.__post_init__()

    @classmethod
    def _owner(cls) -> dict:
        """leaf name -> its section (the class's leaf names must be unique)."""
        owner: dict = {}
        for sec, f in leaf_fields(cls):
            if f.name in owner:
                raise TypeError(f"{cls.__name__}: option {f.name!r} in both {owner[f.name]!r} and {sec!r}")
            owner[f.name] = sec
        return owner

    def __getattr__(self, name):  # only called when normal lookup fails: a leaf or an old name
        if name.startswith("_"):
            raise AttributeError(name)
        leaf = type(self).ALIASES.get(name, name)
        for sec, _ in sections(type(self)):
            sub = self.__dict__.get(sec)
            if sub is not None and leaf in {f.name for f in dataclasses.fields(sub)}:
                return getattr(sub, leaf)
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")

    def leaves(self) -> dict:
        """{leaf name: value} over every section."""
        return {f.name: getattr(getattr(self, sec), f.name) for sec, f in leaf_fields(type(self))}

    def to_json(self) -> str:
        """The leaves as sorted JSON (flat: leaf names are unique, so a calibration file's header
        names a differing option by its leaf name)."""
        return self.leaves_json()

    def leaves_json(self, drop=()) -> str:
        """The leaves as sorted JSON (calibration-file headers name a differing leaf this way)."""
        return json.dumps({k: v for k, v in self.leaves().items() if k not in drop}, sort_keys=True)

    @classmethod
    def from_toml(cls, path):
        """A config from a TOML file of nested tables (``[array]``, ``[converters]`` ...)."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DesignFileError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DesignFileError(f"{p}: not readable ({type(e).__name__})") from None
        except tomllib.TOMLDecodeError as e:
            raise DesignFileError(f"{p}: not valid TOML ({e})") from None
        try:
            return cls.from_dict(data)
        except (DesignFileError, ParameterError) as e:
            raise DesignFileError(f"{p}: {e}") from None
