"""HDF5 round trip, cache hits, resume after SIGKILL, non-converged points."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from analogattn import __version__
from analogattn.characterize.store import read_group

from conftest import SMALL_DESIGN, run_cli


def test_units_and_provenance(small_char):
    out, *_ = small_char
    with h5py.File(out) as f:
        assert f.attrs["schema"] == "analogattn-characterization/1"
        for name in ("read_surface", "write_read", "retention", "monte_carlo"):
            g = f["gaincell"][name]
            for k in ("netlist", "parameters", "ngspice_version", "package_version", "created_utc",
                      "wall_time_s", "method", "cell_name"):
                assert k in g.attrs, (name, k)
            assert g.attrs["package_version"] == __version__
            assert g.attrs["cell_name"].startswith("gaincell_")
            assert ".include" in g.attrs["netlist"] or ".lib" in g.attrs["netlist"]
            json.loads(g.attrs["parameters"])
            for d in g.values():
                assert "units" in d.attrs
    arrays, units, attrs = read_group(out, "gaincell/read_surface")
    assert units["current"] == "A" and units["v_store"] == "V"
    assert arrays["current"].shape == (13, 5)
    assert "DC" in attrs["method"]


def test_cache_hit_does_no_simulation(small_char, tmp_path):
    out, design, cache, first = small_char
    out2 = tmp_path / "again.h5"
    r = run_cli("characterize", "--design", design, "--only", "gaincell", "-o", out2, "--cache-dir", cache, "-q")
    assert r.returncode == 0, r.stderr
    assert "run 0," in r.stdout and "failed 0" in r.stdout
    with h5py.File(out) as a, h5py.File(out2) as b:
        assert np.array_equal(a["gaincell/read_surface/current"][()], b["gaincell/read_surface/current"][()])


def _datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def test_sigkill_mid_run_resumes_to_same_data(tmp_path):
    design = tmp_path / "d.toml"
    design.write_text(SMALL_DESIGN.replace("mc_samples = 24", "mc_samples = 120").replace(
        "mc_per_task = 6", "mc_per_task = 2"))
    ref_out = tmp_path / "ref.h5"
    r = run_cli("characterize", "--design", design, "--only", "gaincell", "-o", ref_out, "--cache-dir", tmp_path / "c_ref",
                "-q", "--jobs", "1")
    assert r.returncode == 0, r.stderr

    out = tmp_path / "out.h5"
    out.write_bytes(ref_out.read_bytes())  # a previous result that must survive the kill
    before = out.read_bytes()
    cache = tmp_path / "c"
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-m", "analogattn.cli", "characterize", "--design", str(design), "--only", "gaincell",
                          "-o", str(out), "--cache-dir", str(cache), "-q", "--jobs", "1"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline:
        n = len(list(cache.glob("*/*.npz")))
        if n >= 5:
            break
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # the CLI and its workers
    p.wait()
    assert 5 <= n < 64, n
    assert out.read_bytes() == before  # previous file intact
    with h5py.File(out) as f:
        assert "gaincell/read_surface" in f

    done = len(list(cache.glob("*/*.npz")))
    r = run_cli("characterize", "--design", design, "--only", "gaincell", "-o", out, "--cache-dir", cache, "-q")
    assert r.returncode == 0, r.stderr
    assert f"cached {done}," in r.stdout, (done, r.stdout)
    a, b = _datasets(ref_out), _datasets(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_non_convergence_is_recorded_and_sweep_goes_on(tmp_path):
    design = tmp_path / "tight.toml"
    design.write_text("""
[simulator]
reltol = 1e-12
abstol = 1e-22
vntol = 1e-15
itl4 = 1
[gaincell.sweep]
n_store = 5
n_in = 3
n_write = 3
retention_time = 1e-6
retention_temps = [27.0]
retention_starts = [0.8]
mc_samples = 0
""")
    out = tmp_path / "t.h5"
    r = run_cli("characterize", "--design", design, "--only", "gaincell", "-o", out, "--cache-dir", tmp_path / "c", "-q")
    assert r.returncode == 0, r.stderr
    assert "points not converged: 4" in r.stdout, r.stdout
    with h5py.File(out) as f:
        wr = f["gaincell/write_read"]
        assert (wr["status"][()] == 1).all() and np.isnan(wr["v_stored"][()]).all()
        assert (f["gaincell/read_surface/status"][()] == 0).all()  # the DC sweep still converged


def test_damaged_cache_entries_are_misses(tmp_path):
    from analogattn.characterize.runner import Cache
    c = Cache(tmp_path)
    good = {"x": np.arange(3.0), "__wall__": np.asarray(0.5)}
    keys = [f"{i:02d}" + "a" * 30 for i in range(6)]
    for k in keys:
        c.put(k, good)
    raw = c.path(keys[0]).read_bytes()
    c.path(keys[1]).write_bytes(b"")                    # zero bytes (an old crash)
    c.path(keys[2]).write_bytes(raw[: len(raw) // 2])   # truncated
    c.path(keys[3]).write_text("not an npz\n")          # foreign content
    import io
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3.0))                     # loads, but no __wall__: not written by put
    c.path(keys[4]).write_bytes(buf.getvalue())
    c.path(keys[5]).unlink()
    c.path(keys[5]).mkdir()                             # a folder in its place
    np.testing.assert_array_equal(c.get(keys[0])["x"], good["x"])
    assert [c.get(k) for k in keys[1:]] == [None] * 5
    assert c.damaged == 5
    c.put(keys[1], good)  # recomputed results replace the damaged entry
    np.testing.assert_array_equal(c.get(keys[1])["x"], good["x"])
    assert not list(tmp_path.rglob("*.tmp"))


def test_damaged_cache_entries_are_recomputed(small_char, tmp_path):
    out, design, cache, _ = small_char
    c = tmp_path / "cache"
    shutil.copytree(cache, c)
    entries = sorted(c.glob("*/*.npz"), key=lambda p: p.stat().st_size)[:3]  # the smallest: quick to redo
    originals = {p: _entry(p) for p in entries}
    entries[0].write_bytes(b"")
    entries[1].write_bytes(entries[1].read_bytes()[:100])
    entries[2].write_text("garbage")
    out2 = tmp_path / "again.h5"
    r = run_cli("characterize", "--design", design, "--only", "gaincell", "-o", out2, "--cache-dir", c, "-q")
    assert r.returncode == 0, r.stderr
    n = len(list(c.glob("*/*.npz")))  # every task of the design has its entry (3 of them damaged)
    assert f"run 3, cached {n - 3}, failed 0" in r.stdout, r.stdout
    a, b = _datasets(out), _datasets(out2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for p, d in originals.items():
        now = _entry(p)
        assert now.keys() == d.keys()
        for k in d:
            if k != "__wall__":
                np.testing.assert_array_equal(now[k], d[k], err_msg=f"{p.name}:{k}")


def _entry(p):
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
