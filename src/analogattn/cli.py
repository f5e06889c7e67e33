"""Command line: ``analogattn characterize | fit | run | generate``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import AnalogAttnError


def _only(value: str | None):
    """--only gaincell,reram or gaincell.retention -> {family: set(analyses) | None}."""
    from .characterize import comparator, gaincell, reram
    from .characterize.design import FAMILIES
    known = {"gaincell": gaincell.ANALYSES, "reram": reram.ANALYSES, "comparator": comparator.ANALYSES}
    if not value:
        return {f: None for f in FAMILIES}
    sel: dict = {}
    for item in value.split(","):
        item = item.strip()
        fam, _, ana = item.partition(".")
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


def cmd_characterize(args) -> int:
    from .characterize.design import Design
    from .characterize.runner import characterize

    design = Design.load(args.design)
    analyses = design.analyses(_only(args.only))
    if args.jobs is not None and args.jobs < 1:
        raise AnalogAttnError(f"--jobs = {args.jobs} is not allowed (allowed: 1 or more)")
    summary = characterize(analyses, Path(args.output), jobs=args.jobs,
                           cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                           progress=not args.quiet)
    print(f"wrote {args.output}: {', '.join(summary.analyses_written) or 'nothing'}")
    print(summary.line())
    for e in summary.errors:
        print(f"failed: {e}", file=sys.stderr)
    return 1 if summary.errors else 0


def cmd_fit(args) -> int:
    from .surrogates import bundle
    from .surrogates.fit import file_digest, fit_all, validation_rows

    if args.degree < 1 or args.degree > 8:
        raise AnalogAttnError(f"--degree = {args.degree} is not allowed (allowed: 1 to 8)")
    models = fit_all(args.characterization, degree=args.degree, surface=args.surface)
    bundle.save(args.output, models, file_digest(args.characterization), str(args.characterization))
    rows = validation_rows(models)
    print(f"{'model':34s} {'metric':24s} {'value':>12s} {'target':>10s}  result")
    for name, metric, value, target, ok in rows:
        t = f"{target:10.4g}" if target is not None else f"{'-':>10s}"
        res = "-" if ok is None else ("pass" if ok else "FAIL")
        print(f"{name:34s} {metric:24s} {value:12.5g} {t}  {res}")
    chosen = models.get("gaincell.read_surface")
    if chosen is not None:
        print(f"gain-cell read surface: using the {chosen.kind} model (lower held-out error)")
    print(f"wrote {args.output} ({len(models)} models)")
    if args.plot:
        from .surrogates.plots import write_all
        files = write_all(args.characterization, models, args.plot)
        print(f"wrote {len(files)} figures to {args.plot}")
    return 0


def cmd_demo(args) -> int:
    """The main job on built-in defaults: characterize every circuit family (cached), fit and
    export the surrogates with plots, calibrate the circuit kernels and run SmolLM2 with ideal,
    gain-cell (both activations) and ReRAM-pruning attention on a text shipped with the system;
    one comparison table, a JSON file and figures."""
    from .evaluate import compare as cmp
    from .evaluate.perplexity import stream_tokens
    from .evaluate.texts import default_text_path
    from .surrogates import bundle
    from .transformer.loaders import load
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    char, sur = out / "characterization.h5", out / "surrogates.h5"
    print(f"== 1/4 characterize -> {char}")
    rc = cmd_characterize(argparse.Namespace(design=None, only=None, jobs=args.jobs, output=str(char),
                                             cache_dir=None, quiet=False))
    print(f"== 2/4 fit -> {sur} (figures in {out / 'plots'})")
    rc = rc or cmd_fit(argparse.Namespace(characterization=str(char), output=str(sur), plot=str(out / "plots"),
                                          degree=3, surface="auto"))
    if rc:
        return rc
    path = Path(args.text) if args.text else default_text_path()
    model = load("smollm2")
    ids = np.concatenate(list(stream_tokens(path, model.tokenizer)))
    w = args.window
    if ids.size < 3 * w + 2:
        raise AnalogAttnError(f"--text {path}: {ids.size} tokens, need at least {3 * w + 2} for window {w}")
    cal = [ids[-2 * w:-w], ids[-w:]]  # calibration on the end of the text, scoring from its start
    score = ids[:-2 * w]
    print(f"== 3/4 calibrate and run SmolLM2 on {path} ({ids.size} tokens; calibration on the last {2 * w}, "
          f"scoring up to {args.max_scored} from the start)")
    rows = cmp.compare(model, score, cal, bundle.load(sur), out, window=w, max_scored=args.max_scored,
                       levels=tuple(args.levels), keeps=tuple(args.keeps))
    print("== 4/4 comparison")
    print(cmp.table(rows))
    files = cmp.plots(rows, out, model, score, cal, bundle.load(sur))
    print(f"wrote {out / 'comparison.json'} and {', '.join(str(f) for f in files)}")
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


KERNELS = ("ideal", "gaincell", "sprint")


def _check_kernel(name: str) -> None:
    if name not in KERNELS:
        raise AnalogAttnError(f"--attention {name!r} is not available (allowed: {', '.join(KERNELS)})")


def _kernel(name: str, args=None, model=None, text_path=None):
    from .attention import IdealAttention
    _check_kernel(name)
    if name == "gaincell":
        return _gaincell_kernel(args, model, text_path)
    if name == "sprint":
        return _sprint_kernel(args, model, text_path)
    return IdealAttention()


def _calibration_windows(args, model, text_path, window):
    """Token windows for calibration: --calibration-text, else the last 40,000 characters of the
    text (disjoint from the windows scored first when the text is longer than 80,000 characters)."""
    from .evaluate.perplexity import stream_tokens
    if args.calibration_text:
        ids = np.concatenate(list(stream_tokens(Path(args.calibration_text), model.tokenizer, max_chars=40000)))
    else:
        raw = Path(text_path).read_text(encoding="utf-8", errors="replace")
        tail = raw[-40000:]
        tail = tail[tail.find("\n") + 1:] if len(raw) > 80000 else raw
        if len(raw) <= 80000:
            print("warning: text shorter than 80,000 characters: the calibration windows overlap its start", file=sys.stderr)
        ids = np.asarray(model.tokenizer.encode(tail))
    n = max(1, args.calibration_windows)
    wins = [ids[i:i + window] for i in range(0, min(ids.size, n * window), window)]
    return [w for w in wins if w.size > 1]


def _bundle(args, kind):
    from .surrogates import bundle
    if not getattr(args, "surrogates", None):
        raise AnalogAttnError(f"--attention {kind} needs --surrogates FILE (made by: analogattn fit)")
    return bundle.load(args.surrogates)


def _cal_meta(model, b, cfg, extra=None):
    return {"model": model.name, "surrogates": b.info.get("source_digest", ""), "config": cfg.to_json(),
            **(extra or {})}


def _gaincell_config(args):
    from .attention.gaincell import GainCellConfig
    return GainCellConfig(storage_levels=args.storage_levels, input_levels=args.input_levels,
                          output_levels=args.output_levels, token_period=args.token_period,
                          temperature=args.cell_temperature, activation=args.activation, adc_bits=args.adc_bits,
                          window=args.window or 0, mismatch=args.mismatch, read_noise=args.read_noise,
                          seed=args.seed)


def _gaincell_kernel(args, model, text_path):
    """Gain-cell kernel from a surrogate bundle, calibrated on calibration text (or loaded from
    --calibration-file, which is written after a calibration when it does not exist yet)."""
    from .attention.gaincell import CellModel, GainCellAttention, Scalers, calibrated_kernel
    b = _bundle(args, "gaincell")
    cfg = _gaincell_config(args)
    cell = CellModel.from_bundle(b, temperature=cfg.temperature)
    kernel = GainCellAttention(cell, cfg, None)
    meta = _cal_meta(model, b, cfg, {"calibration": args.calibration, "equalise": bool(args.equalise)})
    cal_file = Path(args.calibration_file) if getattr(args, "calibration_file", None) else None
    kernel.bundle = b
    if cal_file is not None and cal_file.exists():
        kernel.sc = Scalers.load(cal_file, expect=meta)
        print(f"calibration: loaded {cal_file}", file=sys.stderr)
        return kernel
    windows = _calibration_windows(args, model, text_path, args.window or 256)
    cal, _ = calibrated_kernel(model, windows, cell, cfg, args.calibration, equalise=args.equalise)
    kernel.sc = cal.sc
    if cal_file is not None:
        kernel.sc.save(cal_file, meta)
        print(f"calibration: wrote {cal_file}", file=sys.stderr)
    return kernel


def _sprint_config(args):
    from .attention.sprint import SprintConfig
    return SprintConfig(key_bits=args.key_bits, dac_bits=args.dac_bits, rule=args.rule, keep=args.keep,
                        sink=args.sink, local=args.local, budget=args.budget, mass=args.mass,
                        variation=args.variation, read_noise=args.circuit_noise, comparator_offset=args.variation,
                        comparator_noise=args.circuit_noise, equalise=args.equalise, seed=args.seed)


def _sprint_kernel(args, model, text_path):
    """ReRAM pruning kernel from a surrogate bundle, calibrated (key scales, TIA gains,
    thresholds for --keep) on calibration text or loaded from --calibration-file."""
    from .attention.sprint import Crossbar, SprintAttention, SprintScales, calibrate_sprint
    b = _bundle(args, "sprint")
    cfg = _sprint_config(args)
    xbar = Crossbar.from_bundle(b)
    meta = _cal_meta(model, b, cfg.replace(seed=0, read_noise=True, comparator_noise=True, comparator_offset=True,
                                          variation=True))
    cal_file = Path(args.calibration_file) if getattr(args, "calibration_file", None) else None
    if cal_file is not None and cal_file.exists():
        sc = SprintScales.load(cal_file, expect=meta)
        print(f"calibration: loaded {cal_file}", file=sys.stderr)
    else:
        sc = calibrate_sprint(model, _calibration_windows(args, model, text_path, args.window or 256), xbar, cfg)
        if cal_file is not None:
            sc.save(cal_file, meta)
            print(f"calibration: wrote {cal_file}", file=sys.stderr)
    kernel = SprintAttention(xbar, cfg, sc, model.config.n_layers)
    kernel.bundle = b
    return kernel


def cmd_run(args) -> int:
    import json
    import time

    from .evaluate.perplexity import perplexity
    from .evaluate.texts import read_text
    from .transformer.loaders import load
    from .transformer.models import embed_sentences

    for name in ("window", "stride", "max_scored", "max_chars"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise AnalogAttnError(f"--{name.replace('_', '-')} = {v} is not allowed (allowed: 1 or more)")
    from .evaluate.texts import default_text_path
    path = Path(args.text) if args.text else default_text_path()
    if not path.is_file():
        raise AnalogAttnError(f"--text {path}: no such file")
    _check_kernel(args.attention)  # before the model load, not after
    t0 = time.perf_counter()
    model = load(args.model)
    load_s = time.perf_counter() - t0
    kernel = _kernel(args.attention, args, model, path)
    result = {"model": model.name, "text": str(path), "attention": kernel.name, "load_seconds": load_s}
    if model.config.arch == "bert":
        text, _ = read_text(path, args.max_chars)
        lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 20][: args.max_sentences]
        t0 = time.perf_counter()
        emb = embed_sentences(model, lines, kernel)
        dt = time.perf_counter() - t0
        cos = emb @ emb.T
        iu = np.triu_indices(len(lines), 1)
        ntok = sum(len(model.tokenizer.encode(x)) for x in lines)
        result.update(sentences=len(lines), dim=int(emb.shape[1]), mean_norm=float(np.linalg.norm(emb, axis=1).mean()),
                      mean_pairwise_cosine=float(cos[iu].mean()) if iu[0].size else float("nan"),
                      tokens_per_s=ntok / dt)
        print(f"{model.name}: {len(lines)} sentences -> {emb.shape[1]}-d embeddings, mean pairwise cosine "
              f"{result['mean_pairwise_cosine']:.4f}")
    else:
        from .evaluate.perplexity import stream_tokens
        window = args.window or 256
        r = perplexity(model, stream_tokens(path, model.tokenizer, max_chars=args.max_chars), window, args.stride,
                       kernel, args.max_scored, progress=not args.quiet)
        result.update(perplexity=r.perplexity, nll=r.nll, scored_tokens=r.scored, windows=r.windows,
                      window=r.window, stride=r.stride, tokens_per_s=r.tokens_per_s, seconds=r.seconds)
        print(f"{model.name} on {path.name}: perplexity {r.perplexity:.4f} over {r.scored} scored tokens "
              f"({r.windows} windows of {r.window}, stride {r.stride}, {kernel.name} attention)")
        stats = getattr(kernel, "stats", None)
        if stats is not None:
            result["pruning"] = stats.summary()
            sm = result["pruning"]
            print(f"pruning: kept {sm['kept_fraction']:.4f} of causal scores (per layer "
                  f"{min(sm['kept_fraction_per_layer']):.3f}-{max(sm['kept_fraction_per_layer']):.3f}), "
                  f"ideal softmax mass kept {sm['softmax_mass_kept']:.4f}, newly fetched per query "
                  f"{sm['newly_fetched_fraction']:.4f} of the visible keys")
        from .evaluate.cost import cost_for, format_cost, paper_lines
        ctx = window
        cost = cost_for(kernel.name, model.config, ctx, getattr(kernel, "bundle", None), stats, kernel)
        result["cost"] = {"context": ctx, **cost}
        print(format_cost(f"{kernel.name} (decoding at a {ctx}-token context)", cost))
        if not args.quiet:
            for line in paper_lines():
                print("  " + line)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(f"tokens/s {result['tokens_per_s']:.1f}; peak memory {result['peak_rss_mb']:.0f} MB; "
          f"model load {load_s:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_generate(args) -> int:
    import time

    from .transformer.generate import generate
    from .transformer.loaders import load

    if args.max_new_tokens < 1:
        raise AnalogAttnError(f"--max-new-tokens = {args.max_new_tokens} is not allowed (allowed: 1 or more)")
    model = load(args.model)
    if model.config.arch == "bert":
        raise AnalogAttnError("--model: generation needs a causal model (smollm2, a GGUF or GPT-2 folder)")
    _check_kernel(args.attention)
    from .evaluate.texts import default_text_path
    text = Path(args.text) if args.text else default_text_path()
    kernel = _kernel(args.attention, args, model, text)
    ids = model.tokenizer.encode(args.prompt)
    t0 = time.perf_counter()
    out = generate(model, ids, args.max_new_tokens, args.temperature, args.top_k, args.seed, kernel=kernel)
    dt = time.perf_counter() - t0
    print(args.prompt + model.tokenizer.decode(out))
    print(f"[{len(out)} tokens, {len(out) / dt:.1f} tokens/s]", file=sys.stderr)
    return 0


def _kernel_options(p, temperature_flag):
    """Options of the circuit kernels, shared by run and generate (generate's --temperature is
    the sampling temperature, so there the cell's is --cell-temperature)."""
    p.add_argument("--surrogates", help="surrogate bundle for circuit kernels")
    p.add_argument("--storage-levels", type=int, default=8)
    p.add_argument("--input-levels", type=int, default=16)
    p.add_argument("--output-levels", type=int, default=32)
    p.add_argument("--token-period", type=float, default=65e-9, help="s between tokens (decay)")
    p.add_argument("--adc-bits", type=int, default=8, help="ADC on scores before the digital softmax (0 = none)")
    p.add_argument("--calibration", default="meanstd", choices=["meanstd", "lstsq", "none"],
                   help="output-scaler calibration against the ideal model")
    p.add_argument("--equalise", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel k/v equalisation folded into q and the output (exact digitally)")
    p.add_argument("--calibration-text", help="calibration text (default: the last 40,000 characters of --text)")
    p.add_argument("--calibration-windows", type=int, default=2, help="calibration windows (of --window tokens)")
    p.add_argument("--calibration-file", help="calibrated scalers/thresholds: loaded if it exists, else written")
    p.add_argument("--mismatch", action="store_true", help="gain cell: fixed per-cell mismatch (Monte Carlo)")
    p.add_argument("--read-noise", type=float, default=0.0, help="gain cell: per-read noise, relative to full scale")
    p.add_argument("--key-bits", type=int, default=4, help="sprint: key MSBs in the crossbar")
    p.add_argument("--dac-bits", type=int, default=4, help="sprint: query DAC bits per sign")
    p.add_argument("--rule", default="anchor", help="sprint: anchor | fixed | oracle | none")
    p.add_argument("--keep", type=float, default=0.30, help="sprint: kept fraction the thresholds aim at")
    p.add_argument("--sink", type=int, default=1, help="sprint anchor rule: first tokens always kept")
    p.add_argument("--local", type=int, default=4, help="sprint anchor rule: recent tokens always kept")
    p.add_argument("--budget", default="global", help="sprint: global | layer | head (shared thresholds)")
    p.add_argument("--mass", type=float, default=0.99, help="sprint oracle rule: softmax mass kept")
    p.add_argument("--variation", action=argparse.BooleanOptionalAction, default=True,
                   help="sprint: conductance variation and comparator offsets")
    p.add_argument("--circuit-noise", action=argparse.BooleanOptionalAction, default=True,
                   help="sprint: column read noise and comparator noise")
    p.add_argument(temperature_flag, dest="cell_temperature", type=float, default=27.0,
                   help="gain cell: temperature of the retention model (degC)")
    p.add_argument("--activation", default="softmax", help="softmax | hardsigmoid")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="analogattn", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("characterize", help="simulate the circuits with ngspice into an HDF5 file")
    c.add_argument("--design", help="TOML file overriding the built-in default design")
    c.add_argument("-o", "--output", default="characterization.h5")
    c.add_argument("--jobs", type=int, default=None, help="worker processes (default: core count)")
    c.add_argument("--only", help="families or family.analysis, comma-separated")
    c.add_argument("--cache-dir", help="task cache (default: $ANALOGATTN_CACHE or ~/.cache/analogattn)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_characterize)
    r = sub.add_parser("run", help="perplexity (causal models) or embeddings (encoders) on a text")
    r.add_argument("--model", default="smollm2", help="smollm2 | minilm | file.gguf | HF folder")
    r.add_argument("--text", help="text file (default: a text shipped with the system)")
    r.add_argument("--window", type=int, default=None, help="tokens per window (default 256)")
    r.add_argument("--stride", type=int, default=None, help="window stride (default: window)")
    r.add_argument("--max-scored", type=int, default=None, help="stop after this many scored tokens")
    r.add_argument("--max-chars", type=int, default=None, help="use only the first N characters")
    r.add_argument("--max-sentences", type=int, default=64, help="encoder: sentences to embed")
    r.add_argument("--attention", default="ideal", help="ideal | gaincell | sprint")
    _kernel_options(r, "--temperature")
    r.add_argument("--seed", type=int, default=0, help="seed of circuit variation and noise")
    r.add_argument("--json", help="write the result as JSON here")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_run)
    g = sub.add_parser("generate", help="greedy or sampled text generation")
    g.add_argument("--model", default="smollm2")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=0, help="seed of the sampling and of circuit variation and noise")
    g.add_argument("--attention", default="ideal", help="ideal | gaincell | sprint")
    g.add_argument("--text", help="text whose tail calibrates a circuit kernel (default: the shipped text)")
    g.add_argument("--window", type=int, default=None, help="circuit kernels: causal sliding window (default: none)")
    _kernel_options(g, "--cell-temperature")
    g.set_defaults(func=cmd_generate)
    ft = sub.add_parser("fit", help="fit, validate and export surrogates of a characterization")
    ft.add_argument("characterization", nargs="?", default="characterization.h5")
    ft.add_argument("-o", "--output", default="surrogates.h5")
    ft.add_argument("--plot", help="write PNG figures to this folder")
    ft.add_argument("--degree", type=int, default=3, help="total degree of the read-surface polynomial")
    ft.add_argument("--surface", choices=["auto", "poly", "table"], default="auto",
                    help="read-surface model (auto: lower held-out error)")
    ft.set_defaults(func=cmd_fit)
    d = sub.add_parser("demo", help="the whole pipeline on built-in defaults")
    d.add_argument("--outdir", default="analogattn-demo")
    d.add_argument("--jobs", type=int, default=None)
    d.add_argument("--text", help="text file (default: a text shipped with the system)")
    d.add_argument("--window", type=int, default=512)
    d.add_argument("--max-scored", type=int, default=1024)
    d.add_argument("--levels", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="gain-cell storage levels")
    d.add_argument("--keeps", type=float, nargs="+", default=[0.15, 0.2, 0.3, 0.4], help="pruning keep targets")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except AnalogAttnError as e:
        print(f"analogattn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("analogattn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
