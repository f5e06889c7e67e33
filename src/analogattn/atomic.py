"""Files that survive SIGKILL and concurrent runs.

- :func:`replacing`: write a temporary file beside the target, fsync, rename over it. A run killed
  at any moment leaves either the old file or the new one, never a torn one. The temporary file
  is named ``.<name>.<pid>@<host>-<random>.tmp``; one left by a killed process of this host (its
  pid no longer runs; another host's after an hour) is removed by the next write of the same
  target or by :func:`clean_stale_temps`.
- :func:`exclusive_lock`: an advisory ``fcntl.flock`` on ``<path>.lock``, taken without waiting;
  a second run on the same path is refused with a one-line error.
- :func:`check_writable_output`: refuse an output path that cannot be replaced safely (a
  directory, a missing or read-only parent, an existing file that is not ours) before any work.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

from .errors import AnalogAttnError

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[0-9a-f]{8})-[A-Za-z0-9_]+\.tmp$")
_LEGACY_TMP = re.compile(r"^(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile names of versions before the pid
_OLD_AGE = 3600.0  # s: a temporary file this old whose writer cannot be asked is no write in progress


def _host() -> str:
    """Short tag of this machine: a pid means something only on the host that wrote it (a cache
    folder may be shared over NFS)."""
    import hashlib
    import socket
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def clean_stale_temps(directory, name: str | None = None) -> int:
    """Remove temporary files of :func:`replacing` in ``directory`` (only those of target
    ``name`` if given) whose writing process no longer runs. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    now, host = time.time(), _host()
    for e in entries:
        if not e.name.endswith(".tmp"):
            continue
        m = _TMP.match(e.name) or _LEGACY_TMP.match(e.name)
        if not m or (name is not None and m["name"] != name):
            continue
        if "pid" in m.groupdict() and m["host"] == host:
            if pid_alive(int(m["pid"])):
                continue
        else:
            try:
                if now - e.stat(follow_symlinks=False).st_mtime < _OLD_AGE:
                    continue
            except OSError:
                continue
        try:
            if e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed += 1
        except FileNotFoundError:
            pass
        except OSError:
            pass
    return removed


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(directory) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path):
    """``with replacing(p) as tmp: write tmp`` -> tmp moved over p on success, removed on error.
    The new file keeps the old one's permissions (else the umask's, like a plain ``open``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{_host()}-",
                               suffix=".tmp")
    try:
        os.fchmod(fd, mode)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _cannot_create_in(folder: Path, name: str) -> str | None:
    """Why no file can be created in ``folder`` (None when one can), found by creating and
    removing an empty temporary file named as :func:`replacing` names its temporaries (so a probe
    left by a killed process is cleaned like one). ``os.access`` alone is not enough: it says yes
    to root in a read-only or permission-less folder and in pseudo file systems such as /proc."""
    probe = folder / f".{name}.{os.getpid()}@{_host()}-probe.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(probe)
    return None


def check_writable_output(path, kind: str, is_ours: Callable[[Path], bool] | None = None) -> Path:
    """Raise a one-line :class:`AnalogAttnError` unless ``path`` can be written by
    :func:`replacing` without losing anything: it is not a directory, its parent folder exists
    and is writable, and an existing file there is one ``is_ours(path)`` accepts (a file this
    command may overwrite). ``kind`` names the output in the message ("-o characterization").
    Returns ``path`` as a Path. Leaves nothing behind (a probe file is created and removed)."""
    path = Path(path)
    if path.is_dir():
        raise AnalogAttnError(f"{kind} {path} is a directory (give a file name, e.g. {path / 'out.h5'})")
    parent = path.parent
    if not parent.exists():
        raise AnalogAttnError(f"{kind} {path}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise AnalogAttnError(f"{kind} {path}: {parent} is not a folder")
    why = "permission denied" if not os.access(parent, os.W_OK | os.X_OK) else _cannot_create_in(parent, path.name)
    if why:
        raise AnalogAttnError(f"{kind} {path}: folder {parent} is not writable ({why})")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise AnalogAttnError(f"{kind} {path} exists and is not a regular file; refusing to replace it")
        if is_ours is not None and not is_ours(path):
            raise AnalogAttnError(f"{kind} {path} exists and is not a file this command wrote; "
                                  "refusing to overwrite it (move it away or choose another path)")
    return path


def check_writable_dir(path, kind: str) -> Path:
    """Create folder ``path`` if needed; raise a one-line :class:`AnalogAttnError` if it is a file,
    cannot be created or is not writable. An empty name is refused (``Path("")`` is the current
    folder)."""
    if str(path) == "":
        raise AnalogAttnError(f"{kind} '': empty (give a folder name)")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AnalogAttnError(f"{kind} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnalogAttnError(f"{kind} {path} cannot be created ({e.strerror or e})") from None
    why = "permission denied" if not os.access(path, os.W_OK | os.X_OK) else _cannot_create_in(path, "folder")
    if why:
        raise AnalogAttnError(f"{kind} {path} is not writable ({why})")
    return path


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def exclusive_lock(path, what: str):
    """Hold an advisory lock on ``path`` (the file ``<path>.lock``) for the ``with`` block, or
    raise a one-line :class:`AnalogAttnError` at once if another process holds it. The lock
    file is removed on release; one left by a killed process is harmless (the kernel released
    its lock) and reused."""
    import fcntl

    lock = lock_path(path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as e:
            raise AnalogAttnError(f"{what} {path}: cannot create lock file {lock} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # a file system without locks: go on unlocked rather than refuse every run
                os.close(fd)
                warnings.warn(f"cannot lock {lock} ({e.strerror}); concurrent runs on {path} are not detected")
                yield None
                return
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise AnalogAttnError(f"{what} {path} is locked by another analogattn run{who} "
                                  f"({lock}); wait for it to finish or choose another path") from None
        # the previous holder may have removed (unlinked) the file between our open and flock
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    try:
        yield lock
    finally:
        try:
            os.unlink(lock)  # still holding the lock: a waiter re-checks the inode
        except OSError:
            pass
        os.close(fd)


def open_hdf5(path, what: str, hint: str, error=None):
    """Open an HDF5 file for reading, or raise a one-line error naming ``what`` it should be."""
    import h5py

    error = error or AnalogAttnError
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist ({hint})")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise error(f"{what} {path} is truncated or corrupted ({str(e).splitlines()[0]})") from None
