"""What a user sees when something goes wrong, and the checks that run before any work.

- :func:`report_crash`: an exception that is not the user's fault prints one line naming the log
  file that holds the full traceback (``--debug`` or ``ANALOGATTN_DEBUG=1`` shows it instead).
- :func:`check_input_file` / :func:`check_output_file` / :func:`check_output_dir`: files are
  checked for existence, type, readability/writability before work starts; an output that exists
  but is not one of ours is refused, never overwritten (``is_*``: what counts as ours).
"""
from __future__ import annotations

import datetime
import os
import tempfile
import traceback
from pathlib import Path
from typing import Callable

from .errors import AnalogAttnError


def log_dir() -> Path:
    return Path(tempfile.gettempdir()) / "analogattn-logs"


def report_crash(exc: BaseException, argv) -> str:
    """Write the traceback to a log file; return the one line to print."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = d / f"{stamp}-{os.getpid()}.log"
        with open(path, "w") as f:
            f.write("analogattn " + " ".join(map(str, argv)) + "\n\n")
            f.write("".join(traceback.format_exception(exc)))
        where = f"full traceback in {path}"
    except OSError:
        where = "no log could be written"
    return f"analogattn: internal error: {type(exc).__name__}: {first} ({where}; --debug shows it here)"


def user_cache_dir(env_var: str, name: str) -> Path:
    """``$<env_var>`` when set and not empty, else ``<$XDG_CACHE_HOME or ~/.cache>/analogattn/<name>``
    (the task cache, the PDK's prepared model files)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "analogattn" / name


def check_input_file(path, flag: str, what: str = "file") -> Path:
    """An existing, readable regular file, or a one-line error naming ``flag``."""
    if not str(path).strip():  # Path("") is ".", which would be reported as a directory
        raise AnalogAttnError(f"{flag} '': an empty path, not a {what}")
    p = Path(path)
    if not p.exists():
        raise AnalogAttnError(f"{flag} {p}: no such {what}")
    if p.is_dir():
        raise AnalogAttnError(f"{flag} {p}: is a directory, not a {what}")
    if not os.access(p, os.R_OK):
        raise AnalogAttnError(f"{flag} {p}: not readable (permission denied)")
    return p


def check_output_file(path, flag: str, what: str, is_ours: Callable[[Path], bool] | None = None) -> Path:
    """A path we may write ``what`` to (see :func:`analogattn.atomic.check_writable_output`)."""
    from .atomic import check_writable_output
    if str(path) == "" or Path(path).name in ("", ".", ".."):
        raise AnalogAttnError(f"{flag} {path!r}: not a file name for the {what}")
    return check_writable_output(path, flag, is_ours)


def check_output_dir(path, flag: str) -> Path:
    """A folder we may write into: an existing writable folder, or one whose parent folder
    exists and is writable (then created later, by the command, once its checks passed). An
    empty name is refused: ``Path("")`` is the current folder."""
    if str(path) == "":
        raise AnalogAttnError(f"{flag} '': empty (give a folder name)")
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise AnalogAttnError(f"{flag} {p}: exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise AnalogAttnError(f"{flag} {p}: the folder is not writable")
        return p
    return check_output_file(p, flag, "folder")


def is_hdf5_with_schema(schema: str) -> Callable[[Path], bool]:
    """An HDF5 file whose root attribute ``schema`` is ``schema``."""
    def check(p: Path) -> bool:
        try:
            with open(p, "rb") as fh:
                if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                    return False
            import h5py
            with h5py.File(p, "r") as f:
                return f.attrs.get("schema") == schema
        except Exception:  # noqa: BLE001 -- any unreadable file is "not ours"
            return False
    return check


def is_json(pred: Callable[[object], bool]) -> Callable[[Path], bool]:
    """A JSON file whose content satisfies ``pred`` (an empty file holds nothing to lose)."""
    def check(p: Path) -> bool:
        import json
        try:
            if p.stat().st_size == 0:
                return True
            return bool(pred(json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            return False
    return check


def is_json_with(*keys: str) -> Callable[[Path], bool]:
    """A JSON object holding every one of ``keys``."""
    return is_json(lambda d: isinstance(d, dict) and all(k in d for k in keys))


def is_png(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False
