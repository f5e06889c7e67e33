"""Units of simulation work and how they combine into stored analyses."""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Callable

import numpy as np

from ..params import digest

CACHE_SCHEMA = "1"  # bump when a worker's output format changes



class Status(enum.IntEnum):
    """Status code stored beside every simulated point (``status`` datasets, int8)."""

    OK = 0
    NO_CONVERGENCE = 1
    SIM_ERROR = 2
    OUT_OF_RANGE = 3

    @property
    def meaning(self) -> str:
        return _MEANING[self]


_MEANING = {Status.OK: "ok", Status.NO_CONVERGENCE: "did not converge", Status.SIM_ERROR: "simulator error",
            Status.OUT_OF_RANGE: "result outside the searched range (comparator offset beyond +-dv_range)"}
OK, NO_CONVERGENCE, SIM_ERROR, OUT_OF_RANGE = Status
STATUS_MEANING = {int(s): s.meaning for s in Status}
STATUS_DESCRIPTION = ", ".join(f"{int(s)} {s.meaning}" for s in Status)  # for status datasets

WORKERS: dict[str, Callable] = {}


def worker(fn):
    """Register ``fn(sim, task) -> dict[str, ndarray]``, run in a worker process. Tasks name it
    as ``module:function`` so a freshly spawned worker can import it."""
    WORKERS[f"{fn.__module__}:{fn.__name__}"] = fn
    return fn


def resolve(func: str) -> Callable:
    if func not in WORKERS:
        import importlib
        importlib.import_module(func.partition(":")[0])
    return WORKERS[func]


@dataclasses.dataclass(frozen=True)
class Task:
    family: str
    analysis: str
    part: int
    func: str
    netlist: str
    args_json: str  # JSON of the worker's extra arguments
    model_digest: str

    @property
    def args(self) -> dict:
        return json.loads(self.args_json)

    def key(self, ngspice_version: str) -> str:
        return digest(CACHE_SCHEMA, self.func, self.netlist, self.args_json,
                      self.model_digest, ngspice_version, n=32)

    @property
    def label(self) -> str:
        return f"{self.family}/{self.analysis}[{self.part}]"


def make_task(family, analysis, part, func, netlist, model_digest, **args) -> Task:
    return Task(family, analysis, part, func, netlist, json.dumps(args, sort_keys=True), model_digest)


@dataclasses.dataclass
class Dataset:
    data: np.ndarray
    units: str
    description: str = ""


@dataclasses.dataclass
class Analysis:
    """One stored HDF5 group: tasks to run, and how their results become datasets."""

    family: str
    name: str
    tasks: list[Task]
    merge: Callable[[list[dict]], dict[str, Dataset]]
    params_json: str
    method: str = ""  # how the quantity is measured (stored as an attribute)
    attrs: dict = dataclasses.field(default_factory=dict)
