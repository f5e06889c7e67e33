"""Replace a file in one step: write a temporary file beside it, fsync, rename over it. A run
killed at any moment leaves either the old file or the new one, never a torn one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def replacing(path):
    """``with replacing(p) as tmp: write tmp`` -> tmp moved over p on success, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def open_hdf5(path, what: str, hint: str, error=None):
    """Open an HDF5 file for reading, or raise a one-line error naming ``what`` it should be."""
    import h5py

    from .errors import AnalogAttnError
    error = error or AnalogAttnError
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist ({hint})")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise error(f"{what} {path} is truncated or corrupted ({str(e).splitlines()[0]})") from None
