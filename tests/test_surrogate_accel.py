"""The compiled ReRAM column pass against the NumPy formula of ColumnModel (random inputs,
levels and voltages partly outside the table, with and without G variation, broadcast shapes)."""
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
