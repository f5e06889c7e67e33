"""Technology: which model file, corner and device model names a netlist uses."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from .. import netlists
from ..errors import ParameterError
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




@dataclasses.dataclass(frozen=True)
class Technology(Validated):
    """Model file and corner. ``model_file = ""`` means the built-in generic 65-nm BSIM4 card.

    With a user file, a non-empty ``corner`` is used as ``.lib 'file' corner``; an empty
    corner means ``.include 'file'``.
    """

    model_file: str = param("", doc="path to a SPICE model/PDK file; empty = built-in 65-nm card")
    corner: str = param("tt", doc="process corner (built-in: tt, ff, ss, fs, sf)")
    nmos: str = param("nch", doc="NMOS model name in the model file")
    pmos: str = param("pch", doc="PMOS model name in the model file")

    def check(self):
        if self.builtin:
            if self.corner not in BUILTIN_CORNERS:
                raise ParameterError("corner", self.corner,
                                     "one of " + ", ".join(BUILTIN_CORNERS))
        else:
            p = Path(self.model_file)
            if not p.is_file():
                raise ParameterError("model_file", self.model_file, "an existing file")

    @property
    def builtin(self) -> bool:
        return self.model_file == ""

    @property
    def path(self) -> Path:
        return netlists.path(netlists.BUILTIN_MODEL) if self.builtin else Path(self.model_file).resolve()

    def digest(self) -> str:
        # hashed every time: model files are small, and a stale digest would poison the cache
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def header(self) -> str:
        """Netlist lines that bring the device models in."""
        if self.builtin:
            dn, dp = BUILTIN_CORNERS[self.corner]
            return f".param dvthn={dn} dvthp={dp}\n.include '{self.path}'\n"
        if self.corner:
            return f".lib '{self.path}' {self.corner}\n"
        return f".include '{self.path}'\n"
