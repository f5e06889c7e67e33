"""One on-disk cache stamp for a whole package of numba functions.

numba keys each cached function on a stamp of *its own* source file. The functions here inline
helpers from a sibling file (``common.exp32``, ``_key``, ``_lane_max``, ``normals``), so after a
helper changed (an upgrade, an edit in a checkout) the callers in ``ideal.py``, ``gaincell.py``
and ``sprint.py`` went on loading machine code built from the old helper: stale numbers with no
warning (seen in round 12 of #17 while measuring). :func:`install` registers cache locators that
stamp every function defined in a directory with a hash of all that directory's ``.py`` files,
so changing any of them recompiles all of them. Locations are numba's own (``NUMBA_CACHE_DIR``
when set, else the package's ``__pycache__``, else the user-wide cache).
"""
from __future__ import annotations

import hashlib
import os

from numba.core import caching

_DIRS: dict[str, str] = {}  # directory -> hash of its sources


def sources_hash(directory: str) -> str:
    """sha256 over the names and bytes of every ``.py`` file in ``directory`` (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            with open(os.path.join(directory, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


class _PackageStamp:
    """Mixin for numba's source-file locators: only functions from a registered directory, whose
    stamp is the hash of the whole directory."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) not in _DIRS:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return _DIRS[os.path.dirname(os.path.abspath(self._py_file))]


def _base(name):  # numba >= 0.62 dropped the leading underscore of these names
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class _UserProvided(_PackageStamp, _base("UserProvidedCacheLocator")):
    pass


class _InTree(_PackageStamp, _base("InTreeCacheLocator")):
    pass


class _UserWide(_PackageStamp, _base("UserWideCacheLocator")):
    pass


def install(directory: str) -> None:
    """Stamp the numba functions of ``directory`` with :func:`sources_hash` of it. Call before
    the modules defining them are imported (``cache=True`` picks the locator at decoration)."""
    _DIRS[os.path.abspath(directory)] = sources_hash(directory)
    impl = _base("CacheImpl")
    mine = [_UserProvided, _InTree, _UserWide]
    if impl._locator_classes[:3] != mine:
        impl._locator_classes = mine + [c for c in impl._locator_classes if c not in mine]
