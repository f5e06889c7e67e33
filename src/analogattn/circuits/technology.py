"""Technology: which model file, corner and device model names a netlist uses."""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from .. import netlists
from ..errors import DesignFileError, ParameterError
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


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")  # a SPICE model or section name (one token)
_MODEL = re.compile(r"^\s*\.model\s+([^\s(]+)", re.I | re.M)
_SECTION = re.compile(r"^\s*\.lib\s+([^\s'\"]+)\s*$", re.I | re.M)  # .lib <section> (a section head)
_REF = re.compile(r"^\s*\.(?:include|inc|lib)\s+['\"]?([^'\"\s]+)['\"]?", re.I | re.M)
MAX_MODEL_BYTES = 256 << 20


def _read_model_text(p: Path, what: str) -> str:
    """Text of a SPICE model file, or a one-line DesignFileError naming it."""
    try:
        if p.stat().st_size > MAX_MODEL_BYTES:
            raise DesignFileError(f"{what} {p} is larger than {MAX_MODEL_BYTES >> 20} MB: not a SPICE model file")
        data = p.read_bytes()
    except OSError as e:
        raise DesignFileError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if b"\0" in data:
        raise DesignFileError(f"{what} {p} is not a text SPICE model file (binary data)")
    return data.decode("utf-8", errors="replace")


def model_names(path: Path, depth: int = 0, seen=None) -> set[str]:
    """Lower-case names of the ``.model`` cards in a SPICE file and the files it includes
    (``.include``/``.lib 'file'``, relative to the including file; sections are not told apart)."""
    seen = set() if seen is None else seen
    path = Path(path)
    key = str(path.resolve())
    if key in seen or depth > 8:
        return set()
    seen.add(key)
    text = _read_model_text(path, "model file" if depth == 0 else "file included by a model file,")
    names = {m.lower() for m in _MODEL.findall(text)}
    for ref in _REF.findall(text):
        q = Path(ref) if Path(ref).is_absolute() else path.parent / ref
        if q.is_file():  # a section head (.lib tt) names no file; a missing include is ngspice's to report
            names |= model_names(q, depth + 1, seen)
    return names


def _has_model(names: set[str], want: str) -> bool:
    """``want`` or binned ``want.1``, ``want.2`` ... (case-insensitive, as ngspice)."""
    w = want.lower()
    return any(n == w or (n.startswith(w + ".") and n[len(w) + 1:].isdigit()) for n in names)


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
        for field in ("nmos", "pmos"):
            if not _NAME.match(getattr(self, field)):
                raise ParameterError(field, getattr(self, field), "a SPICE model name (letters, digits, _ . + -)")
        if self.corner and not _NAME.match(self.corner):
            raise ParameterError("corner", self.corner, "a .lib section name (letters, digits, _ . + -) or \"\"")
        if self.builtin:
            if self.corner not in BUILTIN_CORNERS:
                raise ParameterError("corner", self.corner,
                                     "one of " + ", ".join(BUILTIN_CORNERS))
        else:
            if any(c in self.model_file for c in "'\"\n\r\0"):
                raise ParameterError("model_file", self.model_file, "a path without quotes or line breaks")
            p = Path(self.model_file)
            if not p.is_file():
                raise ParameterError("model_file", self.model_file, "an existing file")
            self.check_model_file()

    def check_model_file(self) -> None:
        """The user's model file is readable text that defines the device models the netlists
        use (``.model <nmos>``, ``.model <pmos>``, case-insensitive, binned ``.1``... accepted)
        and, with a corner, has that ``.lib`` section: checked before any simulation, so a
        wrong file is one line here instead of a failed ngspice worker."""
        p = Path(self.model_file)
        names = model_names(p)
        missing = [n for n in dict.fromkeys((self.nmos, self.pmos)) if not _has_model(names, n)]
        if missing:
            found = ", ".join(sorted(names)[:6]) or "none"
            raise DesignFileError(
                f"model file {p} defines no {' and no '.join('.model ' + n for n in missing)} "
                f"(models found: {found}); set technology.nmos/pmos to its model names or use another model_file")
        if self.corner:
            sections = {m.lower() for m in _SECTION.findall(_read_model_text(p, "model file"))}
            if self.corner.lower() not in sections:
                raise DesignFileError(
                    f"model file {p} has no .lib {self.corner} section (technology.corner = {self.corner!r}); "
                    f"set corner = \"\" to .include the whole file, or one of: {', '.join(sorted(sections)) or 'none'}")

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
