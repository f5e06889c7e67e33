"""Run analyses' tasks in recycled worker processes, with a content-keyed result cache.

- One ngspice per worker process (PySpice's shared instance is per process and not
  thread-safe); workers are replaced after ``RECYCLE`` tasks to bound ngspice's memory growth.
- A finished task's result is written to ``cache_dir`` atomically the moment it arrives, keyed on
  netlist text + worker arguments + model-file digest + ngspice version. A re-run loads it and
  simulates nothing; a run killed at any moment resumes with only the missing tasks.
- The HDF5 output is assembled in a temporary file and moved over the old one in one step, so a
  killed run leaves the previous file intact; its temporary file is removed by the next run.
- Before any simulation the output path and the cache folder are checked (:func:`check_output`,
  :func:`check_cache_dir`), and the run holds an advisory lock on ``<output>.lock``: a second
  run on the same output is refused at once. Runs on different outputs may share the cache
  (entries are replaced atomically; a damaged entry is a miss and is recomputed).
- Workers watch their parent and exit when it dies, so a killed run leaves no ngspice behind.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes.util
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..atomic import check_writable_dir, check_writable_output, clean_stale_temps, exclusive_lock, write_bytes
from .tasks import Analysis, Task, resolve

RECYCLE = 8  # tasks per worker process before it is replaced


def task_weight(task: Task, weights: dict | None = None) -> float:
    """Rough relative run time of a task, from its worker's weight in the family registry
    (:class:`~analogattn.characterize.families.AnalysisSpec`), 1 if unregistered."""
    if weights is None:
        from .families import scheduling_weights
        weights = scheduling_weights()
    return weights.get(task.func, 1)


def default_cache_dir() -> Path:
    from ..userio import user_cache_dir
    return user_cache_dir("ANALOGATTN_CACHE", "tasks")


def _library_file() -> str | None:
    lib = os.environ.get("NGSPICE_LIBRARY_PATH")
    if lib:
        return lib
    name = ctypes.util.find_library("ngspice")
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib",
              "/usr/lib64"):
        for n in filter(None, [name, "libngspice.so"]):
            p = os.path.join(d, n)
            if os.path.exists(p):
                return os.path.realpath(p)
    return None


def ngspice_version(cache_dir: Path) -> str:
    """ngspice version, remembered per library file (path, size, mtime) to keep warm runs fast."""
    lib = _library_file()
    stamp = None
    if lib and os.path.exists(lib):
        st = os.stat(lib)
        stamp = f"{lib}|{st.st_size}|{st.st_mtime_ns}"
        f = cache_dir / "ngspice-version.json"
        try:
            d = json.loads(f.read_text())
            if d.get("stamp") == stamp:
                return d["version"]
        except (OSError, ValueError):
            pass
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_watch_parent, initargs=(os.getpid(),)) as ex:
        version = ex.submit(_version_in_worker).result()
    if stamp:
        write_bytes(cache_dir / "ngspice-version.json",
                            json.dumps({"stamp": stamp, "version": version}).encode())
    return version


def _version_in_worker() -> str:
    from .engine import Simulator
    return Simulator.get().version


PARENT_POLL = 0.25  # s between a worker's checks that its parent still runs


def _watch_parent(parent_pid: int) -> None:
    """Worker initializer: exit as soon as the process that started this worker is gone (a
    SIGKILLed run would otherwise leave its workers, and their ngspice, running and then waiting
    on the task queue forever: measured, they never noticed the parent's death)."""
    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(PARENT_POLL)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="analogattn-parent-watch", daemon=True).start()


