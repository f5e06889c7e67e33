"""Every `analogattn ...` example in the README's shell blocks runs (issue #12): each line is
taken from the README itself, its optional [groups] included, `a|b` alternatives resolved to the
first, placeholders (FILE, N, DIR, SPEC.toml ...) replaced by tiny real inputs, and a few options
appended that keep it small (scored tokens, new tokens). A README example without a rule here
fails the first test, so the README cannot gain an example that no test runs. The examples run
in README order (fit reads what the characterize example wrote)."""
import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

README = ROOT / "README.md"


def shell_blocks():
    text = README.read_text()
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def readme_commands():
    out = []
    for block in shell_blocks():
        block = re.sub(r"\\\n\s*", " ", block)  # continuation lines joined
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("analogattn "):
                out.append(line)
    return out


def heredocs():
    """{file name: content} of `cat > NAME <<'TAG' ... TAG` blocks in the README's shell blocks."""
    docs = {}
    for block in shell_blocks():
        for m in re.finditer(r"cat > (\S+) <<'(\w+)'\n(.*?)\n\2\n", block, flags=re.S):
            docs[m.group(1)] = m.group(3) + "\n"
    return docs


def concrete(line):
    """The README line with its optional groups in, first alternatives, as argv tokens."""
    line = re.sub(r"\[([^\[\]]*)\]", r"\1", line)
    return [t.split("|")[0] if "|" in t and not t.startswith("tcp:") else t for t in shlex.split(line)][1:]


PER_FLAG = {"--jobs": "2", "--stride": "64", "--max-scored": "64", "--workers": "1", "--window": "128"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, small_char):
    from cli_cases import PROSE
    from tiny_models import write_tiny_gpt2
    d = tmp_path_factory.mktemp("readme")
    from test_circuit_pipeline import SMALL_ALL  # reduced grids of every family
    (d / "design.toml").write_text(SMALL_ALL)
    (d / "text.txt").write_text("\n".join(PROSE * 3 for _ in range(40)))
    write_tiny_gpt2(d / "gpt2")
    r = run_cli("fit", small_char[0], "-o", d / "gaincell_bundle.h5")
    assert r.returncode == 0, r.stderr
    spec = d / "spec.toml"
    from test_sweep import spec_text
    from tiny_models import write_tiny_gguf
    write_tiny_gguf(d / "tiny.gguf")
    spec.write_text(spec_text(d, levels=(8, 32), chips=1))
    for name, body in heredocs().items():
        (d / name).write_text(body)
    return d


def substitute(argv, d):
    """Placeholders -> tiny inputs; returns (argv, outputs the run must create)."""
    cmd = argv[0]
    out, made = [], []
    for i, tok in enumerate(argv):
        prev = argv[i - 1] if i else ""
        if prev in PER_FLAG and tok in ("N", "256"):
            tok = PER_FLAG[prev]
        elif tok == "FILE.toml":
            tok = str(d / "design.toml")
        elif tok == "FILE":
            tok = str(d / "text.txt")
        elif tok == "characterization.h5":
            tok = str(d / "characterization.h5")
            if cmd == "characterize":
                made.append(tok)
        elif tok == "surrogates.h5":
            tok = str(d / ("surrogates.h5" if cmd == "fit" else "gaincell_bundle.h5"))
            if cmd == "fit":
                made.append(tok)
        elif tok == "DIR":
            tok = str(d / ("plots" if prev == "--plot" else "cache"))
        elif tok == "out.json":
            tok = str(d / "out.json")
            made.append(tok)
        elif tok == "path/to/gpt2-folder":
            tok = str(d / "gpt2")
        elif tok == "SPEC.toml":
            tok = str(d / "spec.toml")
        elif tok == "sweep-results":
            tok = str(d / "sweep-results")
            made.append(tok + "/results.parquet")
        elif tok.startswith("tcp://HOST"):
            tok = "serial"  # no cluster here: the same spec through the in-process path
        elif tok in heredocs():
            tok = str(d / tok)
        out.append(tok)
    if cmd == "run" and "minilm" not in out:  # small: 64 scored tokens, windows of at most 128
        if "--max-scored" in out:
            out[out.index("--max-scored") + 1] = "64"
        else:
            out += ["--max-scored", "64"]
        if "--window" in out and int(out[out.index("--window") + 1]) > 128:
            out[out.index("--window") + 1] = "128"
        if "../shared/data/wikitext2_valid.txt" in out:
            out[out.index("../shared/data/wikitext2_valid.txt")] = str(ROOT.parent / "shared/data/wikitext2_valid.txt")
    if cmd == "run" and "minilm" in out:
        out += ["--text", str(d / "text.txt")] if "--text" not in out else []
        out += ["--max-sentences", "8"]
    if cmd == "run" and "--attention" in out and "--window" not in out:
        out += ["--window", "128", "--calibration-windows", "1"]
    if cmd == "generate":
        out += ["--max-new-tokens", "4"]
    if cmd in ("run", "sweep", "characterize"):
        out += ["-q"]
    if cmd in ("sweep", "characterize") and "--cache-dir" not in out:
        out += ["--cache-dir", str(d / "cache")]
    return out, made


def test_every_readme_example_has_a_rule():
    cmds = readme_commands()
    assert len(cmds) >= 8, cmds
    for line in cmds:
        argv = concrete(line)
        assert argv[0] in ("characterize", "fit", "run", "generate", "demo", "sweep"), line
        left = [t for t in substitute(argv, ROOT)[0] if re.fullmatch(r"[A-Z][A-Z_.]*", t)]
        assert not left, f"README example {line!r}: no test rule for placeholder(s) {left}"


@pytest.mark.ci
@pytest.mark.parametrize("line", readme_commands())
def test_readme_example_runs(line, inputs):
    argv, made = substitute(concrete(line), inputs)
    r = run_cli(*argv, timeout=900)
    assert r.returncode == 0, f"{line}\n-> {argv}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    for f in made:
        assert Path(f).exists(), f"{line}: {f} was not written"
    if argv[0] == "run" and "--json" in argv:
        res = json.loads((inputs / "out.json").read_text())
        assert res["scored_tokens"] == 64 and 1 < res["perplexity"] < 1e5
