"""Retention over long contexts and refresh (issue 16): SmolLM2 with gain-cell attention over one
long context of WikiText-2 (teacher-forced perplexity on the text), for a log spread of refresh
intervals at the default token period; perplexity / ideal and the attention energy per token
(refresh writes included) against the interval, and perplexity by context age (the age of the
oldest key a token reads) for never-refresh against the best interval: a table (Markdown + JSON)
and a figure.

    .venv/bin/python scripts/refresh_study.py --surrogates surrogates.h5 [--tokens 2048]
        [--intervals 0,1024,512,256,128,64] [--levels 32] [--mode prefill|decode] [--out refresh-study]

``--mode prefill`` (default): each point is one ``analogattn run --window T --max-scored T`` (one
window, every token scored, the cells written at their positions and read by every later query:
the same decays as a decode); ``--mode decode``: each point is ``analogattn generate
--teacher-forced --max-new-tokens T`` (token by token through the KV cache, ~20x slower). The two
score the same tokens with the same calibration (tests/test_long_decode.py and the README say
where they differ). Each point's JSON is kept in the output folder and reused; ``0`` = never.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run(args, out: Path, name: str, extra: list[str]) -> dict:
    tp = f"_tp{args.token_period:g}" if args.token_period is not None and name != "ideal" else ""
    js = out / f"{args.mode}_{name}{tp}.json"
    if not js.exists():
        if args.mode == "prefill":
            cmd = [sys.executable, "-m", "analogattn.cli", "run", "--model", "smollm2", "--text", args.text,
                   "--window", str(args.tokens), "--max-scored", str(args.tokens), "--json", str(js), "-q", *extra]
        else:
            cmd = [sys.executable, "-m", "analogattn.cli", "generate", "--teacher-forced", "--model", "smollm2",
                   "--text", args.text, "--max-new-tokens", str(args.tokens), "--json", str(js), "-q", *extra]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(js.read_text())


def by_age(r: dict) -> list[dict]:
    return r.get("perplexity_by_position") or r.get("perplexity_by_age") or []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogates", required=True)
    ap.add_argument("--text", default="/work/shared/data/wikitext2_valid.txt")
    ap.add_argument("--tokens", "--window", type=int, default=2048, dest="tokens",
                    help="tokens scored in one context (prefill: the window)")
    ap.add_argument("--intervals", default="0,1024,512,256,128,64")
    ap.add_argument("--levels", type=int, default=32)
    ap.add_argument("--mode", choices=("prefill", "decode"), default="prefill")
    ap.add_argument("--out", default="refresh-study")
    ap.add_argument("--calibration-windows", type=int, default=1)
    ap.add_argument("--token-period", type=float, default=None, help="s per token (default: the kernel's, 65 ns)")
    a = ap.parse_args(argv)
    tp_flag = ["--token-period", repr(a.token_period)] if a.token_period is not None else []
    suffix = f"_tp{a.token_period:g}" if a.token_period is not None else ""
    out = Path(a.out)
    out.mkdir(exist_ok=True)
    ideal = run(a, out, "ideal", ["--attention", "ideal"])
    rows = []
    for n in [int(x) for x in a.intervals.split(",")]:
        r = run(a, out, f"refresh_{n}", ["--attention", "gaincell", "--surrogates", a.surrogates,
                                        "--storage-levels", str(a.levels), "--refresh-interval", str(n),
                                        "--calibration-windows", str(a.calibration_windows), *tp_flag])
        rows.append((n, r))
    ib = by_age(ideal)
    table = []
    for n, r in rows:
        e = r["cost"]["energy_per_token_J"]
        er = r["cost"]["energy_parts_J"].get("refresh", 0.0)
        table.append({"refresh_interval": n, "perplexity": r["perplexity"],
                      "ratio": r["perplexity"] / ideal["perplexity"], "energy_per_token_J": e,
                      "refresh_energy_per_token_J": er, "context": r["cost"]["context"],
                      "by_age": [{"from": b["from"], "to": b["to"], "perplexity": b["perplexity"],
                                  "ratio": b["perplexity"] / i["perplexity"]} for b, i in zip(by_age(r), ib)]})
    best = min((t for t in table if t["refresh_interval"]), key=lambda t: t["ratio"], default=None)
    never = next((t for t in table if not t["refresh_interval"]), None)
    name = lambda t: f"every {t['refresh_interval']}" if t["refresh_interval"] else "never"  # noqa: E731
    md = [f"SmolLM2, {a.tokens} tokens of {Path(a.text).name} in one context ({a.mode}), gain cell "
          f"{a.levels} storage levels, token period "
          f"{'65 ns (default)' if a.token_period is None else f'{a.token_period:g} s'}; ideal perplexity "
          f"{ideal['perplexity']:.4f}; energy per token at a {table[0]['context'] if table else a.tokens}-token context", "",
          "| refresh | perplexity | x ideal | attention nJ/token | of which refresh nJ/token |",
          "|---|---|---|---|---|"]
    for t in table:
        md.append(f"| {name(t)} | {t['perplexity']:.4f} | {t['ratio']:.4f} | {t['energy_per_token_J'] * 1e9:.1f} | "
                  f"{t['refresh_energy_per_token_J'] * 1e9:.3f} |")
    md += ["", "Perplexity / ideal by context age (same tokens):", "",
           "| context age [tokens] | " + " | ".join(name(t) for t in (never, best) if t) + " |",
           "|---|" + "---|" * len([t for t in (never, best) if t])]
    for j, b in enumerate(ib):
        md.append(f"| {b['from']}-{b['to']} | " + " | ".join(f"{t['by_age'][j]['ratio']:.4f}"
                                                           for t in (never, best) if t and j < len(t["by_age"])) + " |")
    text = "\n".join(md)
    print(text)
    (out / f"refresh_{a.mode}{suffix}.md").write_text(text + "\n")
    (out / f"refresh_{a.mode}{suffix}.json").write_text(json.dumps(
        {"ideal": ideal["perplexity"], "ideal_by_age": ib, "tokens": a.tokens, "mode": a.mode, "levels": a.levels,
         "rows": table, "best_interval": best["refresh_interval"] if best else None}, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    never_x = 2 * max([t["refresh_interval"] for t in table] + [a.tokens])
    xs = [t["refresh_interval"] or never_x for t in table]
    period = "65 ns" if a.token_period is None else f"{a.token_period:g} s"
    ax[0].semilogx(xs, [t["ratio"] for t in table], "o-", color="C0")
    ax[0].set_xlabel(f"refresh interval [tokens] (rightmost, x={never_x}: never)")
    ax[0].set_ylabel("perplexity / ideal")
    ax[0].set_title(f"{a.tokens}-token context, {a.levels} levels ({a.mode}), {period} per token", fontsize=9)
    ax[1].loglog(xs, [t["energy_per_token_J"] * 1e9 for t in table], "s-", color="C1", label="attention, total")
    pts = [(x, t["refresh_energy_per_token_J"] * 1e9) for x, t in zip(xs, table) if t["refresh_interval"]]
    if pts:
        ax[1].loglog(*zip(*pts), "^-", color="C2", label="of which refresh writes")
    ax[1].set_xlabel(f"refresh interval [tokens] (x={never_x}: never)")
    ax[1].set_ylabel(f"energy per token at a {table[0]['context'] if table else a.tokens}-token context [nJ]")
    ax[1].legend(fontsize=8)
    centres = [0.5 * (b["from"] + b["to"]) for b in ib]
    for t in (never, best):
        if t:
            ax[2].plot(centres[:len(t["by_age"])], [b["ratio"] for b in t["by_age"]], "o-", label=f"refresh {name(t)}")
    ax[2].axhline(1.0, color="k", lw=0.6)
    ax[2].set_xlabel("context age (oldest key read) [tokens], bin centre")
    ax[2].set_ylabel("perplexity / ideal (same tokens)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"refresh_{a.mode}{suffix}.png", dpi=120)
    stem = out / f"refresh_{a.mode}{suffix}"
    print(f"wrote {stem}.md, {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
