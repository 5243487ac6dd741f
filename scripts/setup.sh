#!/usr/bin/env bash
# Set up everything the service and the tests need. Safe to run again: each step is skipped
# when it is already done.
#   1. a virtual environment in .venv with inferline, the build extra (CPU torch), dev tools,
#      the remote engines' extra and the bench extra (matplotlib, for the benchmark plots)
#   2. the model directory (inferline model build: export, quantise, verify)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "inferline needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$python" -m venv .venv
fi

stamp=.venv/.inferline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== installing inferline with the build, dev, remote and bench extras (torch is the pinned CPU build)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[build,dev,remote,bench]'
  touch "$stamp"
fi

echo "== building the model directory"
.venv/bin/inferline model build
