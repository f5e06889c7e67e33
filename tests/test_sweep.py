"""analogattn sweep (issue #15) on real Dask (no mocks): a LocalCluster of processes and an
external `dask scheduler` + two `dask worker` processes give the rows of a serial run; the
characterization runner through the Dask executor gives the process pool's datasets; SIGKILL
and re-run gives the uninterrupted table with nothing recomputed; yield and the Pareto front
checked against their definitions. Tiny GGUF model, reduced gain-cell grids, one task cache for
the module."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import SMALL_DESIGN, run_cli

pd = pytest.importorskip("pandas")
pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

VOLATILE = ["wall_s", "worker_pid"]


def spec_text(fx, levels=(8, 16, 32), chips=2, extra=""):
    design = "\n".join(f"{k}" for k in SMALL_DESIGN.strip().splitlines()[1:])
    return f"""
[sweep]
strategy = "grid"
[design.gaincell.sweep]
{design}
[axes]
kernel.storage_levels = {list(levels)}
[evaluation]
model = "{fx}/tiny.gguf"
text = "{fx}/text.txt"
window = 32
max_scored = 64
[evaluation.kernel]
mismatch = true
[chips]
n = {chips}
budget = 1.2
{extra}
"""


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    from cli_cases import PROSE
    from tiny_models import write_tiny_gguf
    d = tmp_path_factory.mktemp("sweep")
    write_tiny_gguf(d / "tiny.gguf")
    (d / "text.txt").write_text("\n".join(PROSE * 3 for _ in range(60)))
    (d / "spec.toml").write_text(spec_text(d))
    return d


def sweep(fx, out, *args, spec="spec.toml", env=None):
    r = run_cli("sweep", fx / spec, "-o", out, "--cache-dir", fx / "cache", "-q", *args, timeout=400, env_extra=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def table(out):
    return pd.read_parquet(out / "results.parquet")


def same_rows(a, b):
    a, b = a.drop(columns=VOLATILE), b.drop(columns=VOLATILE)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)


@pytest.fixture(scope="module")
def serial(fx):
    out = fx / "serial"
    r = sweep(fx, out, "--scheduler", "serial")
    return out, r


def test_localcluster_equals_serial(fx, serial):
    out, r = serial
    t = table(out)
    assert len(t) == 3 * 2 and (t.status == "ok").all(), t[["status", "message"]]
    assert "Pareto front" in r.stdout and (out / "pareto.png").stat().st_size > 1000
    assert (out / "yield.png").exists()
    assert set(t.columns) >= {"kernel.storage_levels", "ppl_ratio", "energy_per_token_J", "latency_per_token_s",
                              "area_per_element_um2", "status", "message", "wall_s", "bundle_digest"}
    from analogattn.transformer import gemm  # the workers' BLAS for the weight products, per row
    assert set(t.weight_products) == {gemm.engine()}
    tmp = fx / "tmp_local"  # the workers' temporary folder: their scratch folders go there
    tmp.mkdir()
    dead = dead_pid()
    (tmp / f"analogattn-sweep-{dead}").mkdir()  # left by a killed worker
    (tmp / f"analogattn-sweep-{dead}" / "x.h5").write_bytes(b"x")
    r2 = sweep(fx, fx / "local", "--workers", "2", env={"TMPDIR": str(tmp)})
    assert "LocalCluster at tcp://127.0.0.1" in r2.stdout
    t2 = table(fx / "local")
    same_rows(t, t2)
    assert t2.worker_pid.nunique() == 2  # both workers evaluated chips
    # every worker's scratch folder is gone once the sweep ends, the dead pid's one too
    assert not list(tmp.glob("analogattn-sweep-*")), sorted(tmp.iterdir())
    import pyarrow.parquet as pq
    meta = pq.read_schema(fx / "local" / "results.parquet").metadata
    assert b"kernel.storage_levels" in meta[b"analogattn.spec"] and meta[b"analogattn.package_version"]


def test_chip_yield_and_pareto_from_own_rows(fx, serial):
    from analogattn.explore import results, spec
    out, _ = serial
    t, d = table(out), pd.read_parquet(out / "designs.parquet")
    budget = spec.load(fx / "spec.toml").chips.budget
    for _, row in d.iterrows():
        chips = t[t.design_id == row.design_id]
        assert len(chips) == 2
        assert row["yield"] == pytest.approx(np.mean(chips.ppl_ratio.to_numpy() <= budget))
        assert row.ppl_ratio == pytest.approx(np.median(chips.ppl_ratio))
        assert row.ppl_ratio_p90 == pytest.approx(np.percentile(chips.ppl_ratio, 90))
    objs = ["ppl_ratio", "energy_per_token_J", "area_per_element_um2"]
    assert list(d.pareto) == list(brute_force_front(d[objs].to_numpy()))
    rng = np.random.default_rng(0)
    for trial in range(200):
        v = rng.integers(0, 4, (rng.integers(1, 12), rng.integers(1, 4))).astype(float)
        if trial % 3 == 0:
            v[rng.random(v.shape) < 0.1] = np.nan
        assert list(results.pareto_mask(v)) == list(brute_force_front(v)), v


def brute_force_front(v):
    v = np.asarray(v, float)
    out = []
    for i in range(len(v)):
        if not np.isfinite(v[i]).all():
            out.append(False)
            continue
        out.append(not any(np.isfinite(v[j]).all() and np.all(v[j] <= v[i]) and np.any(v[j] < v[i])
                           for j in range(len(v)) if j != i))
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1 (their own process group)."""
    bindir = os.path.dirname(sys.executable)
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "s.log", "w"),
                              env=env, start_new_session=True)]
    time.sleep(2)
    for i in range(2):
        procs.append(subprocess.Popen([os.path.join(bindir, "dask"), "worker", addr, "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"w{i}.log", "w"),
                                      env=env, start_new_session=True, cwd=tmp_path))
    from distributed import Client
    with Client(addr, timeout="30s") as c:
        c.wait_for_workers(2, timeout=60)
    yield addr
    for p in procs[::-1]:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def test_external_scheduler_and_dask_characterization(fx, serial, dask_cluster, tmp_path):
    r = sweep(fx, fx / "ext", "--scheduler", dask_cluster)
    assert f"Dask cluster at {dask_cluster} with 2 workers" in r.stdout
    same_rows(table(serial[0]), table(fx / "ext"))
    # the characterization runner: Dask executor vs the process pool, each on an empty cache
    import h5py
    from distributed import Client

    from analogattn.characterize.design import Design
    from analogattn.characterize.runner import characterize
    design = Design.from_mapping({"gaincell": {"sweep": {"n_store": 13, "n_in": 5, "n_write": 7}}})
    analyses = design.analyses({"gaincell": {"read_surface", "write_read"}})
    with Client(dask_cluster) as c:
        s1 = characterize(analyses, tmp_path / "dask.h5", cache_dir=tmp_path / "c1", progress=False,
                          executor=c.get_executor())
    s2 = characterize(analyses, tmp_path / "pool.h5", jobs=2, cache_dir=tmp_path / "c2", progress=False)
    assert s1.run == s2.run > 0 and not s1.errors and not s2.errors
    with h5py.File(tmp_path / "dask.h5") as a, h5py.File(tmp_path / "pool.h5") as b:
        names = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names
        for n in names:
            np.testing.assert_array_equal(a[n][()], b[n][()], err_msg=n)


def test_kill_and_resume(fx, tmp_path):
    """SIGKILL the sweep (its process group: the client and its LocalCluster) once rows exist;
    the same command continues: the final table equals an uninterrupted run's, the rows written
    before the kill are reused untouched and nothing finished is recomputed."""
    (fx / "kill.toml").write_text(spec_text(fx, levels=(4, 8, 16, 32, 64), chips=2))
    full = fx / "kill_full"
    sweep(fx, full, "--scheduler", "serial", spec="kill.toml")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "analogattn.cli", "sweep", fx / "kill.toml", "-o", out, "--cache-dir", fx / "cache",
           "-q", "--workers", "2"]
    p = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 240:
        n = len(list((out / "rows").glob("*.json"))) if (out / "rows").exists() else 0
        if n >= 3 or p.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in (out / "rows").glob("*.json")}
    assert 3 <= len(before) < 10, len(before)
    time.sleep(1)
    r = sweep(fx, out, "--workers", "2", spec="kill.toml")
    after = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in (out / "rows").glob("*.json")}
    assert all(after[k] == v for k, v in before.items())  # not rewritten
    assert f"evaluated {10 - len(before)}, reused {len(before)}" in r.stdout, r.stdout
    same_rows(table(full), table(out))


