"""The compiled ReRAM column pass against the NumPy formula of ColumnModel (random inputs,
levels and voltages partly outside the table, with and without G variation, broadcast shapes)."""
import os

import numpy as np
import pytest

from analogattn.surrogates import _accel
from analogattn.surrogates.models import ColumnModel

pytestmark = pytest.mark.skipif(not _accel.AVAILABLE, reason="numba not importable")


def _model(rows=24, levels=5, nv=17, rng=np.random.default_rng(3)):
    iv_v = np.linspace(0, 0.4, nv)
    cur = np.cumsum(rng.random((levels, nv)), axis=1) * 1e-6
    return ColumnModel(iv_v, cur, rng.uniform(0.8, 1.0, rows), -3e3, 0.05, 0.01,
                       domain={"v": (0.0, 0.4)}, units={}, meta={"rows": rows})


@pytest.mark.parametrize("scaled", [False, True])
def test_compiled_column_equals_numpy(monkeypatch, scaled):
    rng = np.random.default_rng(5)
    m = _model()
    lv = rng.integers(-2, 8, (3, 50, 24))
    v = rng.uniform(-0.05, 0.45, (3, 50, 24))
    g = rng.uniform(0.7, 1.3, (3, 50, 24)) if scaled else None
    got = m(lv, v, g)
    monkeypatch.setattr(_accel, "AVAILABLE", False)
    ref = m(lv, v, g)
    assert got.shape == ref.shape == (3, 50)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-20)
    monkeypatch.setattr(_accel, "AVAILABLE", True)
    np.testing.assert_allclose(m(lv[0, 0], v[0, 0]), m(lv[0:1, 0], v[0:1, 0])[0], rtol=1e-12)  # one column
    np.testing.assert_allclose(m(lv[0], v[0, 0]), m(lv[0], np.broadcast_to(v[0, 0], lv[0].shape)), rtol=1e-12)


_CACHE_SCRIPT = r"""
import numpy as np, numba
from analogattn.surrogates import _accel
x = np.random.default_rng(0).random(5000); out_s = np.empty_like(x); out_p = np.empty_like(x)
p = np.random.default_rng(1).random((81, 4))
args = (p, 9, 0.0, 9.0, 8.99, 0.0, 9.0, 8.99)
_accel._table2d(x, x, *args, out_s)       # the serial one first: compiled (or loaded) and cached
_accel._table2d_par(x, x, *args, out_p)   # must be the threaded code, not the serial one's cache entry
try:
    layer = numba.threading_layer()
except ValueError:
    layer = "none"
print(layer, bool(np.array_equal(out_s, out_p)))
"""


@pytest.mark.skipif(not _accel.AVAILABLE, reason="numba not available")
def test_serial_and_parallel_twins_do_not_share_numba_cache_entries(tmp_path):
    """Numba's disk cache keys a function's entries by signature, not by jit options: the serial
    and parallel wrappers of one function loaded each other's code (the parallel read surface
    ran on one thread: 2.1x a*b instead of 1.1x). In a fresh cache and again from that cache, the
    parallel twin called after the serial one must start numba's threads."""
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    for run in ("compiling", "from the cache"):
        r = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        layer, same = r.stdout.split()
        assert layer != "none", f"{run}: the parallel twin ran serial code"
        assert same == "True"
    names = {p.name.split("-")[0] for p in (tmp_path / "cache").rglob("*.nbi")}
    assert {"_accel._table2d_py", "_accel._table2d_py_par"} <= names
