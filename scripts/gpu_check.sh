#!/usr/bin/env bash
# The GPU checks of issue 8 in one go (an H200 session has ~15 minutes of device time in all).
#
#   bash scripts/gpu_check.sh prepare   # HERE, on the CPU machine: wheels into .whl/, data into .gpu_data/
#   then ONE device call:  run(command="bash scripts/gpu_check.sh run", carry=[".whl", ".gpu_data"],
#                              timeout_s=590)
#
# `run` (on the GPU machine) installs the carried wheels (gsplat, JIT-compiled there on first use, and
# plyfile) into /tmp/site, then runs, each step timed and logged, none stopping the others:
#   1. gsplat's CUDA build (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16; about 70 s on an H200)
#   2. pytest -m gpu  (tests/test_render_gpu.py, tests/test_fit_gpu.py; the trainers' GPU steps:
#      tests/test_trainers_gpu.py for avatar, lrm, mvdiff, tests/test_idfield_vhap.py for idfield base)
#   3. gausslift fit facelift_head/gslrm_sample_000 --holdout-every 4 --minutes 1 --backend gsplat, eval
#      (target: PSNR >= 35 dB held out)
#   4. gausslift fit lego_200 --minutes 2 --backend gsplat, eval (target: >= 32 dB)
#   5. benchmarks/fit_gpu.py: fit it/s vs gsplat's rasterization() alone, syncs per step, peak memory
#   6. benchmarks/rasterize.py --threads 1 2 4 8 16: the cpu backend's thread scaling (300k, 512^2)
# Results: $OUT/gpu_check.json (one entry per step: rc, seconds, numbers), logs $OUT/*.log. The run
# folders stay on the machine (only $OUT comes back). Exit status 0 only when every step passed.
set -u
MODE="${1:-}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
GSPLAT_VERSION="${GSPLAT_VERSION:-1.5.3}"
SHARED="${GAUSSLIFT_SHARED_DATA:-$ROOT/../shared/data}"

prepare() {
    set -e
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
    mkdir -p .whl .gpu_data/facelift_head
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "gsplat==$GSPLAT_VERSION" "plyfile"
    rm -rf .gpu_data/facelift_head/gslrm_sample_000 .gpu_data/lego_200
    cp -r "$SHARED/facelift_head/gslrm_sample_000" .gpu_data/facelift_head/
    cp -r "$SHARED/lego_200" .gpu_data/
    du -sh .whl .gpu_data
    echo "now: run(command=\"bash scripts/gpu_check.sh run\", carry=[\".whl\", \".gpu_data\"], timeout_s=590)"
}

OUT="${OUT:-$ROOT/gpu_check_out}"
RESULTS="$OUT/results.jsonl"

record() {  # name rc seconds [json fields]
    local extra="${4:-}"
    echo "{\"step\": \"$1\", \"rc\": $2, \"seconds\": $3${extra:+, $extra}}" >> "$RESULTS"
    echo "== $1: rc=$2 in $3 s ${extra}"
}

step() {  # name command...: runs it with its output in $OUT/name.log
    local name="$1"; shift
    local t0=$SECONDS
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    record "$name" "$rc" "$((SECONDS - t0))"
    tail -n 15 "$OUT/$name.log"
    return $rc
}

fit_and_score() {  # name data target minutes extra-args...
    local name="$1" data="$2" target="$3" minutes="$4"; shift 4
    local run="/tmp/gl_runs/$name" t0=$SECONDS
    rm -rf "$run"
    python3 -m gausslift fit "$data" --out "$run" --minutes "$minutes" --backend gsplat --device cuda "$@" \
        > "$OUT/fit_$name.log" 2>&1
    local rc=$?
    local fit_s=$((SECONDS - t0))
    python3 -m gausslift eval "$run" --backend gsplat --device cuda > "$OUT/eval_$name.json" 2>> "$OUT/fit_$name.log"
    local erc=$?
    local psnr iters n
    psnr=$(python3 -c "import json;print(round(json.load(open('$OUT/eval_$name.json'))['psnr'],3))" 2>/dev/null || echo null)
    iters=$(python3 -c "import json;print(json.load(open('$run/run.json'))['iters'])" 2>/dev/null || echo null)
    n=$(python3 -c "import json;print(json.load(open('$run/run.json'))['num_gaussians'])" 2>/dev/null || echo null)
    local pass=false
    if [ "$rc" = 0 ] && [ "$erc" = 0 ] && python3 -c "import sys; sys.exit(0 if $psnr >= $target else 1)" 2>/dev/null; then
        pass=true
    fi
    record "fit_$name" "$([ $pass = true ] && echo 0 || echo 1)" "$((SECONDS - t0))" \
        "\"fit_rc\": $rc, \"eval_rc\": $erc, \"fit_seconds\": $fit_s, \"psnr\": $psnr, \"target\": $target, \"iters\": $iters, \"num_gaussians\": $n"
    tail -n 5 "$OUT/fit_$name.log"
    [ $pass = true ]
}

run_checks() {
    mkdir -p "$OUT"
    : > "$RESULTS"
    export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba_cache TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
    export MAX_JOBS="${MAX_JOBS:-16}"
    if ls .whl/*.whl > /dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { record install 1 0; exit 1; }
        export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    fi
    DATA="${GPU_DATA:-$ROOT/.gpu_data}"
    [ -d "$DATA" ] || DATA="$SHARED"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
    python3 -c "import torch, sys; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), sys.version)" \
        >> "$OUT/gpu.txt" 2>&1
    cat "$OUT/gpu.txt"
    local failed=0
    step gsplat_build python3 -c "
import time, torch, gsplat
t = time.time()
from gsplat.cuda._backend import _C  # JIT build on first use
assert _C is not None, 'gsplat CUDA extension did not build'
print('gsplat', gsplat.__version__, 'built/loaded in', round(time.time() - t, 1), 's')" || failed=1
    step pytest_gpu python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_render_gpu.py tests/test_fit_gpu.py \
        tests/test_trainers_gpu.py tests/test_idfield_vhap.py \
        --durations=10 || failed=1
    fit_and_score facelift "$DATA/facelift_head/gslrm_sample_000" 35 1 --holdout-every 4 || failed=1
    fit_and_score lego "$DATA/lego_200" 32 2 || failed=1
    step bench python3 benchmarks/fit_gpu.py --data "$DATA/facelift_head/gslrm_sample_000" --backend gsplat \
        --device cuda --gaussians 100000 300000 --steps 200 --repeats 3 --out "$OUT/fit_gpu.json" || failed=1
    # the CPU backend's thread-scaling curve on the machine's 16 cores (issue 8: 300k Gaussians at 512^2)
    step cpu_scaling timeout 150 python3 benchmarks/rasterize.py --sizes 300k --modes fwdbwd \
        --threads 1 2 4 8 16 --breakdown --runs 3 --json "$OUT/cpu_scaling.json" || failed=1
    python3 - "$RESULTS" "$OUT/fit_gpu.json" > "$OUT/gpu_check.json" <<'EOF'
import json, sys
steps = [json.loads(ln) for ln in open(sys.argv[1]) if ln.strip()]
try:
    bench = json.load(open(sys.argv[2]))
except (OSError, ValueError):
    bench = None
print(json.dumps({"steps": steps, "benchmark": bench, "all_passed": all(s["rc"] == 0 for s in steps)}, indent=2))
EOF
    cat "$OUT/gpu_check.json"
    return $failed
}

case "$MODE" in
    prepare) prepare ;;
    run) run_checks ;;
    *) echo "usage: bash scripts/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