class Cache:
    """``root/<key[:2]>/<key>.npz``, each entry written in one step (temporary file + rename), so
    concurrent runs sharing the folder never read a torn entry. An entry that does not load
    (zero bytes or truncated by an old crash, foreign content) is a miss and is recomputed."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.damaged = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def clean(self) -> int:
        """Remove temporary files of writers that no longer run (killed mid-write)."""
        n = clean_stale_temps(self.root)
        try:
            subs = [e.path for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False) and len(e.name) == 2]
        except OSError:
            return n
        return n + sum(clean_stale_temps(d) for d in subs)

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                r = {k: z[k] for k in z.files}
        except Exception:  # a damaged entry is simply recomputed
            self.damaged += 1
            return None
        if "__wall__" not in r:  # every entry put() writes has it
            self.damaged += 1
            return None
        return r

    def put(self, key: str, result: dict) -> None:
        import io
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in result.items()})
        write_bytes(self.path(key), buf.getvalue())


@contextlib.contextmanager
def _single_threaded_children():
    """Debian's ngspice evaluates BSIM4 devices with OpenMP; several workers each spinning
    spinning OpenMP threads on few cores run up to 100x slower (measured here). Workers get one
    thread and a passive wait policy (they inherit the environment at spawn)."""
    want = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"}
    old = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_in_worker(task: Task) -> dict:
    from .engine import Simulator
    t0 = time.perf_counter()
    try:
        sim = Simulator.get()
        result = resolve(task.func)(sim, task)
    except Exception as e:  # recorded, the sweep goes on
        return {"__error__": np.asarray(f"{type(e).__name__}: {e}"),
                "__wall__": np.asarray(time.perf_counter() - t0)}
    result["__wall__"] = np.asarray(time.perf_counter() - t0)
    return result


@dataclasses.dataclass
class Summary:
    tasks: int = 0
    run: int = 0
    cached: int = 0
    failed: int = 0
    points_not_converged: int = 0
    wall_time: float = 0.0
    analyses_written: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)

    def line(self) -> str:
        return (f"tasks: {self.tasks} (run {self.run}, cached {self.cached}, failed {self.failed}); "
                f"points not converged: {self.points_not_converged}; wall time {self.wall_time:.2f} s")


def run_tasks(tasks: list[Task], jobs: int, cache: Cache, version: str, progress: bool = True,
              summary: Summary | None = None, executor: cf.Executor | None = None) -> dict[str, dict]:
    """Results keyed by task key; missing ones simulated in a pool of recycled workers, or on
    ``executor`` (any ``concurrent.futures``-style executor, e.g. a Dask ``Client``'s
    ``get_executor()``): its results travel back here, and only this process writes the cache."""
    summary = summary or Summary()
    results, todo = {}, []
    for t in tasks:
        k = t.key(version)
        if k in results:
            continue
        r = cache.get(k)
        if r is not None:
            results[k] = r
            summary.cached += 1
        else:
            todo.append((k, t))
            results[k] = None
    summary.tasks += len(results)
    if not todo:
        return results
    # longest first: Monte Carlo and retention tasks dominate
    from .families import scheduling_weights
    weights = scheduling_weights()
    todo.sort(key=lambda kt: -task_weight(kt[1], weights))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="simulating", unit="task", file=sys.stderr,
                   disable=None, dynamic_ncols=True)
    # A fresh pool per batch recycles the workers (and their ngspice) every RECYCLE tasks.
    # (ProcessPoolExecutor's own max_tasks_per_child can deadlock on Python 3.11.)
    ctx = mp.get_context("spawn")
    nproc = max(1, min(jobs, len(todo)))
    batch = RECYCLE * nproc if executor is None else len(todo)
    with _single_threaded_children():
        for b0 in range(0, len(todo), batch):
            chunk = todo[b0:b0 + batch]
            pool = (contextlib.nullcontext(executor) if executor is not None else
                    cf.ProcessPoolExecutor(max_workers=min(nproc, len(chunk)), mp_context=ctx,
                                           initializer=_watch_parent, initargs=(os.getpid(),)))
            with pool as ex:
                futs = {ex.submit(_run_in_worker, t): (k, t) for k, t in chunk}
                for f in cf.as_completed(futs):
                    k, t = futs[f]
                    try:
                        r = f.result()
                    except Exception as e:  # worker died
                        r = {"__error__": np.asarray(f"worker died: {e}"), "__wall__": np.asarray(0.0)}
                    if "__error__" in r:
                        summary.failed += 1
                        summary.errors.append(f"{t.label}: {r['__error__']}")
                    else:
                        cache.put(k, r)
                    summary.run += 1
                    results[k] = r
                    if bar:
                        bar.set_postfix_str(t.label)
                        bar.update()
    if bar:
        bar.close()
    return results


def check_output(path) -> Path:
    """Refuse (one-line AnalogAttnError) an output path ``characterize`` must not write: a
    directory, a path whose folder is missing or not writable, an existing file that is not an
    analogattn characterization. Touches nothing; call it before any simulation."""
    from . import store
    return check_writable_output(path, "characterization output", store.is_characterization)


def check_cache_dir(path=None) -> Path:
    """The task cache folder (``path``, else $ANALOGATTN_CACHE or the default), created if
    missing; one-line AnalogAttnError if it is a file, cannot be created or is not writable."""
    if path is None:
        kind = "task cache ($ANALOGATTN_CACHE)" if os.environ.get("ANALOGATTN_CACHE") else "task cache"
        path = default_cache_dir()
    else:
        kind = "task cache (--cache-dir)"
    return check_writable_dir(path, kind)


def characterize(analyses: list[Analysis], out: Path, jobs: int | None = None,
                 cache_dir: Path | None = None, progress: bool = True,
                 executor: cf.Executor | None = None) -> Summary:
    """Simulate (or load from the cache) every task, write ``out``. The output and the cache are
    checked first, and ``out`` is locked for the whole run (a concurrent run on the same output
    raises AnalogAttnError at once). ``executor``: where the tasks run (default: recycled spawn
    processes of this machine; a Dask client's executor spreads them over a cluster)."""
    out = check_output(out)
    root = check_cache_dir(cache_dir)
    with exclusive_lock(out, "characterization output"):
        clean_stale_temps(out.parent, out.name)
        check_output(out)  # again under the lock: a finished run may have written it meanwhile
        return _characterize(analyses, out, jobs, root, progress, executor)


def _characterize(analyses, out: Path, jobs, root: Path, progress: bool, executor=None) -> Summary:
    from . import store

    t0 = time.perf_counter()
    jobs = jobs or os.cpu_count() or 1
    cache = Cache(root)
    cache.clean()
    version = ngspice_version(cache.root)
    summary = Summary()
    all_tasks = [t for a in analyses for t in a.tasks]
    results = run_tasks(all_tasks, jobs, cache, version, progress, summary, executor)
    groups = []
    for a in analyses:
        rs = [results[t.key(version)] for t in a.tasks]
        if any("__error__" in r for r in rs):
            continue
        datasets = a.merge(rs)
        st = datasets.get("status")
        if st is not None:
            summary.points_not_converged += int(np.count_nonzero(np.asarray(st.data) != 0))
        wall = float(sum(float(r["__wall__"]) for r in rs))
        groups.append((a, datasets, wall))
        summary.analyses_written.append(f"{a.family}/{a.name}")
    store.write(out, groups, version)
    summary.wall_time = time.perf_counter() - t0
    return summary


def run_local(analyses: list[Analysis]) -> dict:
    """Run analyses in this process (no cache, no pool): {"family/name": {dataset: array}}.
    For small studies and tests; the CLI uses :func:`characterize`."""
    from .engine import Simulator
    sim = Simulator.get()
    out = {}
    for a in analyses:
        res = [resolve(t.func)(sim, t) for t in a.tasks]
        out[f"{a.family}/{a.name}"] = {k: v.data for k, v in a.merge(res).items()}
    return out
