#!/usr/bin/env bash
# The README's test command. Installs what the tests need (CPU torch only: the CPU wheel is pinned so
# that pip never resolves the multi-GB CUDA build), then runs the fast test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0" || exit 1
fi
"$PY" -m pip install -q -e ".[dev]" || exit 1
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
"$PY" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5)"; exit 1
fi
exit "$rc"
