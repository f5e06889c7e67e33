"""Command line: ``analogattn characterize | fit | run | generate | demo | sweep``.

Every option is declared once, with its unit, allowed range and meaning (:func:`analogattn.params.param`
metadata on the option classes below, and on the kernels' config classes for the kernel options);
the argparse flags, their help text and defaults, and the range checks are generated from it. All
checks run before any work starts. A mistake of the user's is one line on stderr and exit code 2;
anything else is one line naming a log file with the traceback, exit code 1 (``--debug``: the
traceback itself).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path

import numpy as np

from .errors import AnalogAttnError, ParameterError
from .params import Validated, _fmt_range, param

BIG = 10**9


# ------------------------------------------------------------------------------------------------
# option classes: the single source of every flag's type, range, unit, default and help
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CharacterizeOptions(Validated):
    design: str | None = param(None, doc="TOML file overriding the built-in default design, or the name of a "
                                         "shipped design (python -m analogattn.designs lists them: sky130)")
    output: str = param("characterization.h5", doc="HDF5 file the characterization is written to")
    jobs: int | None = param(None, "", 1, 1024, "worker processes (default: the core count)")
    only: str | None = param(None, doc="families or family.analysis to run, comma-separated "
                                       "(e.g. reram,gaincell.retention; default: all)")
    cache_dir: str | None = param(None, doc="task cache folder (default: $ANALOGATTN_CACHE or "
                                            "~/.cache/analogattn/tasks)")
    quiet: bool = param(False, doc="no progress bar")


@dataclasses.dataclass(frozen=True)
class FitOptions(Validated):
    characterization: str = param("characterization.h5", doc="characterization made by analogattn characterize")
    output: str = param("surrogates.h5", doc="surrogate bundle (HDF5) to write")
    plot: str | None = param(None, doc="folder for the PNG figures of every fit (created if missing)")
    degree: int = param(3, "", 1, 8, "total degree of the read-surface polynomial")
    surface: str = param("auto", choices=("auto", "poly", "table"),
                         doc="read-surface model (auto: the one with the lower held-out error)")


@dataclasses.dataclass(frozen=True)
class TextOptions(Validated):
    model: str = param("smollm2", doc="smollm2, minilm, a .gguf file or a Hugging Face folder (GPT-2, BERT)")
    text: str | None = param(None, doc="UTF-8 text file (default: a text shipped with the system)")
    attention: str = param("ideal", doc="attention kernel (see the kernel registry: analogattn.attention.registry)")
    config: str | None = param(None, doc="kernel config TOML (tables per section, e.g. [array] storage_levels = 32); "
                                         "flags override it")
    surrogates: str | None = param(None, doc="surrogate bundle from analogattn fit (circuit kernels)")
    seed: int = param(0, "", 0, 2**31 - 1, "seed of circuit variation and noise (and of sampling)")


@dataclasses.dataclass(frozen=True)
class RunOptions(TextOptions):
    window: int | None = param(None, "tokens", 1, 1 << 20, "tokens per window (default 256)")
    stride: int | None = param(None, "tokens", 1, 1 << 20, "window stride, at most --window (default: the window)")
    max_scored: int | None = param(None, "tokens", 1, BIG, "stop after this many scored tokens (default: all)")
    max_chars: int | None = param(None, "chars", 1, BIG, "use only the first N characters of the text")
    max_sentences: int | None = param(None, "", 1, 100000, "encoder models: sentences to embed (default 64)")
    json: str | None = param(None, doc="write the result as JSON to this file")
    quiet: bool = param(False, doc="no progress bar, no paper figures")


@dataclasses.dataclass(frozen=True)
class GenerateOptions(TextOptions):
    prompt: str = param("", doc="text to continue (required, not empty; not with --teacher-forced)")
    max_new_tokens: int = param(32, "tokens", 1, 1 << 20, "tokens to generate (prompt + these must fit the "
                                                        "model's context unless --window is given)")
    temperature: float = param(0.0, "", 0.0, 100.0, "sampling temperature (0 = greedy)")
    top_k: int = param(0, "", 0, 10**7, "sample from the k most likely tokens (0 = all; at most the vocabulary)")
    window: int | None = param(None, "tokens", 1, 1 << 20, "causal sliding window of attention "
                                                          "(default: none, limited to the model's context)")
    quiet: bool = param(False, doc="no progress bar")
    # long-decode mode (retention over long decodes): the text's own tokens fed through the cache
    teacher_forced: bool = param(False, doc="decode --text token by token through the KV cache, feeding its own "
                                            "next token (teacher forcing) after a prompt of its first "
                                            "--prompt-tokens tokens, instead of generating; prints perplexity by "
                                            "context age (--max-new-tokens: tokens scored)")
    prompt_tokens: int | None = param(None, "tokens", 1, 1 << 20, "--teacher-forced: tokens of the text "
                                                                 "prefilled as the prompt (default 1)")
    age_bin: int | None = param(None, "tokens", 1, 1 << 20, "--teacher-forced: width of the context-age bins "
                                                           "(default 256)")
    json: str | None = param(None, doc="--teacher-forced: write the result as JSON to this file")
    plot: str | None = param(None, doc="--teacher-forced: PNG of perplexity by context age")


TEACHER_FORCED_ONLY = ("prompt_tokens", "age_bin", "json", "plot")


@dataclasses.dataclass(frozen=True)
class DemoOptions(Validated):
    outdir: str = param("analogattn-demo", doc="folder for every output (created if missing)")
    jobs: int | None = param(None, "", 1, 1024, "ngspice worker processes (default: the core count)")
    text: str | None = param(None, doc="text file (default: a text shipped with the system)")
    window: int = param(512, "tokens", 8, 1 << 16, "tokens per window")
    max_scored: int = param(1024, "tokens", 1, BIG, "scored tokens per kernel setting")
    levels: tuple[int, ...] = param((4, 8, 16, 32, 64), "", 2, 65536, "gain-cell storage levels to compare")
    keeps: tuple[float, ...] = param((0.15, 0.2, 0.3, 0.4), "", 0.001, 0.999, "pruning keep targets")


@dataclasses.dataclass(frozen=True)
class SweepOptions(Validated):
    spec: str | None = param(None, doc="sweep spec (TOML: [sweep], [design], [axes], [evaluation], [chips]; "
                                       "see analogattn.explore.spec)")
    output: str = param("sweep-results", doc="results folder (created; a re-run continues what it holds)")
    scheduler: str | None = param(None, doc="Dask scheduler address tcp://HOST:PORT (default: a LocalCluster "
                                            "on this machine; 'serial' runs in this process)")
    workers: int | None = param(None, "", 1, 1024, "LocalCluster worker processes (default: the core count)")
    cache_dir: str | None = param(None, doc="task cache folder (default: $ANALOGATTN_CACHE or "
                                            "~/.cache/analogattn/tasks)")
    quiet: bool = param(False, doc="no progress bar")


@dataclasses.dataclass(frozen=True)
class CalibrationFiles(Validated):
    """Files of a calibrated kernel (options of every kernel that needs calibration)."""
    calibration_text: str | None = param(None, doc="calibration text (default: the last 40,000 characters of --text)")
    calibration_file: str | None = param(None, doc="calibrated scalers/thresholds: loaded if it exists, "
                                                   "else written after calibrating")


RUN_LEVEL = ("window", "seed")  # kernel leaves set from the command's own --window and --seed


def _specs():
    from .attention import registry
    return list(registry.specs())


def kernel_options() -> dict:
    """flag name -> [(kernel, field, type)] over every registered kernel's config leaves (except
    those set from the command's own options) and the calibration files. A name must have one
    type in every kernel that uses it (it is one flag)."""
    from .attention.config import sections
    owners: dict = {}

    def add(kernel, cls, skip=()):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            uses = owners.setdefault(f.name, [])
            if uses and _base_type(uses[0][2]) != _base_type(hints[f.name]):
                raise TypeError(f"kernel option {f.name} has different types in different kernels")
            uses.append((kernel, f, hints[f.name]))
    for spec in _specs():
        for _, sub in sections(spec.config):
            add(spec.name, sub, RUN_LEVEL)
        if spec.needs_calibration:
            add(spec.name, CalibrationFiles)
    return owners


# ------------------------------------------------------------------------------------------------
# flags from metadata
# ------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``analogattn: error: ...``) and exit code 2."""

    def error(self, message):
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        sys.stderr.write(f"analogattn: error: {sub + ': ' if sub else ''}{message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _leaves(cls, prefix=()):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from _leaves(t, prefix + (f.name,))
        else:
            yield prefix + (f.name,), f, t


def _base_type(t):
    """X from X | None."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        t = [a for a in typing.get_args(t) if a is not type(None)][0]
    return t


def _number(kind):
    def conv(s):
        try:
            return kind(s)
        except ValueError:
            if kind is int:  # 1e3 -> 1000, but 1.5 stays an error
                try:
                    x = float(s)
                except ValueError:
                    pass
                else:
                    if x.is_integer():
                        return int(x)
            raise argparse.ArgumentTypeError(f"{s!r} is not {'a whole number' if kind is int else 'a number'}")
    conv.__name__ = kind.__name__
    return conv


def _nonempty(s: str) -> str:
    """A text option (a file, folder, model or name): an empty value would be read as the current
    folder (``Path("") == Path(".")``) or silently as the default, so it is refused by name."""
    if s == "":
        raise argparse.ArgumentTypeError("'' is empty (give a file, folder or model name)")
    return s


_nonempty.__name__ = "text"


def _help(f, default) -> str:
    m = f.metadata
    unit = f" [{m['unit']}]" if m.get("unit") else ""
    rng = ""
    if m.get("choices") is None and (m.get("lo") is not None or m.get("hi") is not None):
        rng = f"; allowed {_fmt_range(m)}"
    d = "" if default is None or default is False else f"; default {default}"
    if isinstance(default, tuple):
        d = f"; default {' '.join(map(str, default))}"
    return (m.get("doc") or "") + unit + rng + d


def _add(p, name, f, t, default, positional=False, short=None, used_by="", choices=None):
    """One flag for one option field; default None so that 'given' can be told apart."""
    flag = "--" + name.replace("_", "-")
    t = _base_type(t)
    h = _help(f, default) + (f" ({used_by} only)" if used_by else "")
    kw = dict(default=None, help=h.replace("%", "%%"))
    names = [name] if positional else ([short, flag] if short else [flag])
    if positional:
        kw["nargs"] = "?"
    else:
        kw["dest"] = name
    if t is bool:
        if default is False and not used_by:
            kw["action"] = "store_true"
        else:
            kw["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(t) is tuple:
        elem = [a for a in typing.get_args(t) if a is not Ellipsis][0]
        kw.update(type=_number(elem), nargs="+")
    elif t in (int, float):
        kw["type"] = _number(t)
        kw["metavar"] = "N" if t is int else "X"
    elif t is str:
        kw["type"] = _nonempty
    choices = choices if choices is not None else f.metadata.get("choices")
    if choices is not None:
        kw["choices"] = list(choices)
        kw.pop("metavar", None)
    p.add_argument(*names, **kw)


def _add_options(p, cls, positional=(), short=None):
    short = short or {}
    for path, f, t in _leaves(cls):
        choices = [s.name for s in _specs()] if path[-1] == "attention" else None
        _add(p, path[-1], f, t, f.default, positional=path[-1] in positional, short=short.get(path[-1]),
             choices=choices)


def _given(args, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def _build(cls, values: dict, flag_of=None):
    """cls(**values), with a range error renamed to the flag the user typed."""
    flag_of = flag_of or (lambda n: "--" + n.replace("_", "-"))
    try:
        return cls(**values)
    except ParameterError as e:
        field = e.field.split("[")[0].split(".")[-1]
        raise ParameterError(flag_of(field) + e.field[len(e.field.split("[")[0]):], e.value, e.allowed) from None


def _add_kernel_options(p):
    g = p.add_argument_group("kernel options (each valid only with the kernels named; a --config file "
                             "sets them too)")
    for n, uses in sorted(kernel_options().items()):
        _, f, t = uses[0]
        _add(g, n, f, t, f.default, used_by=" and ".join(sorted({k for k, _, _ in uses})))


def _kernel_config(args, name: str, window: int | None, seed: int):
    """The chosen kernel's spec, config (--config file, then flags) and calibration files; a flag
    of another kernel is an error."""
    from .attention import registry
    spec = registry.get(name)
    given = {}
    for n, uses in sorted(kernel_options().items()):
        v = getattr(args, n, None)
        if v is None:
            continue
        kernels = sorted({k for k, _, _ in uses})
        if name not in kernels:
            raise AnalogAttnError(f"--{n.replace('_', '-')} is an option of --attention "
                                  f"{' or '.join(kernels)}, not of --attention {name}")
        given[n] = v
    files = _build(CalibrationFiles, {k: v for k, v in given.items() if k in {f.name for f in
                                                                              dataclasses.fields(CalibrationFiles)}})
    leaves = {k: v for k, v in given.items() if not hasattr(files, k)}
    cfg_file = getattr(args, "config", None)
    if cfg_file is not None and name == "ideal":
        raise AnalogAttnError("--config is a circuit kernel's config file; --attention ideal has no options")
    if cfg_file is not None:
        from .userio import check_input_file
        check_input_file(cfg_file, "--config", "kernel config file")
        try:
            base = spec.config.from_toml(cfg_file)
        except AnalogAttnError as e:
            raise AnalogAttnError(f"--config {e}") from None
        leaves = {**base.leaves(), **leaves}
        for n in RUN_LEVEL:
            if n in base.leaves() and base.leaves()[n] != spec.config().leaves()[n]:
                raise AnalogAttnError(f"--config {cfg_file}: {n} is set by the command's --{n}, not in the file")
    from .attention.config import leaf_fields
    names = {f.name for _, f in leaf_fields(spec.config)}
    if "window" in names:
        leaves["window"] = window or 0
    if "seed" in names:
        leaves["seed"] = seed
    cfg = _build(spec.config, leaves)
    return spec, cfg, files


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
def _only(value: str | None):
    """--only gaincell,reram or gaincell.retention -> {family: set(analyses) | None}, the
    choices from the circuit-family registry."""
    from .characterize import families
    known = {name: fam.analysis_names for name, fam in families.families().items()}
    if not value:
        return {f: None for f in known}
    sel: dict = {}
    for item in value.split(","):
        item = item.strip()
        fam, dot, ana = item.partition(".")
        if not item or (dot and not ana):
            raise AnalogAttnError(f"--only {value!r}: an empty family or analysis name (allowed: "
                                  f"{', '.join(known)}, or family.analysis)")
        if fam not in known:
            raise AnalogAttnError(f"--only: unknown family {fam!r} (allowed: {', '.join(known)})")
        if ana:
            if ana not in known[fam]:
                raise AnalogAttnError(f"--only: unknown analysis {item!r} "
                                      f"(allowed: {', '.join(fam + '.' + a for a in known[fam])})")
            if sel.get(fam, set()) is not None:
                sel.setdefault(fam, set()).add(ana)
        else:
            sel[fam] = None
    return sel


def cmd_characterize(o: CharacterizeOptions) -> int:
    from .characterize.design import Design
    from .characterize.runner import characterize, check_cache_dir, check_output
    from .userio import check_input_file

    design_file = None
    if o.design is not None:
        from . import designs
        shipped = None if Path(o.design).exists() else designs.path(o.design)
        design_file = check_input_file(shipped or o.design, "--design",
                                       f"design file (nor a shipped design: {', '.join(designs.names())})")
    design = Design.load(design_file)
    analyses = design.analyses(_only(o.only))
    out = check_output(o.output)
    cache = check_cache_dir(o.cache_dir)
    summary = characterize(analyses, out, jobs=o.jobs, cache_dir=cache, progress=not o.quiet)
    print(f"wrote {o.output}: {', '.join(summary.analyses_written) or 'nothing'}")
    print(summary.line())
    for e in summary.errors:
        print(f"failed: {e}", file=sys.stderr)
    return 1 if summary.errors else 0


def _bundle_output_check(path, flag, plot=None):
    from .surrogates.bundle import SCHEMA
    from .userio import check_output_dir, check_output_file, is_hdf5_with_schema
    out = check_output_file(path, flag, "surrogate bundle", is_hdf5_with_schema(SCHEMA))
    if plot:
        check_output_dir(plot, "--plot" if flag.startswith("-o") else flag)
    return out


def _fit_checks(o: FitOptions):
    from .userio import check_input_file
    check_input_file(o.characterization, "characterization", "characterization file")
    if Path(o.output).resolve() == Path(o.characterization).resolve():
        raise AnalogAttnError(f"-o/--output {o.output}: is the characterization being read")
    return _bundle_output_check(o.output, "-o/--output", o.plot)


def cmd_fit(o: FitOptions) -> int:
    from .surrogates import bundle
    from .surrogates.fit import file_digest, fit_all, validation_rows

    from .atomic import exclusive_lock
    out = _fit_checks(o)
    models = fit_all(o.characterization, degree=o.degree, surface=o.surface)
    with exclusive_lock(out, "surrogate bundle"):
        _fit_checks(o)  # again under the lock: another fit may have written it meanwhile
        bundle.save(o.output, models, file_digest(o.characterization), str(o.characterization))
    rows = validation_rows(models)
    print(f"{'model':34s} {'metric':24s} {'value':>12s} {'target':>10s}  result")
    for name, metric, value, target, ok in rows:
        t = f"{target:10.4g}" if target is not None else f"{'-':>10s}"
        res = "-" if ok is None else ("pass" if ok else "FAIL")
        print(f"{name:34s} {metric:24s} {value:12.5g} {t}  {res}")
    chosen = models.get("gaincell.read_surface")
    if chosen is not None:
        print(f"gain-cell read surface: using the {chosen.kind} model (lower held-out error)")
    print(f"wrote {o.output} ({len(models)} models)")
    if o.plot:
        from .surrogates.plots import write_all
        Path(o.plot).mkdir(exist_ok=True)
        files = write_all(o.characterization, models, o.plot)
        print(f"wrote {len(files)} figures to {o.plot}")
    return 0


def cmd_demo(o: DemoOptions) -> int:
    """The main job on built-in defaults: characterize every circuit family (cached), fit and
    export the surrogates with plots, calibrate the circuit kernels and run SmolLM2 with ideal,
    gain-cell (both activations) and ReRAM-pruning attention on a text shipped with the system;
    one comparison table, a JSON file and figures."""
    from .characterize.runner import check_cache_dir, check_output
    from .evaluate import compare as cmp
    from .evaluate.perplexity import stream_tokens
    from .evaluate.texts import check_text, default_text_path
    from .surrogates import bundle
    from .transformer.loaders import load
    from .userio import check_output_dir, check_output_file, is_json, is_png

    out = check_output_dir(o.outdir, "--outdir")
    char, sur = out / "characterization.h5", out / "surrogates.h5"
    if out.exists():  # what a previous demo left is replaced; anything else of the same name is not
        check_output(char)
        _bundle_output_check(sur, "--outdir", out / "plots" if (out / "plots").exists() else None)
        check_output_file(out / "comparison.json", "--outdir", "comparison table",
                          is_json(lambda d: isinstance(d, list) and all(isinstance(r, dict) and "kernel" in r
                                                                        for r in d)))
        for name in ("ppl_vs_keep.png", "ppl_vs_storage_levels.png", "attention_map.png"):
            check_output_file(out / name, "--outdir", "figure", is_png)
    path = Path(o.text) if o.text else default_text_path()
    check_text(path, "--text")
    check_cache_dir(None)
    out.mkdir(exist_ok=True)
    print(f"== 1/4 characterize -> {char}")
    rc = cmd_characterize(CharacterizeOptions(output=str(char), jobs=o.jobs))
    print(f"== 2/4 fit -> {sur} (figures in {out / 'plots'})")
    rc = rc or cmd_fit(FitOptions(characterization=str(char), output=str(sur), plot=str(out / "plots")))
    if rc:
        return rc
    model = load("smollm2")
    ids = np.concatenate(list(stream_tokens(path, model.tokenizer)))
    w = o.window
    if ids.size < 3 * w + 2:
        raise AnalogAttnError(f"--text {path}: {ids.size} tokens, need at least {3 * w + 2} for --window {w}")
    cal = [ids[-2 * w:-w], ids[-w:]]  # calibration on the end of the text, scoring from its start
    score = ids[:-2 * w]
    print(f"== 3/4 calibrate and run SmolLM2 on {path} ({ids.size} tokens; calibration on the last {2 * w}, "
          f"scoring up to {o.max_scored} from the start)")
    rows = cmp.compare(model, score, cal, bundle.load(sur), out, window=w, max_scored=o.max_scored,
                       levels=tuple(o.levels), keeps=tuple(o.keeps))
    print("== 4/4 comparison")
    print(cmp.table(rows))
    files = cmp.plots(rows, out, model, score, cal, bundle.load(sur))
    print(f"wrote {out / 'comparison.json'} and {', '.join(str(f) for f in files)}")
    return 0


def cmd_sweep(o: SweepOptions) -> int:
    """Validate the spec (model, texts, axes from the parameter metadata), the output folder, the
    scheduler and the cache, then sweep."""
    from .characterize.runner import check_cache_dir
    from .explore import need
    if o.spec is None:
        raise AnalogAttnError("sweep: give the sweep spec file (analogattn sweep SPEC.toml)")
    need("pandas", "pyarrow", "dask", "distributed")
    from .explore import cluster, results, spec as sweep_spec
    sp = sweep_spec.load(o.spec)
    if sp.sweep.strategy in ("nsga2", "tpe"):
        need("optuna")
    out = results.check_output(o.output)
    if o.scheduler not in (None, "serial"):
        cluster.check_scheduler(o.scheduler)
        if o.workers is not None:
            raise AnalogAttnError("--workers sizes the LocalCluster; with --scheduler the cluster's own workers run")
    backend = cluster.make(o.scheduler, o.workers)  # an unreachable scheduler: one line, nothing written
    try:
        cache = check_cache_dir(o.cache_dir)
        print(f"sweep {o.spec}: {sp.sweep.strategy}, {len(sp.axes)} axes, {sp.evaluation.attention} attention; "
              f"{backend.describe()}", flush=True)
        if backend.dashboard:
            print(f"Dask dashboard: {backend.dashboard}", flush=True)
        from .explore.sweep import run
        rep = run(sp, out, backend, cache, progress=not o.quiet)
    finally:
        backend.close()
    print(rep.pareto)
    print(rep.line())
    print(f"wrote {', '.join(str(f) for f in rep.files)}")
    return 0


def _peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM, where Linux has it: ru_maxrss survives
    exec and so reports the parent's peak for a process started by a large one."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _calibration_windows(spec, cfg, files: CalibrationFiles, model, text_path, window):
    """Token windows for calibration: --calibration-text, else the last 40,000 characters of the
    text (disjoint from the windows scored first when the text is longer than 80,000 characters)."""
    from .evaluate.perplexity import stream_tokens
    from .evaluate.texts import read_tail
    if not spec.needs_calibration:
        return []
    if files.calibration_file and Path(files.calibration_file).exists():
        return []  # loaded, not calibrated
    if files.calibration_text:
        ids = np.concatenate(list(stream_tokens(Path(files.calibration_text), model.tokenizer, max_chars=40000))
                             or [np.zeros(0, np.int64)])
        where = f"--calibration-text {files.calibration_text}"
    else:
        tail, whole = read_tail(text_path, 40000)
        if whole:
            print("warning: text shorter than 80,000 characters: the calibration windows overlap its start",
                  file=sys.stderr)
        ids = np.asarray(model.tokenizer.encode(tail), dtype=np.int64)
        where = f"--text {text_path}"
    n = getattr(cfg, "calibration_windows", 2)
    wins = [ids[i:i + window] for i in range(0, min(ids.size, n * window), window)]
    wins = [w for w in wins if w.size > 1]
    if not wins or sum(w.size for w in wins) < 16:
        raise AnalogAttnError(f"{where}: too short to calibrate a circuit kernel ({ids.size} tokens; "
                              f"need at least 16)")
    return wins


def _kernel_checks(o: TextOptions, args, window):
    """Everything about the kernel that can be checked before a model is loaded."""
    from .attention.calfile import is_calibration_file
    from .userio import check_input_file, check_output_file
    spec, cfg, files = _kernel_config(args, o.attention, window, o.seed)
    if not spec.needs_bundle:
        if o.surrogates:
            raise AnalogAttnError(f"--surrogates is an option of the circuit kernels, not of --attention {spec.name}")
    elif not o.surrogates:
        raise AnalogAttnError(f"--attention {spec.name} needs --surrogates FILE (made by: analogattn fit)")
    else:
        check_input_file(o.surrogates, "--surrogates", "surrogate bundle")
    if files.calibration_text:
        from .evaluate.texts import check_text
        check_text(files.calibration_text, "--calibration-text")
    if files.calibration_file:
        check_output_file(files.calibration_file, "--calibration-file", "calibration file", is_calibration_file)
    return spec, cfg, files


def _make_kernel(o: TextOptions, spec, cfg, files, model, text_path, window):
    """(kernel, bundle): the bundle loaded, calibration windows cut, the kernel built."""
    b = None
    if spec.needs_bundle:
        from .surrogates import bundle
        b = bundle.load(o.surrogates)
    wins = _calibration_windows(spec, cfg, files, model, text_path, window or 256)
    cal_file = Path(files.calibration_file) if files.calibration_file else None
    return spec.build(model, b, cfg, wins, cal_file), b


def _scored_text_checks(o, args):
    """The checks of a command that scores a text (run, generate --teacher-forced), before any
    work: the model name, the text, the kernel and its files, the JSON output. Returns (text path,
    kernel spec, kernel config, calibration files)."""
    from .evaluate.texts import check_text, default_text_path
    from .userio import check_output_file, is_json_with
    _check_model_spec(o.model)
    path = Path(o.text) if o.text else default_text_path()
    check_text(path, "--text")
    spec, cfg, files = _kernel_checks(o, args, o.window)
    if o.json:
        check_output_file(o.json, "--json", "result file", is_json_with("model", "attention"))
    return path, spec, cfg, files


def _check_model_spec(spec: str) -> None:
    if spec in ("smollm2", "minilm"):
        return
    p = Path(spec)
    if not p.exists():
        raise AnalogAttnError(f"--model {spec!r}: not smollm2, minilm, an existing .gguf file or a model folder")


def cmd_run(o: RunOptions, args) -> int:
    import json
    import time

    from .evaluate.perplexity import perplexity, stream_tokens
    from .evaluate.texts import read_text
    from .transformer.loaders import load
    from .transformer.models import embed_sentences

    if o.stride is not None and o.stride > (o.window or 256):
        raise ParameterError("--stride", o.stride, f"1 to --window ({o.window or 256})")
    path, spec, cfg, files = _scored_text_checks(o, args)
    t0 = time.perf_counter()
    model = load(o.model)
    load_s = time.perf_counter() - t0
    if model.config.arch == "bert":
        for name in ("window", "stride", "max_scored"):
            if getattr(o, name) is not None:
                raise AnalogAttnError(f"--{name.replace('_', '-')} is an option of causal models; "
                                      f"{o.model} is an encoder (sentence embeddings)")
    elif o.max_sentences is not None:
        raise AnalogAttnError(f"--max-sentences is an option of encoder models (minilm); {o.model} is causal")
    kernel, b = _make_kernel(o, spec, cfg, files, model, path, o.window)
    result = {"model": model.name, "text": str(path), "attention": kernel.name, "load_seconds": load_s}
    if model.config.arch == "bert":
        text, _ = read_text(path, o.max_chars)
        lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 20][: o.max_sentences or 64]
        if len(lines) < 2:
            raise AnalogAttnError(f"--text {path}: {len(lines)} sentences of more than 20 characters "
                                  f"(one per line); need at least 2 to compare embeddings")
        t0 = time.perf_counter()
        emb = embed_sentences(model, lines, kernel)
        dt = time.perf_counter() - t0
        cos = emb @ emb.T
        iu = np.triu_indices(len(lines), 1)
        ntok = sum(len(model.tokenizer.encode(x)) for x in lines)
        result.update(sentences=len(lines), dim=int(emb.shape[1]), mean_norm=float(np.linalg.norm(emb, axis=1).mean()),
                      mean_pairwise_cosine=float(cos[iu].mean()), tokens_per_s=ntok / dt)
        print(f"{model.name}: {len(lines)} sentences -> {emb.shape[1]}-d embeddings, mean pairwise cosine "
              f"{result['mean_pairwise_cosine']:.4f}")
    else:
        window = o.window or 256
        tokens = stream_tokens(path, model.tokenizer, max_chars=o.max_chars)
        r = perplexity(model, tokens, window, o.stride, kernel, o.max_scored, progress=not o.quiet,
                       source=f"--text {path}")
        from .evaluate.texts import replacement_warning
        w = replacement_warning("--text", path, tokens.replaced)
        if w:
            print(f"warning: {w}", file=sys.stderr)
        result["replaced_characters"] = tokens.replaced
        result.update(perplexity=r.perplexity, nll=r.nll, scored_tokens=r.scored, windows=r.windows,
                      window=r.window, stride=r.stride, tokens_per_s=r.tokens_per_s, seconds=r.seconds)
        from .evaluate.perplexity import nll_by_position
        result["perplexity_by_position"] = nll_by_position(r)  # by context length (age of the oldest keys)
        print(f"{model.name} on {path.name}: perplexity {r.perplexity:.4f} over {r.scored} scored tokens "
              f"({r.windows} windows of {r.window}, stride {r.stride}, {kernel.name} attention)")
        stats = getattr(kernel, "stats", None)
        sm = spec.summary(kernel)
        if sm is not None:
            result[spec.summary_key] = sm
            if "kept_fraction" in sm:
                print(f"pruning: kept {sm['kept_fraction']:.4f} of causal scores (per layer "
                      f"{min(sm['kept_fraction_per_layer']):.3f}-{max(sm['kept_fraction_per_layer']):.3f}), "
                      f"ideal softmax mass kept {sm['softmax_mass_kept']:.4f}, newly fetched per query "
                      f"{sm['newly_fetched_fraction']:.4f} of the visible keys")
            if "column_vs_spice_nrmse" in sm:
                print(f"kernel column currents vs held-out SPICE: NRMSE {sm['column_vs_spice_nrmse']:.5f} "
                      "(target 0.005; nan: the bundle predates this check)")
        from .evaluate.cost import cost_for, format_cost, paper_lines
        ctx = window
        cost = cost_for(spec.name, model.config, ctx, b, stats, kernel)
        result["cost"] = {"context": ctx, **cost}
        print(format_cost(f"{kernel.name} (decoding at a {ctx}-token context)", cost))
        if not o.quiet:
            for line in paper_lines():
                print("  " + line)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["weight_products"] = model.weight_products  # which BLAS: results differ by float32 rounding
    print(f"tokens/s {result['tokens_per_s']:.1f}; peak memory {result['peak_rss_mb']:.0f} MB; "
          f"model load {load_s:.1f} s; weight products: {result['weight_products']}")
    if o.json:
        from .atomic import write_bytes
        write_bytes(o.json, json.dumps(result, indent=2).encode())
    return 0


def cmd_generate(o: GenerateOptions, args) -> int:
    import time

    from .evaluate.texts import check_text, default_text_path
    from .transformer.generate import generate
    from .transformer.loaders import load

    for name in TEACHER_FORCED_ONLY:
        if getattr(o, name) is not None:
            raise AnalogAttnError(f"--{name.replace('_', '-')} is an option of generate --teacher-forced")
    if not o.prompt.strip():
        raise AnalogAttnError("--prompt is empty (give the text to continue)")
    _check_model_spec(o.model)
    text = Path(o.text) if o.text else None
    if o.attention != "ideal":
        text = text or default_text_path()
        check_text(text, "--text")
    elif o.text:
        raise AnalogAttnError("--text is used by generate only to calibrate a circuit kernel, "
                              "not with --attention ideal")
    spec, cfg, files = _kernel_checks(o, args, o.window)
    model = load(o.model)
    if model.config.arch == "bert":
        raise AnalogAttnError("--model: generation needs a causal model (smollm2, a GGUF or GPT-2 folder)")
    vocab = model.config.vocab
    if o.top_k > vocab:
        raise ParameterError("--top-k", o.top_k, f"0 to the vocabulary size {vocab}")
    ids = model.tokenizer.encode(o.prompt)
    if not ids:
        raise AnalogAttnError("--prompt gives no tokens")
    ctx = model.config.max_positions
    if ctx and o.window is None and len(ids) + o.max_new_tokens > ctx:
        raise AnalogAttnError(f"--max-new-tokens {o.max_new_tokens}: the prompt ({len(ids)} tokens) plus "
                              f"the new tokens exceed the model's context of {ctx} tokens "
                              f"(ask for at most {max(ctx - len(ids), 0)}, or give --window for a sliding window)")
    kernel, _ = _make_kernel(o, spec, cfg, files, model, text, o.window)
    mask = model.default_mask(o.window) if o.window else None
    t0 = time.perf_counter()
    out = generate(model, ids, o.max_new_tokens, o.temperature, o.top_k, o.seed, kernel=kernel, mask=mask,
                   progress=not o.quiet)
    dt = time.perf_counter() - t0
    print(o.prompt + model.tokenizer.decode(out))
    print(f"[{len(out)} tokens, {len(out) / max(dt, 1e-9):.1f} tokens/s]", file=sys.stderr)
    return 0


def cmd_teacher_forced(o: GenerateOptions, args) -> int:
    """generate --teacher-forced: the text decoded token by token through the KV cache (each token
    one forward call at its position, the cells written once and ageing as in a real generation),
    every token's NLL from the step before; perplexity by context age, JSON, figure."""
    import json

    from .evaluate.age import age_bins, format_age_table, plot_by_age
    from .evaluate.perplexity import stream_tokens
    from .evaluate.texts import replacement_warning
    from .transformer.generate import teacher_forced
    from .transformer.loaders import load
    from .userio import check_output_file, is_png

    if getattr(args, "prompt", None) is not None:
        raise AnalogAttnError("--prompt is not used with --teacher-forced (the prompt is the text's first "
                              "--prompt-tokens tokens)")
    for name in ("temperature", "top_k"):
        if getattr(args, name, None) is not None:
            raise AnalogAttnError(f"--{name.replace('_', '-')} is an option of sampled generation, "
                                  f"not of --teacher-forced (the text's own tokens are fed)")
    n_prompt, n_new, width = o.prompt_tokens or 1, o.max_new_tokens, o.age_bin or 256
    path, spec, cfg, files = _scored_text_checks(o, args)
    if o.plot:
        check_output_file(o.plot, "--plot", "figure (PNG)", is_png)
    model = load(o.model)
    if model.config.arch == "bert":
        raise AnalogAttnError("--model: generation needs a causal model (smollm2, a GGUF or GPT-2 folder)")
    ctx = model.config.max_positions
    if ctx and o.window is None and n_prompt + n_new > ctx:
        raise AnalogAttnError(f"--max-new-tokens {n_new}: the prompt ({n_prompt} tokens) plus the scored tokens "
                              f"exceed the model's context of {ctx} tokens (ask for at most "
                              f"{max(ctx - n_prompt, 0)}, or give --window for a sliding window)")
    need = n_prompt + n_new
    stream = stream_tokens(path, model.tokenizer)
    parts, have = [], 0
    for chunk in stream:
        parts.append(chunk)
        have += chunk.size
        if have >= need:
            break
    if have < need:
        raise AnalogAttnError(f"--text {path}: {have} tokens; --teacher-forced needs --prompt-tokens + "
                              f"--max-new-tokens = {need} (ask for at most {max(have - n_prompt, 0)} new tokens)")
    ids = np.concatenate(parts)[:need]
    w = replacement_warning("--text", path, stream.replaced)
    if w:
        print(f"warning: {w}", file=sys.stderr)
    # calibration windows as long as the context the decode reaches (need - 1 tokens fed), as
    # run --window does: the decode and run --window (need - 1) share their calibration
    kernel, b = _make_kernel(o, spec, cfg, files, model, path, o.window or need - 1)
    mask = model.default_mask(o.window) if o.window else None
    r = teacher_forced(model, ids, n_prompt, kernel, mask, progress=not o.quiet)
    bins = age_bins(r.token_position, r.token_nll, width)
    print(f"{model.name} on {path.name}, teacher-forced decode ({kernel.name} attention, prompt {n_prompt} "
          f"token{'s' if n_prompt > 1 else ''}{f', window {o.window}' if o.window else ''}): perplexity "
          f"{r.perplexity:.4f} over {r.scored} tokens")
    print(format_age_table(bins))
    from .evaluate.cost import cost_for, format_cost
    live = min(need - 1, o.window) if o.window else need - 1  # keys stored at the last step
    cost = cost_for(spec.name, model.config, live, b, getattr(kernel, "stats", None), kernel)
    print(format_cost(f"{kernel.name} (decoding at a {live}-token context)", cost))
    print(f"{r.tokens_per_s:.2f} tokens/s (decode, one token a forward call)")
    result = {"model": model.name, "text": str(path), "attention": kernel.name, "mode": "teacher_forced",
              "prompt_tokens": n_prompt, "scored_tokens": r.scored, "window": o.window, "perplexity": r.perplexity,
              "nll": r.nll, "age_bin_tokens": width, "perplexity_by_age": bins, "cost": {"context": live, **cost},
              "seconds": r.seconds, "tokens_per_s": r.tokens_per_s, "token_nll": r.token_nll.tolist(),
              "token_position": r.token_position.tolist()}
    if spec.name != "ideal":
        result["kernel_config"] = kernel.cfg.leaves() if hasattr(kernel, "cfg") else None
    if o.json:
        from .atomic import write_bytes
        write_bytes(o.json, json.dumps(result, indent=2, default=str).encode())
        print(f"wrote {o.json}")
    if o.plot:
        label = kernel.name + (f", refresh every {cfg.refresh_interval}"
                               if getattr(cfg, "refresh_interval", 0) else "")
        plot_by_age({label: bins}, o.plot, f"{model.name}, {path.name}: teacher-forced decode of {r.scored} tokens "
                    f"(overall perplexity {r.perplexity:.3f})")
        print(f"wrote {o.plot}")
    return 0


# ------------------------------------------------------------------------------------------------
# parser and entry point
# ------------------------------------------------------------------------------------------------
COMMANDS = {
    "characterize": (CharacterizeOptions, "simulate the circuits with ngspice into an HDF5 file"),
    "fit": (FitOptions, "fit, validate and export surrogates of a characterization"),
    "run": (RunOptions, "perplexity (causal models) or embeddings (encoders) on a text"),
    "generate": (GenerateOptions, "greedy or sampled text generation"),
    "demo": (DemoOptions, "the whole pipeline on built-in defaults"),
    "sweep": (SweepOptions, "design-space sweep (circuit and kernel parameters) on Dask: Pareto fronts, yield"),
}


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="analogattn", description=__doc__.split("\n\n")[0],
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (cls, doc) in COMMANDS.items():
        p = sub.add_parser(name, help=doc, description=doc)
        _add_options(p, cls, positional={"fit": ("characterization",), "sweep": ("spec",)}.get(name, ()),
                     short={"output": "-o", "quiet": "-q"})
        if name in ("run", "generate"):
            _add_kernel_options(p)
        p.add_argument("--debug", action="store_true", default=None, dest="debug_sub",
                       help="show the traceback of an internal error")
    return ap


def _check_environment() -> None:
    """Environment variables that steer a run, checked before any work (one line, exit 2)."""
    lanes = os.environ.get("ANALOGATTN_LANES")
    if lanes is not None and lanes.strip() not in ("", "1", "2"):
        from .params import _short
        raise AnalogAttnError(f"ANALOGATTN_LANES={_short(lanes)}: must be 1 or 2 (threads a forward pass works on; "
                              "unset: 2 where the process may use 2 or more cores)")
    from .transformer import gemm
    try:
        gemm.check_environment()
    except gemm.GemmError as e:
        raise AnalogAttnError(str(e)) from None


def _dispatch(args) -> int:
    _check_environment()
    cls, _ = COMMANDS[args.command]
    o = _build(cls, _given(args, cls))
    if args.command == "characterize":
        return cmd_characterize(o)
    if args.command == "fit":
        return cmd_fit(o)
    if args.command == "demo":
        return cmd_demo(o)
    if args.command == "sweep":
        return cmd_sweep(o)
    if args.command == "run":
        return cmd_run(o, args)
    if args.command == "generate":
        if o.teacher_forced:
            return cmd_teacher_forced(o, args)
        if getattr(args, "prompt", None) is None:
            raise AnalogAttnError("generate: --prompt is required (the text to continue)")
        return cmd_generate(o, args)
    raise AssertionError(args.command)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    debug = args.debug or bool(getattr(args, "debug_sub", None)) or os.environ.get("ANALOGATTN_DEBUG") == "1"
    try:
        return _dispatch(args)
    except AnalogAttnError as e:
        msg = " ".join(str(e).split())  # one line, whatever the message held
        print(f"analogattn: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("analogattn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except Exception as e:  # noqa: BLE001 -- the one place that turns a bug into one line + a log
        if debug:
            raise
        from .userio import report_crash
        print(report_crash(e, argv), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
