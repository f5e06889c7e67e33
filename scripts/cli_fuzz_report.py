"""Count how the CLI answers the fuzz cases of tests/cli_cases.py, per subcommand and per class.

    python scripts/cli_fuzz_report.py --dump cases.json          # the cases, from this checkout
    PYTHONPATH=<other checkout>/src python scripts/cli_fuzz_report.py --cases cases.json

The second form runs the cases against whichever ``analogattn`` is importable (e.g. an older
commit's ``src``), in this process with a time limit per case, and prints a table of outcomes:
``ok`` (exit 2, one line naming the option or file, nothing changed on disk), ``traceback``,
``exit N``, ``accepted`` (exit 0 or still working at the time limit), ``not one line``,
``does not name it``, ``files changed``.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def classify(case, fx, timeout):
    from cli_cases import run_in_process, snapshot
    before = snapshot(fx)
    try:
        rc, out, err, _ = run_in_process(case, fx, timeout=timeout)
    except TimeoutError:
        return "accepted (still working at the limit)"
    except BaseException as e:  # noqa: BLE001 -- an old CLI lets exceptions out
        return f"traceback ({type(e).__name__})"
    _, must = case.resolved(fx)
    changed = before != snapshot(fx)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if rc == 0:
        return "accepted (exit 0)"
    if rc != 2:
        return f"exit {rc}"
    if len(lines) != 1:
        return "not one line"
    if must not in lines[0]:
        return "does not name it"
    if changed:
        return "files changed"
    return "ok"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump", help="write the cases of this checkout to this JSON file")
    ap.add_argument("--cases", help="run the cases from this JSON file")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per case")
    a = ap.parse_args()
    from cli_cases import Case, make_fixtures
    if a.dump:
        from cli_cases import cases
        Path(a.dump).write_text(json.dumps([c.__dict__ for c in cases()], default=list))
        print(f"wrote {a.dump}")
        return
    cs = [Case(**{**d, "argv": tuple(d["argv"]), "env": tuple(tuple(e) for e in d["env"])})
          for d in json.loads(Path(a.cases).read_text())]
    import analogattn
    print(f"analogattn from {Path(analogattn.__file__).parent}", file=sys.stderr)
    per = collections.defaultdict(collections.Counter)
    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(cs):
            fx = make_fixtures(Path(d) / f"fx{i}") if i == 0 or per_case_fixture(c) else fx_shared
            if i == 0:
                fx_shared = fx
            outcome = classify(c, fx, a.timeout)
            per[(c.command, c.klass)][outcome] += 1
            print(f"{c.id}\t{outcome}", file=sys.stderr)
    outcomes = sorted({o for cnt in per.values() for o in cnt})
    print("| command | class | cases | " + " | ".join(outcomes) + " |")
    print("|---|---|---|" + "---|" * len(outcomes))
    total = collections.Counter()
    for (cmd, klass), cnt in sorted(per.items()):
        total.update(cnt)
        print(f"| {cmd} | {klass} | {sum(cnt.values())} | " + " | ".join(str(cnt.get(o, 0)) for o in outcomes) + " |")
    print(f"| all | | {sum(total.values())} | " + " | ".join(str(total.get(o, 0)) for o in outcomes) + " |")
    sys.stdout.flush()
    os._exit(0)  # an old CLI may leave worker pools behind


def per_case_fixture(case) -> bool:
    return False


if __name__ == "__main__":
    main()
