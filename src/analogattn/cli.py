"""Command line: ``analogattn characterize | fit | run | generate``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import AnalogAttnError


def _only(value: str | None):
    """--only gaincell,reram or gaincell.retention -> {family: set(analyses) | None}."""
    from .characterize.design import FAMILIES
    from .characterize import gaincell
    known = {"gaincell": gaincell.ANALYSES}
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
    from .characterize import gaincell
    from .characterize.design import Design
    from .characterize.runner import characterize

    design = Design.load(args.design)
    sel = _only(args.only)
    analyses = []
    if "gaincell" in sel:
        analyses += gaincell.analyses(design.gaincell, design.gaincell_sweep, sel["gaincell"],
                                      design.simulator.as_options())
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


def cmd_demo(args) -> int:
    """The main job on built-in defaults: characterize every circuit family (cached)."""
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(design=None, only=None, jobs=args.jobs, output=str(out / "characterization.h5"),
                            cache_dir=None, quiet=False)
    return cmd_characterize(ns)


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
    d = sub.add_parser("demo", help="the whole pipeline on built-in defaults")
    d.add_argument("--outdir", default="analogattn-demo")
    d.add_argument("--jobs", type=int, default=None)
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
