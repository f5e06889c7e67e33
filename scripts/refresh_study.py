"""Retention over long contexts and refresh (issue 16): SmolLM2 with gain-cell attention over one
long window (teacher-forced perplexity on text), for several refresh intervals, at the default
token period; perplexity by context length (the age of the oldest keys a token attends to) and the
attention energy per token (refresh writes included); a figure of both against the interval.

    .venv/bin/python scripts/refresh_study.py --surrogates surrogates.h5 [--window 2048]
        [--intervals 0,1024,256,64] [--levels 32] [--out refresh-study]

Each point is one ``analogattn run`` (its JSON kept in the output folder); ``0`` = never refresh.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run(args, out: Path, name: str, extra: list[str]) -> dict:
    js = out / f"{name}.json"
    if not js.exists():
        cmd = [sys.executable, "-m", "analogattn.cli", "run", "--model", "smollm2", "--text", args.text,
               "--window", str(args.window), "--max-scored", str(args.window), "--json", str(js), "-q", *extra]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(js.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogates", required=True)
    ap.add_argument("--text", default="/work/shared/data/wikitext2_valid.txt")
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--intervals", default="0,1024,256,64")
    ap.add_argument("--levels", type=int, default=32)
    ap.add_argument("--out", default="refresh-study")
    ap.add_argument("--calibration-windows", type=int, default=1)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(exist_ok=True)
    ideal = run(a, out, "ideal", ["--attention", "ideal"])
    rows = []
    for n in [int(x) for x in a.intervals.split(",")]:
        r = run(a, out, f"refresh_{n}", ["--attention", "gaincell", "--surrogates", a.surrogates,
                                        "--storage-levels", str(a.levels), "--refresh-interval", str(n),
                                        "--calibration-windows", str(a.calibration_windows)])
        rows.append((n, r))
    print(f"{'refresh every':>14s} {'ppl':>9s} {'x ideal':>8s} {'nJ/token':>9s} {'refresh nJ':>10s}  ppl by context "
          f"length ({', '.join(str(b['from']) for b in ideal['perplexity_by_position'])} ..)")
    table = []
    for n, r in rows:
        e = r["cost"]["energy_per_token_J"]
        er = r["cost"]["energy_parts_J"].get("refresh", 0.0)
        by = [b["perplexity"] / i["perplexity"] for b, i in zip(r["perplexity_by_position"],
                                                                 ideal["perplexity_by_position"])]
        table.append({"refresh_interval": n, "perplexity": r["perplexity"],
                      "ratio": r["perplexity"] / ideal["perplexity"], "energy_per_token_J": e,
                      "refresh_energy_J": er, "ratio_by_position": by})
        print(f"{n or 'never':>14} {r['perplexity']:9.3f} {r['perplexity'] / ideal['perplexity']:8.4f} "
              f"{e * 1e9:9.1f} {er * 1e9:10.2f}  " + " ".join(f"{x:.3f}" for x in by))
    (out / "refresh.json").write_text(json.dumps({"ideal": ideal["perplexity"], "rows": table}, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    xs = [t["refresh_interval"] or 2 * a.window for t in table]
    ax[0].semilogx(xs, [t["ratio"] for t in table], "o-")
    ax[0].set_xlabel("refresh interval [tokens] (rightmost: never)")
    ax[0].set_ylabel("perplexity / ideal")
    ax2 = ax[0].twinx()
    ax2.semilogx(xs, [t["energy_per_token_J"] * 1e9 for t in table], "s--", color="C1")
    ax2.set_ylabel("attention energy per token [nJ]", color="C1")
    centres = [b["from"] + 0.5 * (b["to"] - b["from"]) for b in ideal["perplexity_by_position"]]
    for t in table:
        ax[1].plot(centres[:len(t["ratio_by_position"])], t["ratio_by_position"], "o-",
                   label=f"refresh {t['refresh_interval'] or 'never'}")
    ax[1].set_xlabel("context length (age of the oldest keys) [tokens]")
    ax[1].set_ylabel("perplexity / ideal (same tokens)")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "refresh.png", dpi=120)
    print(f"wrote {out / 'refresh.json'} and {out / 'refresh.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
