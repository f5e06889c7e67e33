"""SIGKILL of `analogattn run` while it calibrates and writes --calibration-file (issue #12): the
file is either absent or complete, the next run leaves no temporary file beside it, and a re-run writes the
same file an uninterrupted run writes. Uses a tiny GGUF model so that each run takes seconds."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import run_cli
from tiny_models import write_tiny_gguf


@pytest.fixture(scope="module")
def setup(small_char, tmp_path_factory):
    d = tmp_path_factory.mktemp("killrun")
    char = small_char[0]
    r = run_cli("fit", char, "-o", d / "sur.h5")
    assert r.returncode == 0, r.stderr
    write_tiny_gguf(d / "tiny.gguf")
    words = "the cell holds a key as a voltage and the read transistors turn it into a current".split()
    rng = np.random.default_rng(0)
    (d / "text.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(400)))
    return d


def _args(d, cal):
    return ["run", "--model", d / "tiny.gguf", "--text", d / "text.txt", "--window", 32, "--max-scored", 64,
            "--attention", "gaincell", "--surrogates", d / "sur.h5", "--storage-levels", 32,
            "--calibration-windows", 2, "--calibration-file", cal, "-q"]


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_kill_while_writing_calibration(setup):
    d = setup
    ref = d / "ref" / "cal.npz"
    ref.parent.mkdir()
    t0 = time.perf_counter()
    r = run_cli(*_args(d, ref))
    full = time.perf_counter() - t0
    assert r.returncode == 0 and ref.exists(), r.stderr
    want = _npz(ref)
    rng = np.random.default_rng(12)
    for i, frac in enumerate(sorted(rng.uniform(0.2, 0.95, 3))):
        folder = d / f"k{i}"
        folder.mkdir()
        cal = folder / "cal.npz"
        p = subprocess.Popen([sys.executable, "-m", "analogattn.cli", *map(str, _args(d, cal))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(frac * full)
        p.send_signal(signal.SIGKILL)
        p.wait()
        left = [n for n in os.listdir(folder) if n != "cal.npz"]
        # at most the killed writer's temporary file, which the next write removes
        assert all(n.startswith(".cal.npz.") and n.endswith(".tmp") for n in left), left
        if cal.exists():  # killed after the rename: the file is whole
            got = _npz(cal)
            assert got.keys() == want.keys()
        r = run_cli(*_args(d, cal))
        assert r.returncode == 0, r.stderr
        got = _npz(cal)
        assert got.keys() == want.keys()
        for k in want:
            if k != "__meta__":
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert sorted(os.listdir(folder)) == ["cal.npz"]
