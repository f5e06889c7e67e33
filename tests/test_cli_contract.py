"""The CLI's contract for every bad input (issue #12): exit code 2, exactly one line on stderr that
starts with ``analogattn: error:`` and names the option or the file, no traceback, nothing on disk
changed, within a time bound. Cases are generated from the options' metadata (tests/cli_cases.py);
they run in this process (the same ``cli.main`` the console script calls), and a sample runs as
real subprocesses too."""
import collections
import subprocess
import sys
from pathlib import Path

import pytest

from cli_cases import cases, make_fixtures, run_in_process, snapshot

CASES = cases()
TIME_BOUND = 30.0  # s per case; the validation cases take milliseconds, model-file ones ~1 s


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("fx"))


def test_enough_cases_of_every_command():
    per = collections.Counter(c.command for c in CASES)
    assert len(CASES) >= 200, len(CASES)
    for command in ("characterize", "fit", "run", "generate", "demo"):
        assert per[command] >= 10, per


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_invocation(case, fx):
    before = snapshot(fx)
    rc, out, err, seconds = run_in_process(case, fx, timeout=TIME_BOUND * 2)
    _, must = case.resolved(fx)
    after = snapshot(fx)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err[-2000:])
    assert len(lines) == 1, err
    assert lines[0].startswith("analogattn: error: "), lines[0]
    assert must in lines[0], (must, lines[0])
    assert before == after, "files changed: " + ", ".join(
        sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))
    assert seconds < TIME_BOUND, seconds


SUBPROCESS_SAMPLE = ["run:window:below_min", "run:keep:given_to_gaincell", "fit:characterization:zero.h5",
                     "characterize:design:aot", "run:model:truncated.gguf", "run:text:binary.bin",
                     "run:json:precious.txt", "generate:top_k_above_vocab", "demo:levels:below_min",
                     "top:no_command"]


@pytest.mark.parametrize("cid", SUBPROCESS_SAMPLE)
def test_bad_invocation_as_a_process(cid, fx):
    """The same contract through a real process: the exit code the shell sees."""
    case = next(c for c in CASES if c.id == cid)
    argv, must = case.resolved(fx)
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", *argv], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and must in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_internal_error_is_one_line_with_a_log(fx, monkeypatch, tmp_path):
    """A bug (not the user's mistake) prints one line naming a log with the traceback, exit 1;
    --debug shows the traceback instead."""
    from analogattn import cli
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)

    def boom(o):
        raise RuntimeError("a bug\nwith two lines")
    monkeypatch.setattr(cli, "cmd_fit", boom)
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(["fit", str(fx / "foreign.h5"), "-o", str(tmp_path / "b.h5")])
    lines = err.getvalue().splitlines()
    assert rc == 1 and len(lines) == 1, err.getvalue()
    assert "RuntimeError: a bug" in lines[0] and "Traceback" not in lines[0]
    log = lines[0].split("full traceback in ")[1].split(";")[0]
    text = open(log).read()
    assert "Traceback" in text and "with two lines" in text and "boom" in text
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "fit", str(fx / "foreign.h5"), "-o", str(tmp_path / "b.h5")])


def test_help_shows_every_kernel_option_with_unit_range_and_default():
    from analogattn import cli
    text = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for flag, bits in {"--storage-levels": ["gaincell", "default 8"],
                       "--token-period": ["[s]", "default 6.5e-08"],
                       "--keep": ["sprint", "default 0.3"],
                       "--cell-temperature": ["degC", "default 27"],
                       "--rule": ["{anchor,fixed,oracle,none}"]}.items():
        i = text.index("\n  " + flag + " ")
        chunk = " ".join(text[i:i + 400].split())
        for b in bits:
            assert b in chunk, (flag, b, chunk)


