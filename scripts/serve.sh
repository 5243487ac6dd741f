#!/usr/bin/env bash
# Set up, then run the service on http://0.0.0.0:8000 (INFERLINE_* variables and flags apply).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/inferline serve "$@"
