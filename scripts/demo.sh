#!/usr/bin/env bash
# The README's first command: `bash scripts/demo.sh [demo options]`. Installs what the demo needs
# exactly as scripts/test.sh does (CPU torch pinned, so that pip never resolves the multi-GB CUDA build;
# only when torch is missing), then runs `gausslift demo` in the current folder (writes ./gausslift_demo
# unless --out says otherwise). PYTHON=... picks the interpreter (default python3).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0" || exit 1
fi
"$PY" -m pip install -q -e "$ROOT" || exit 1
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$ROOT/.numba_cache}"
exec "$PY" -m gausslift demo "$@"
