"""ngspice in process through PySpice's shared-library binding, one instance per process.

PySpice 1.5 treats every stderr line that does not start with "Warning:" as an error and
raises. ngspice 42+ prints harmless lines there ("Using SPARSE 1.3 as Direct Linear Solver",
"Note: ..."), so :func:`classify_stderr` decides what really is an error, and
:class:`Simulator` raises only on those.
"""
from __future__ import annotations

import logging
import os
import re

import numpy as np

from ..errors import SimulatorError

log = logging.getLogger(__name__)

# stderr lines ngspice prints that are information, not failure.
_BENIGN = [
    re.compile(r"^\s*$"),
    re.compile(r"^Using SPARSE \d+(\.\d+)* as Direct Linear Solver", re.I),
    re.compile(r"^Using KLU as Direct Linear Solver", re.I),
    re.compile(r"^Note:", re.I),
    re.compile(r"^Warning:", re.I),
    re.compile(r"^\s*Reference value\s*:", re.I),
    re.compile(r"^doAnalyses: TRAN:\s+Timestep too small", re.I),  # reported as failure below
]
_FAILURE = [
    re.compile(r"timestep too small", re.I),
    re.compile(r"(no convergence|singular matrix|gmin stepping failed|source stepping failed|"
               r"iteration limit reached|simulation\(s\) aborted|run simulation\(s\) aborted)", re.I),
]


_ERROR = re.compile(r"(error|fatal|unknown|not found|cannot|can't|could not|unable|illegal|"
                    r"undefined|no such|abort)", re.I)


def classify_stderr(line: str) -> str:
    """'failure' (convergence trouble), 'benign' (information) or 'error' (anything else).

    Warnings are benign even when they mention trouble ngspice then recovers from (gmin steps);
    a real failure shows as an aborted analysis."""
    if line.lstrip().lower().startswith("warning:"):
        return "benign"
    if any(p.search(line) for p in _FAILURE):
        return "failure"
    if any(p.search(line) for p in _BENIGN):
        return "benign"
    # ngspice also reports progress on stderr ("Trying gmin = ...", "Supplies reduced to ...",
    # "Dynamic gmin stepping completed"): only lines that say something went wrong are errors.
    if _ERROR.search(line):
        return "error"
    return "benign"


class SimulationFailed(Exception):
    """ngspice did not converge (or aborted) on this analysis."""


def _load_shared():
    os.environ.setdefault("PYSPICE_NO_LOGGING", "1")
    logging.getLogger("PySpice").setLevel(logging.CRITICAL)
    try:
        from PySpice.Spice.NgSpice.Shared import NgSpiceShared, ffi_string_utf8
    except ImportError as e:  # pragma: no cover - depends on the install
        raise SimulatorError(f"PySpice is not installed ({e}); pip install PySpice") from None

    class _Shared(NgSpiceShared):
        """NgSpiceShared whose stderr handling follows classify_stderr."""

        @staticmethod
        def _send_char(message_c, ngspice_id, user_data):
            from PySpice.Spice.NgSpice.Shared import ffi
            self = ffi.from_handle(user_data)
            message = ffi_string_utf8(message_c)
            prefix, _, content = message.partition(" ")
            if prefix == "stderr":
                self._stderr.append(content)
                kind = classify_stderr(content)
                if kind == "failure":
                    self._failed = True
                elif kind == "error":
                    self._error_in_stderr = True
            else:
                self._stdout.append(content)
                low = content.lower()
                if "error" in low and "error(s)" not in low:
                    self._error_in_stdout = True
                if any(p.search(content) for p in _FAILURE):
                    self._failed = True
            return 0

    return _Shared


