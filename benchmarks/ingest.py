"""Ingest throughput on the mouse session (``../shared/data/mouse_minimal_session``, 3 used cameras,
1280x1024 H.264, 120 frames): views/s, CPU seconds per view and where the CPU goes.

Each run is a fresh ``python -m gausslift ingest SESSION --size 512 --frames F --workers W`` subprocess
(what a user runs). Reported per run: wall time of the whole command; the ingest's own views/s (from
its report: reading the capture to the last file written, without interpreter start-up); the CPU
seconds the command used (user + sys, all threads, from ``getrusage``); and the per-phase CPU seconds
the ingest measures itself (thread time of the tasks: decode, masks, re-frame, write; OpenCV's and
FFmpeg's own worker threads are only in the total). CPU seconds hardly depend on what else runs on a
shared machine; wall time and views/s do, so the load average is printed before and after.

References measured in the same run, interleaved with the ``--workers 2`` runs so that all see the same
load: the same command with ``--workers 1`` (one worker for the per-view work, the reader thread kept;
the ratio is the speed-up from the second core), and with ``--against TREE`` the same command run from
another checkout of gausslift (e.g. ``git archive <commit> | tar -x -C TREE``: the code before a
change), on the same session and frames. And the resampling-map builder, timed on
one camera of the session at 512^2: OpenCV's ``initUndistortRectifyMap`` (what ingest uses when every
sample is valid) against the numpy maps it replaced (identical maps, see
``tests/test_preprocess_undistort.py``).

    python benchmarks/ingest.py                       # all 120 frames (360 views), 3 runs each
    python benchmarks/ingest.py --frames 0:120:20     # the acceptance selection (18 views)
    python benchmarks/ingest.py --against /tmp/old    # and an older checkout, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("GAUSSLIFT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SESSION = DATA / "mouse_minimal_session"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_once(frames: str, workers: int, out: Path, tree: Path = ROOT) -> dict:
    cmd = [sys.executable, "-m", "gausslift", "ingest", str(SESSION), "--size", "512", "--out", str(out),
           "--workers", str(workers)] + (["--frames", frames] if frames else [])  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rep = json.loads((out / "report.json").read_text())
    n = len(rep["views"])
    return {"workers": workers, "views": n, "wall_s": wall, "views_per_s_cmd": n / wall,
            "views_per_s": rep["timings"]["views_per_s"], "cpu_s": cpu, "cpu_ms_per_view": 1e3 * cpu / n,
            "phases": rep["timings"].get("cpu_s", {}), "ingest_s": rep["seconds"]}  # fmt: skip


def map_builders(repeats: int = 20) -> tuple[float, float, float]:
    """Median ms per 512^2 map: OpenCV fast path, numpy; largest difference between them (px)."""
    from gausslift.cameras import make_K
    from gausslift.io import read_scene
    from gausslift.preprocess.undistort import remap_maps, remap_maps_numpy

    cam = read_scene(SESSION).views[0].camera
    c = cam.K[0, 2], cam.K[1, 2]
    ray = np.linalg.solve(cam.K, [c[0] + 40.0, c[1] - 30.0, 1.0])  # aim a little off-axis, as ingest does
    z = ray / np.linalg.norm(ray)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    R_rel = np.stack([x, np.cross(z, x), z])
    K_out = make_K(2.5 * cam.K[0, 0] * 512 / cam.width, 2.5 * cam.K[0, 0] * 512 / cam.width, 256.0, 256.0)
    times = {}
    for name, fn in (("cv2", remap_maps), ("numpy", remap_maps_numpy)):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            maps = fn(cam, R_rel, K_out, 512, 512)
            ts.append(time.perf_counter() - t)
        times[name] = (1e3 * statistics.median(ts), maps)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(times["cv2"][1], times["numpy"][1]))
    return times["cv2"][0], times["numpy"][0], diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="", help="--frames for ingest (default: all 120 frames)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each configuration (interleaved)")
    ap.add_argument("--no-reference", action="store_true", help="skip the --workers 1 runs")
    ap.add_argument("--against", type=Path, help="another checkout of gausslift, run the same way")
    args = ap.parse_args()
    if not SESSION.is_dir():
        print(f"SKIP: {SESSION} not found (set GAUSSLIFT_SHARED_DATA)")
        return 0
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    print(f"load average before: {load()} ({os.cpu_count()} CPUs)")
    configs = [("workers 2", 2, ROOT)] + ([] if args.no_reference else [("workers 1", 1, ROOT)])
    if args.against:
        configs.append((f"{args.against}, workers 2", 2, args.against.resolve()))
    res: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory(prefix="gausslift_bench_ingest_") as tmp:
        for i in range(args.runs):
            for k, (name, w, tree) in enumerate(configs):
                r = run_once(args.frames, w, Path(tmp) / f"c{k}_{i}", tree)
                res[name].append(r)
                print(
                    f"  {name} run {i + 1}: {r['views']} views, {r['wall_s']:.1f} s wall "
                    f"({r['views_per_s_cmd']:.1f} views/s with start-up), "
                    f"ingest {r['views_per_s']:.1f} views/s, CPU {r['cpu_s']:.1f} s = "
                    f"{r['cpu_ms_per_view']:.0f} ms/view, phases {r['phases']}"
                )
    print(f"load average after: {load()}")
    keys = ("views_per_s", "views_per_s_cmd", "cpu_ms_per_view", "wall_s")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in res.items()}
    for name, m in med.items():
        print(
            f"median, {name}: ingest {m['views_per_s']:.1f} views/s, "
            f"{m['views_per_s_cmd']:.1f} views/s with start-up, {m['wall_s']:.1f} s, "
            f"CPU {m['cpu_ms_per_view']:.0f} ms/view"
        )
    base = med["workers 2"]
    for name, m in med.items():
        if name != "workers 2":
            print(
                f"workers 2 vs {name}: {base['views_per_s'] / m['views_per_s']:.2f}x views/s, "
                f"{m['cpu_ms_per_view'] / base['cpu_ms_per_view']:.2f}x less CPU per view"
            )
    runs = res["workers 2"]
    phases = {k: statistics.median(r["phases"].get(k, 0.0) for r in runs) for k in runs[0]["phases"]}
    n = runs[0]["views"]
    print("CPU ms per view by phase (median, workers 2): "
          + ", ".join(f"{k} {1e3 * v / n:.1f}" for k, v in phases.items()))  # fmt: skip
    fast, slow, diff = map_builders()
    print(f"512^2 resampling map: OpenCV {fast:.2f} ms, numpy {slow:.2f} ms ({slow / fast:.1f}x), "
          f"max difference {diff:.1e} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