def test_optuna_search_resumes(fx, tmp_path):
    """NSGA-II over storage levels: the study is kept; raising the budget continues it (the
    designs already evaluated are not evaluated again)."""
    pytest.importorskip("optuna")
    text = spec_text(fx, levels=(4, 8, 16, 32), chips=1).replace('strategy = "grid"',
                                                                  'strategy = "nsga2"\npoints = 3')
    (fx / "opt.toml").write_text(text)
    out = tmp_path / "opt"
    sweep(fx, out, "--scheduler", "serial", spec="opt.toml")
    t1 = table(out)
    assert len(t1) >= 2 and (out / "study.db").exists()
    (fx / "opt.toml").write_text(text.replace("points = 3", "points = 5"))
    r = sweep(fx, out, "--scheduler", "serial", spec="opt.toml")
    import optuna
    st = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
    assert len([t for t in st.trials if t.state.name == "COMPLETE"]) == 5
    import re
    evaluated, reused = map(int, re.search(r"evaluated (\d+), reused (\d+)", r.stdout).groups())
    assert evaluated <= 2 and reused >= 1, r.stdout  # only the two new trials; the default design reused


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


SCRATCH_USER = """
import sys, time
from analogattn.explore import point
d = point._scratch()
f = point._materialise(b"some text", ".txt")
print(d, f.exists(), flush=True)
if sys.argv[1] == "sleep":
    time.sleep(60)
"""


