"""SPICE model cards and subcircuits shipped as package data."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(name: str) -> Path:
    """Absolute path of a shipped netlist file."""
    return Path(str(resources.files(__name__).joinpath(name)))


BUILTIN_MODEL = "ptm65_bsim4.lib"
