"""Count how the CLI answers the fuzz cases of tests/cli_cases.py, per subcommand and per class.

    python scripts/cli_fuzz_report.py --dump cases.json          # the cases, from this checkout
    PYTHONPATH=<other checkout>/src python scripts/cli_fuzz_report.py --cases cases.json

The second form runs the cases against whichever ``analogattn`` is importable (e.g. an older
commit's ``src``), each as its own process killed at a time limit, and prints a table of outcomes:
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


def run_process(case, fx, timeout):
    """(exit code, stdout, stderr) of the case as its own process (group), killed at ``timeout``."""
    import signal
    import subprocess
    argv, _ = case.resolved(fx)
    env = dict(os.environ, **{k: v.replace("{fx}", str(fx)) for k, v in case.env})
    p = subprocess.Popen([sys.executable, "-m", "analogattn.cli", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise TimeoutError from None
    return p.returncode, out, err


def classify(case, fx, timeout, in_process=False):
    from cli_cases import run_in_process, snapshot
    before = snapshot(fx)
    try:
        if in_process:  # the current checkout only: fast, the same cli.main the console script calls
            rc, out, err, _ = run_in_process(case, fx, timeout=timeout)
        else:
            rc, out, err = run_process(case, fx, timeout)
    except TimeoutError:
        return "accepted (still working at the limit)"
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
    ap.add_argument("--in-process", action="store_true", help="run the cases in this process (fast; for a "
                                                               "checkout whose CLI never starts real work on them)")
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
            if i == 0:
                fx = make_fixtures(Path(d) / "fx")
            outcome = classify(c, fx, a.timeout, a.in_process)
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


if __name__ == "__main__":
    main()
