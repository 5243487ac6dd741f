#!/usr/bin/env bash
# Set up, then run every check CI runs: lint, types, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# The queue tests start their own redis-server (Debian's, 7.x); the benchmark smoke test
# drives the server with wrk.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v wrk >/dev/null || missing+=(wrk)
bash scripts/apt.sh "${missing[@]}"

echo "== ruff"
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