def test_scratch_folders_removed(tmp_path):
    """A worker's scratch folder is removed when it exits; a killed one's is removed by the next
    process that opens one (its pid no longer runs); a running process's folder is kept."""
    from analogattn.explore import point
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", SCRATCH_USER, "exit"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    folder, existed = r.stdout.split()
    assert existed == "True" and folder.startswith(str(tmp_path)) and not os.path.exists(folder)
    killed = subprocess.Popen([sys.executable, "-c", SCRATCH_USER, "sleep"], env=env, stdout=subprocess.PIPE,
                              text=True)
    folder_k = killed.stdout.readline().split()[0]
    live = subprocess.Popen([sys.executable, "-c", SCRATCH_USER, "sleep"], env=env, stdout=subprocess.PIPE,
                            text=True)
    folder_l = live.stdout.readline().split()[0]
    try:
        killed.kill()
        killed.wait()
        assert os.path.isdir(folder_k)  # SIGKILL: no exit hook ran
        (tmp_path / "analogattn-sweep-notapid").mkdir()  # not ours: kept
        r = subprocess.run([sys.executable, "-c", SCRATCH_USER, "exit"], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(folder_k) and os.path.isdir(folder_l)
        assert (tmp_path / "analogattn-sweep-notapid").is_dir()
        (tmp_path / f"analogattn-sweep-{dead_pid()}").mkdir()
        assert point.clean_stale_scratch(tmp_path) == 1 and os.path.isdir(folder_l)
    finally:
        live.kill()
        live.wait()
    assert point.clean_stale_scratch(tmp_path) == 1 and not os.path.exists(folder_l)


LINKED = """
[sweep]
strategy = "grid"
include_default = {dflt}
[design.gaincell]
{fixed}
[design.gaincell.sweep]
{design}
[axes]
"gaincell.w_read_p" = {widths}
{links}
[evaluation]
model = "{fx}/tiny.gguf"
text = "{fx}/text.txt"
window = 32
max_scored = 64
[evaluation.kernel]
mismatch = true
storage_levels = 16
[chips]
n = 1
"""


def linked_spec(fx, name, widths, links="", fixed="", dflt="true"):
    design = "\n".join(SMALL_DESIGN.strip().splitlines()[1:])
    (fx / name).write_text(LINKED.format(fx=fx, design=design, widths=widths, links=links, fixed=fixed, dflt=dflt))


@pytest.mark.slow  # 20 s of three serial sweeps; the link checks below stay in CI (round 9)
def test_linked_axis(fx):
    """gaincell.w_read_n linked to gaincell.w_read_p at 0.2x: its column in every table, the
    default design found among the grid points (0.6 / 0.12 um), and a linked point equals the
    same design given with the NMOS width fixed in [design] (same bundle, same perplexity)."""
    from analogattn.explore import spec, strategies
    link = '[axes.links]\n"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = 0.2 }'
    linked_spec(fx, "linked.toml", "[0.6, 1.5]", link)
    sp = spec.load(fx / "linked.toml")
    pts = strategies.fixed_points(sp)
    assert pts == [{"gaincell.w_read_p": 0.6, "gaincell.w_read_n": 0.12},
                   {"gaincell.w_read_p": 1.5, "gaincell.w_read_n": 0.3}]  # 0.6 x 0.2 is exactly the default 0.12
    assert sp.design_mapping(pts[1])["gaincell"]["w_read_n"] == 0.3
    r = sweep(fx, fx / "linked", "--scheduler", "serial", spec="linked.toml")
    t, d = table(fx / "linked"), pd.read_parquet(fx / "linked" / "designs.parquet")
    assert (t.status == "ok").all(), t[["status", "message"]]
    assert list(t["gaincell.w_read_n"]) == [0.12, 0.3] and list(d["gaincell.w_read_n"]) == [0.12, 0.3]
    assert list(t.is_default) == [True, False]
    lines = r.stdout.splitlines()
    head = lines[next(i for i, ln in enumerate(lines) if ln.startswith("Pareto front")) + 1]
    assert "gaincell.w_read_n" in head  # the Pareto table's header
    assert t.bundle_digest.nunique() == 2
    linked_spec(fx, "fixed.toml", "[1.5]", fixed="w_read_n = 0.3", dflt="false")
    sweep(fx, fx / "fixed", "--scheduler", "serial", spec="fixed.toml")
    f = table(fx / "fixed")
    assert f.bundle_digest.iloc[0] == t.bundle_digest.iloc[1]
    assert f.perplexity.iloc[0] == pytest.approx(t.perplexity.iloc[1], rel=1e-12)
    # not linked, the NMOS stays at its default: another circuit, another bundle
    linked_spec(fx, "unlinked.toml", "[1.5]", dflt="false")
    sweep(fx, fx / "unlinked", "--scheduler", "serial", spec="unlinked.toml")
    assert table(fx / "unlinked").bundle_digest.iloc[0] != t.bundle_digest.iloc[1]


@pytest.mark.parametrize("link, must", [
    ('"gaincell.bogus" = { follow = "gaincell.w_read_p" }', "axes.links.gaincell.bogus: unknown key"),
    ('"gaincell.w_read_n" = { follow = "gaincell.nope" }', "follow = 'gaincell.nope': not an axis"),
    ('"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = "half" }', "scale = 'half' is not allowed"),
    ('"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = 0 }', "scale = 0 is not allowed"),
    ('"gaincell.w_read_n" = { follow = "gaincell.w_read_p", shift = 1 }', "unknown link key 'shift'"),
    ('"gaincell.w_read_n" = 0.2', "a link is a table"),
    ('"gaincell.w_read_n" = { scale = 0.2 }', "a link needs follow"),
    # 100 x 1.5 um = 150 um: above the NMOS width's 100 um
    ('"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = 100 }', "w_read_n = 150.0 is not allowed"),
    ('"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = 0.001 }', "w_read_n = 0.0006 is not allowed"),
    ('"gaincell.technology.corner" = { follow = "gaincell.w_read_p" }', "only a number can be linked"),
    ('"gaincell.w_read_p" = { follow = "gaincell.w_read_p" }', "is an axis already"),
    ('"gaincell.w_read_n" = { follow = "gaincell.l_read" }\n"gaincell.l_read" = { follow = "gaincell.w_read_p" }',
     "a linked key; link to an axis"),
    ('"reram.rows" = { follow = "gaincell.w_read_p" }', "does not use the reram circuit"),
    ('"kernel.keep" = { follow = "gaincell.w_read_p" }', "not used by attention gaincell"),
])
def test_bad_links(fx, link, must):
    from analogattn.explore import spec
    linked_spec(fx, "badlink.toml", "[0.6, 1.5]", "[axes.links]\n" + link)
    with pytest.raises(spec.SpecError) as e:
        spec.load(fx / "badlink.toml")
    assert must in str(e.value) and "\n" not in str(e.value), str(e.value)
