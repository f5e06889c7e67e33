"""The on-disk numba cache of the fused loops must follow edits to *any* file of the package.

numba stamps a cached function with its own source file only; a function inlining a helper from a
sibling file keeps the old machine code after the helper changes. A throwaway package (helper in
one file, cached caller in another) is compiled in one process, the helper is edited, and a second
process must see the new helper: with :func:`_cache.install` it does, without it (the control,
numba's default) it does not, which shows the test can fail.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from analogattn.attention import _fused
from analogattn.attention._fused import _cache

HELPER = """
import numba as nb

@nb.njit(inline="always", cache=True)
def helper(x):
    return x + {value}
"""
CALLER = """
import numba as nb
from .helper import helper

@nb.njit(cache=True)
def caller(x):
    return helper(x) * 2.0
"""


def _package(root, install):
    pkg = root / "pkg"
    pkg.mkdir()
    init = "import os\n"
    if install:
        init += ("from analogattn.attention._fused import _cache\n"
                 "_cache.install(os.path.dirname(__file__))\n")
    (pkg / "__init__.py").write_text(init)
    (pkg / "helper.py").write_text(textwrap.dedent(HELPER.format(value=1.0)))
    (pkg / "caller.py").write_text(textwrap.dedent(CALLER))
    return pkg


def _run(root, cache_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), *sys.path]))
    env.pop("NUMBA_CACHE_DIR", None)  # None: the package's own __pycache__
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    out = subprocess.run([sys.executable, "-c", "from pkg.caller import caller; print(caller(1.0))"],
                         env=env, capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout)


@pytest.mark.parametrize("install", [True, False])
@pytest.mark.parametrize("user_dir", [False, True], ids=["pycache", "NUMBA_CACHE_DIR"])
def test_editing_a_sibling_helper_recompiles_the_caller(tmp_path, install, user_dir):
    pkg = _package(tmp_path, install)
    cache_dir = tmp_path / "numba-cache" if user_dir else None
    assert _run(tmp_path, cache_dir) == (1.0 + 1.0) * 2.0
    where = cache_dir if user_dir else pkg / "__pycache__"
    assert list(where.rglob("caller.caller-*.nbi")), "the caller was not cached"
    (pkg / "helper.py").write_text(textwrap.dedent(HELPER.format(value=10.0)))
    expected = (1.0 + 10.0) * 2.0 if install else (1.0 + 1.0) * 2.0  # numba alone: stale
    assert _run(tmp_path, cache_dir) == expected


def test_fused_functions_carry_the_package_stamp():
    directory = os.path.dirname(_fused.__file__)
    for fn in (_fused.exp_rows, _fused.softmax_ranges, _fused.tile_pulses, _fused.decide_softmax):
        locator = fn._cache._impl.locator
        assert isinstance(locator, _cache._PackageStamp)
        assert locator.get_source_stamp() == _cache.sources_hash(directory)


def test_sources_hash_follows_every_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("ignored\n")
    first = _cache.sources_hash(str(tmp_path))
    (tmp_path / "notes.txt").write_text("changed\n")
    assert _cache.sources_hash(str(tmp_path)) == first
    (tmp_path / "b.py").write_text("y = 3\n")
    assert _cache.sources_hash(str(tmp_path)) != first