class Simulator:
    """One ngspice per process (:meth:`get`): :meth:`load` a netlist, run analyses and other
    ngspice commands with :meth:`command` (SimulationFailed on convergence failure), then copy
    result vectors of the last plot out with :meth:`vectors`."""

    _instance = None

    def __init__(self):
        cls = _load_shared()
        lib = os.environ.get("NGSPICE_LIBRARY_PATH")
        if lib:
            cls.LIBRARY_PATH = lib
        try:
            self.ng = cls.new_instance()
        except OSError as e:
            raise SimulatorError(
                f"cannot load ngspice's shared library ({e}); install libngspice0 and "
                "libngspice0-dev (Debian/Ubuntu) or set NGSPICE_LIBRARY_PATH") from None
        self.ng._failed = False
        self.version = str(self.ng.ngspice_version)
        self.runs = 0

    @classmethod
    def get(cls) -> "Simulator":
        if cls._instance is None:
            cls._instance = Simulator()
        return cls._instance

    def load(self, netlist: str) -> None:
        self.ng.destroy()
        self.ng.remove_circuit() if self.runs else None
        self.ng._failed = False
        # a placeholder (a netlist built without Technology.finish()) is finished here; a netlist
        # finished on another machine gets this machine's model files (PDK location, trimmed copies)
        from ..circuits.process_table import localize
        netlist = localize(netlist)
        self._settings(netlist)
        self._forget_options(netlist)
        self.ng.load_circuit(netlist)
        self.runs += 1

    _SET = re.compile(r"^\*analogattn:set (\w+)(?:=(\S+))?\s*$", re.M)
    _OPTIONS = re.compile(r"^\s*\.options?\s+(.*)$", re.M | re.I)

    def _forget_options(self, netlist: str) -> None:
        """ngspice keeps a netlist's ``.option`` values as shell variables for every later
        circuit of the process: a SKY130 netlist's ``scale=1.0u`` (or ``gmin``, ``seed``) would
        rescale the next built-in netlist's sizes (L = 0.06u -> 0.06 pm: 'effective channel
        length <= 0') in a recycled worker. Options an earlier netlist set and this one does not
        are unset before it is parsed."""
        names = {tok.split("=")[0].strip().lower() for m in self._OPTIONS.finditer(netlist)
                 for tok in m.group(1).split() if tok.strip()}
        from PySpice.Spice.NgSpice.Shared import NgSpiceCommandError
        for name in sorted(getattr(self, "_options", set()) - names):
            try:
                self.ng.exec_command(f"unset {name}")
            except NgSpiceCommandError:  # an option ngspice did not keep as a variable
                pass
        self._options = names

    def _settings(self, netlist: str) -> None:
        """ngspice variables a netlist asks for (``*analogattn:set ngbehavior=hsa``, what a PDK's
        .spiceinit sets), set before it is parsed; those an earlier netlist set are unset."""
        want = {m.group(1): m.group(2) for m in self._SET.finditer(netlist[:4000])}
        for name in set(getattr(self, "_set", {})) - set(want):
            self.ng.exec_command(f"unset {name}")
        for name, value in want.items():
            if getattr(self, "_set", {}).get(name, object()) != value:
                self.ng.exec_command(f"set {name}" + (f"={value}" if value is not None else ""))
        self._set = want

    def command(self, cmd: str) -> None:
        """Run an ngspice command; raise SimulationFailed on convergence failure."""
        from PySpice.Spice.NgSpice.Shared import NgSpiceCommandError
        self.ng._failed = False
        try:
            self.ng.exec_command(cmd)
        except NgSpiceCommandError:
            if self.ng._failed:
                raise SimulationFailed(f"{cmd}: " + " | ".join(self.ng._stderr[-3:])) from None
            raise
        if self.ng._failed:
            raise SimulationFailed(f"{cmd}: " + " | ".join(self.ng._stderr[-3:]))

    def vectors(self, names: list[str]) -> dict[str, np.ndarray]:
        """Real vectors of the current plot, copied out of ngspice."""
        from PySpice.Spice.NgSpice.Shared import ffi
        lib = self.ng._ngspice_shared
        plot = self.ng.last_plot
        out = {}
        for n in names:
            info = lib.ngGet_Vec_Info(f"{plot}.{n}".encode())
            if info == ffi.NULL:
                raise KeyError(f"vector {n} not in plot {plot}")
            length = info.v_length
            if info.v_realdata != ffi.NULL:
                buf = ffi.buffer(info.v_realdata, length * 8)
                out[n] = np.frombuffer(buf, dtype=np.float64).copy()
            else:
                buf = ffi.buffer(info.v_compdata, length * 16)
                out[n] = np.frombuffer(buf, dtype=np.complex128).real.copy()
        return out
