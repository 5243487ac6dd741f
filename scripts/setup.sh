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
  # Debian's own Python keeps venv's pip bootstrap (ensurepip) in the python3-venv package,
  # which a fresh system lacks.
  if ! "$python" -c 'import ensurepip' 2>/dev/null; then
    bash scripts/apt.sh "python3-venv"
  fi
  echo "== creating .venv"
  rm -rf .venv  # a half-made one, from a run that failed here
  "$python" -m venv .venv
fi

stamp=.venv/.inferline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== installing inferline with the build, dev, remote and bench extras (torch is the pinned CPU build)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # PyPI's Linux torch wheel pulls several GB of CUDA libraries; the build extra needs only
  # the CPU build. Take it from pip's configured sources when they have it (find-links, as on
  # the project's build machines), and otherwise from PyTorch's CPU index.
  torch_index=()
  if ! .venv/bin/python -m pip install --quiet --dry-run --ignore-installed --no-deps --no-index \
      --report - 'torch==2.13.0' 2>/dev/null | .venv/bin/python -c \
      'import json, sys; d = sys.stdin.read(); sys.exit(not d or not any(i["metadata"]["version"].endswith("+cpu") for i in json.loads(d)["install"]))'; then
    torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  .venv/bin/python -m pip install --quiet "${torch_index[@]}" -e '.[build,dev,remote,bench]'
  touch "$stamp"
fi

echo "== building the model directory"
.venv/bin/inferline model build
