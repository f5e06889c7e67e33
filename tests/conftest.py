import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

SMALL_DESIGN = """
[gaincell.sweep]
n_store = 13
n_in = 5
n_write = 7
retention_time = 1e-2
mc_samples = 24
mc_store = 7
mc_in = 3
mc_per_task = 6
"""


def run_cli(*args, env_extra=None, timeout=600):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "analogattn.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def small_char(tmp_path_factory):
    """A real (small-grid) ngspice characterization of the default gain cell."""
    d = tmp_path_factory.mktemp("char")
    design = d / "small.toml"
    design.write_text(SMALL_DESIGN)
    out = d / "char.h5"
    r = run_cli("characterize", "--design", design, "--only", "gaincell", "-o", out, "--cache-dir", d / "cache", "-q")
    assert r.returncode == 0, r.stderr
    return out, design, d / "cache", r
