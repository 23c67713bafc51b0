"""benchmarks/fit_gpu.py runs on a CPU with the numba backend (the GPU run uses the same code)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fit_benchmark_runs_on_cpu(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fit_gpu
    finally:
        sys.path.pop(0)
    out = tmp_path / "r.json"
    args = ["--backend", "cpu", "--device", "cpu", "--gaussians", "1500", "--steps", "2", "--warmup", "2"]
    assert fit_gpu.main(args + ["--repeats", "1", "--downscale", "4", "--views", "4", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["backend"] == "cpu" and r["gaussians"] == 1500 and r["image"] == "32x32"
    assert r["fit_it_s"] > 0 and r["bare_it_s"] > 0 and r["syncs_per_step"] is None
    assert abs(r["loop_overhead"] - r["bare_it_s"] / r["fit_it_s"]) < 0.01 * r["loop_overhead"] + 1e-3