@pytest.mark.ci
def test_long_single_line_text_streams_in_bounded_memory(tmp_path):
    """A 50 MB text without a newline is cut at spaces a chunk at a time: peak memory stays
    near the model's own (~0.9 GB), far from the ~7 GB of tokenising it whole."""
    import json

    import numpy as np

    from conftest import run_cli
    rng = np.random.default_rng(0)
    words = np.array("the cell holds a key as a voltage and the read transistors turn it into a current".split())
    text = tmp_path / "one_line.txt"
    with open(text, "w") as f:
        for _ in range(50):
            f.write(" ".join(rng.choice(words, 200_000)) + " ")
    assert text.stat().st_size > 45e6
    out = tmp_path / "r.json"
    r = run_cli("run", "--model", "smollm2", "--text", text, "--max-scored", 256, "-q", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["scored_tokens"] == 256
    assert res["peak_rss_mb"] < 1500, res["peak_rss_mb"]


def test_cut_before_a_space_gives_the_ids_of_the_whole_text(tmp_path):
    """Cutting a line without newlines before a single space (between two non-spaces) is a
    pre-tokenisation boundary: the streamed ids equal whole-text tokenisation."""
    import numpy as np

    from analogattn.evaluate.perplexity import stream_tokens
    from analogattn.transformer.loaders import load
    from tiny_models import write_tiny_gguf
    write_tiny_gguf(tmp_path / "t.gguf")
    tok = load(str(tmp_path / "t.gguf")).tokenizer
    rng = np.random.default_rng(1)
    words = ["the", "then", "in", "a", "x9", "12", "...", "it's", "  two", "tab\tbed"]
    text = " ".join(rng.choice(words, 3000))
    p = tmp_path / "line.txt"
    p.write_text(text)
    chunks = list(stream_tokens(p, tok, chunk_chars=500))
    assert len(chunks) > 10  # it did cut the line
    assert np.concatenate(chunks).tolist() == tok.encode(text)


def test_kernel_config_file_equals_flags_and_flags_override(tmp_path):
    from analogattn import cli
    p = tmp_path / "gc.toml"
    p.write_text("[array]\nstorage_levels = 32\n[converters]\nadc_bits = 6\n")
    ap = cli.build_parser()

    def cfg(*argv):
        return cli._kernel_config(ap.parse_args(["run", "--attention", "gaincell", *argv]), "gaincell", None, 0)[1]
    from_file = cfg("--config", str(p), "--mismatch")
    from_flags = cfg("--storage-levels", "32", "--adc-bits", "6", "--mismatch")
    assert from_file == from_flags
    assert (from_file.storage_levels, from_file.adc_bits, from_file.mismatch) == (32, 6, True)
    assert from_file != cfg()  # the file did change something
    assert cfg("--config", str(p), "--storage-levels", "16").storage_levels == 16


def test_empty_names_are_refused_not_read_as_cwd(tmp_path, monkeypatch):
    """Path("") is the current folder: every layer that takes a folder refuses an empty name (the
    demo once ran into cwd with --outdir ""), and an empty $ANALOGATTN_CACHE means unset."""
    from analogattn.atomic import check_writable_dir
    from analogattn.characterize.runner import default_cache_dir
    from analogattn.errors import AnalogAttnError
    from analogattn.userio import check_output_dir
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AnalogAttnError, match="--outdir ''"):
        check_output_dir("", "--outdir")
    with pytest.raises(AnalogAttnError, match="task cache ''"):
        check_writable_dir("", "task cache")
    monkeypatch.setenv("ANALOGATTN_CACHE", "")
    assert default_cache_dir() != Path("") and default_cache_dir().is_absolute()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_folder_that_accepts_no_file_is_refused_before_work(tmp_path):
    """os.access says yes to root in /proc, where no file can be created: the output checks try
    to create (and remove) a probe file instead, so the refusal comes before any work, one line,
    exit 2; in a writable folder the probe leaves nothing behind."""
    from analogattn.atomic import check_writable_dir, check_writable_output
    from analogattn.errors import AnalogAttnError
    with pytest.raises(AnalogAttnError, match="folder /proc is not writable"):
        check_writable_output("/proc/x.png", "--plot")
    with pytest.raises(AnalogAttnError, match="/proc/cache"):
        check_writable_dir("/proc/cache", "task cache")
    check_writable_output(tmp_path / "out.h5", "-o")
    check_writable_dir(tmp_path / "cache", "task cache")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache"]
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", "characterize", "-o", "/proc/c.h5",
                        "--cache-dir", str(tmp_path / "c2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "/proc/c.h5" in r.stderr, r.stderr
