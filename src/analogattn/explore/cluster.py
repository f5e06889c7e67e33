"""Where a sweep's work runs: a Dask ``LocalCluster`` of worker processes (default), an existing
Dask cluster given by its scheduler address, or ``serial`` (this process, one point at a time;
characterization in the usual recycled process pool): the reference the others are tested against.

Each backend offers two ``concurrent.futures`` executors: ``eval`` (fits, calibrations,
perplexities) and ``char`` (the ngspice tasks of a characterization; None = the local pool)."""
from __future__ import annotations

import concurrent.futures as cf
import re

from ..errors import AnalogAttnError


class Backend:
    kind = "serial"
    dashboard = None

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.eval = cf.ThreadPoolExecutor(1, thread_name_prefix="sweep-serial")
        self.char = None

    def describe(self) -> str:
        return "serial (this process)"

    def close(self):
        self.eval.shutdown(wait=True, cancel_futures=True)


class DaskBackend(Backend):
    def __init__(self, scheduler: str | None = None, workers: int | None = None, connect_timeout: float = 5.0):
        from . import need
        need("dask", "distributed")
        import dask
        from distributed import Client, LocalCluster
        self.cluster = None
        dash = _dashboard_wanted()
        if scheduler is None:
            import os
            n = workers or os.cpu_count() or 1
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:0" if dash else None,
                                        env={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"})
            self.client = Client(self.cluster)
        else:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{connect_timeout}s"}):
                try:
                    self.client = Client(scheduler, timeout=f"{connect_timeout}s")
                except (OSError, TimeoutError) as e:
                    raise AnalogAttnError(f"--scheduler {scheduler}: unreachable ({type(e).__name__}: "
                                          f"{str(e).splitlines()[0] if str(e) else 'no answer'})") from None
            if workers:
                try:
                    self.client.wait_for_workers(workers, timeout=120)
                except (TimeoutError, OSError):
                    pass
        info = self.client.scheduler_info()
        self.workers = max(1, len(info.get("workers", {})))
        self.scheduler = scheduler or self.client.scheduler.address
        self.dashboard = self.client.dashboard_link if dash else None
        self.eval = self.client.get_executor(pure=False)
        self.char = self.eval
        self.kind = "dask"

    def describe(self) -> str:
        where = "LocalCluster" if self.cluster is not None else "Dask cluster"
        return f"{where} at {self.scheduler} with {self.workers} worker{'s' * (self.workers != 1)}"

    def close(self):
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
                from .point import clean_stale_scratch
                clean_stale_scratch()  # of LocalCluster workers the nanny had to kill


def _dashboard_wanted() -> bool:
    try:
        import bokeh  # noqa: F401  (Dask's dashboard needs it)
        return True
    except ImportError:
        return False


SCHEDULER = re.compile(r"^(tcp|tls|ws|wss|inproc)://[^\s:/]+(:\d{1,5})?$")


def check_scheduler(address: str) -> None:
    """The address's form only (tcp://HOST:PORT); reachability is checked when connecting."""
    if not SCHEDULER.match(address):
        raise AnalogAttnError(f"--scheduler {address!r}: not a Dask scheduler address (tcp://HOST:PORT)")


def make(scheduler: str | None, workers: int | None) -> Backend:
    if scheduler == "serial":
        return Backend()
    if scheduler is not None:
        check_scheduler(scheduler)
    return DaskBackend(scheduler, workers)
