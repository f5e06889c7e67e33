"""Which designs a sweep evaluates: a fixed list (grid, random, Latin hypercube), or an Optuna
multi-objective search (NSGA-II, TPE) whose study lives in ``<output>/study.db`` (SQLite), so a
resumed sweep continues the same study."""
from __future__ import annotations

import itertools

import numpy as np

from .spec import SweepSpec


def fixed_points(spec: SweepSpec) -> list[dict]:
    """Axis values (and linked keys' values) of every design of a grid/random/lhs sweep, in a
    deterministic order (the default design first when ``include_default``)."""
    axes, n, s = spec.axes, spec.sweep.points, spec.sweep
    if s.strategy == "grid":
        pts = [dict(zip([a.name for a in axes], combo)) for combo in itertools.product(*[a.grid() for a in axes])]
    elif s.strategy == "random":
        rng = np.random.default_rng(s.seed)
        u = rng.random((n, len(axes)))
        pts = [{a.name: a.at([u[i, j]])[0] for j, a in enumerate(axes)} for i in range(n)]
    elif s.strategy == "lhs":
        rng = np.random.default_rng(s.seed)
        cols = [(rng.permutation(n) + rng.random(n)) / n for _ in axes]
        pts = [{a.name: a.at([cols[j][i]])[0] for j, a in enumerate(axes)} for i in range(n)]
    else:
        raise ValueError(s.strategy)
    pts = [spec.complete(p) for p in pts]  # + the linked keys
    out, seen = [], set()
    if s.include_default:
        pts = [spec.default_values()] + pts
    for p in pts:
        key = repr(sorted(p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


class Search:
    """An Optuna study over the axes (lists: categorical; ranges: float/int, log where asked),
    minimising the spec's objectives. ``ask`` returns (trial number, axis values); ``tell`` the
    design's objective values (None: the design failed)."""

    def __init__(self, spec: SweepSpec, storage_path):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.optuna = spec, optuna
        s = spec.sweep
        if s.strategy == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(seed=s.seed, population_size=max(4, min(20, s.points // 2)))
        else:
            sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(2, min(10, s.points // 3)))
        self.study = optuna.create_study(study_name=f"sweep-{spec.digest()}", storage=f"sqlite:///{storage_path}",
                                         load_if_exists=True, sampler=sampler,
                                         directions=["minimize"] * len(spec.evaluation.objectives))
        self.trials = {}

    def finished(self) -> int:
        S = self.optuna.trial.TrialState
        return sum(t.state in (S.COMPLETE, S.FAIL) for t in self.study.get_trials(deepcopy=False))

    def pending(self) -> list[tuple[int, dict]]:
        """Trials asked before a kill and never told: their designs are evaluated (or found among
        the stored rows) and told now, so the study continues where it stopped."""
        S = self.optuna.trial.TrialState
        return [(t.number, self._values(t.params)) for t in self.study.get_trials(deepcopy=False)
                if t.state == S.RUNNING]

    def _values(self, params: dict) -> dict:
        return self.spec.complete({a.name: params[a.name] for a in self.spec.axes})

    def ask(self) -> tuple[int, dict]:
        t = self.study.ask()
        vals = {}
        for a in self.spec.axes:
            if a.values is not None:
                vals[a.name] = t.suggest_categorical(a.name, list(a.values))
            elif a.kind is int:
                vals[a.name] = t.suggest_int(a.name, int(a.low), int(a.high), log=a.log)
            else:
                vals[a.name] = t.suggest_float(a.name, a.low, a.high, log=a.log)
        return t.number, self.spec.complete(vals)

    def tell(self, number: int, values) -> None:
        S = self.optuna.trial.TrialState
        if values is None or not all(np.isfinite(values)):
            self.study.tell(number, state=S.FAIL)
        else:
            self.study.tell(number, [float(v) for v in values])
