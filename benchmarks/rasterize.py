"""Rasteriser benchmark: numba CPU raster kernels vs the dense-tile plain-PyTorch oracle.

Scenes: Gaussians uniform in the unit ball, scales 0.02 with log-normal jitter, opacities U(0.1, 1), random
colours and rotations; one camera at distance 2.7 looking at the centre, horizontal FOV 50 degrees.
Sizes: 20k at 200^2, 100k at 400^2, 300k at 512^2.

What is timed: the rasterisation stage only (tile binning + depth sort + compositing, and its backward),
starting from projected 2D Gaussians (means2d, conics, radii, depths) computed here in numpy (EWA splatting,
eps2d = 0.3, radius = ceil(3 sigma) per axis). Timings are medians of several runs after a warm-up. Peak
memory is measured in a fresh subprocess per (scene, backend, mode): ru_maxrss after the runs minus
ru_maxrss after building the scene and warming up the code paths on a tiny scene (so it is the extra
resident memory the rasteriser needed at its peak).

    python benchmarks/rasterize.py                 # all sizes
    python benchmarks/rasterize.py --sizes 100k --runs 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {"20k": (20_000, 200), "100k": (100_000, 400), "300k": (300_000, 512)}


def make_scene(n, size, seed=0, distance=2.7, fov_deg=50.0, eps2d=0.3):
    """Projected inputs of the rasteriser for a random Gaussian ball seen by one camera."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    means = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0, 1, (n, 1)) ** (1 / 3)
    scales = 0.02 * np.exp(rng.normal(0, 0.3, (n, 3)))
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(n, 3, 3)  # fmt: skip
    cov3 = R @ (scales[:, :, None] ** 2 * np.eye(3)) @ R.transpose(0, 2, 1)
    # camera on the -z axis looking at the origin (OpenCV: x right, y down, z forward)
    pc = means + np.array([0.0, 0.0, distance])
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    cx = cy = 0.5 * size
    tz = pc[:, 2]
    J = np.zeros((n, 2, 3))
    J[:, 0, 0] = f / tz
    J[:, 0, 2] = -f * pc[:, 0] / tz**2
    J[:, 1, 1] = f / tz
    J[:, 1, 2] = -f * pc[:, 1] / tz**2
    cov2 = J @ cov3 @ J.transpose(0, 2, 1) + eps2d * np.eye(2)
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] ** 2
    conics = np.stack([cov2[:, 1, 1] / det, -cov2[:, 0, 1] / det, cov2[:, 0, 0] / det], -1)
    radii = np.ceil(3 * np.sqrt(np.stack([cov2[:, 0, 0], cov2[:, 1, 1]], -1))).astype(np.int32)
    means2d = np.stack([f * pc[:, 0] / tz + cx, f * pc[:, 1] / tz + cy], -1)
    f32 = lambda a: np.ascontiguousarray(a[None], dtype=np.float32)  # noqa: E731
    return dict(
        means2d=f32(means2d),
        conics=f32(conics),
        colors=f32(rng.uniform(0, 1, (n, 3))),
        opacities=f32(rng.uniform(0.1, 1.0, n)),
        radii=np.ascontiguousarray(radii[None]),
        depths=f32(tz),
    )


def _numba_runner(scene, size, backward):
    from gausslift.render.raster import rasterize_to_pixels_bwd, rasterize_to_pixels_fwd

    g = np.random.default_rng(1)
    v_render = g.normal(size=(1, size, size, 3)).astype(np.float32)
    v_alpha = g.normal(size=(1, size, size)).astype(np.float32)

    def run():
        render, alpha, ctx = rasterize_to_pixels_fwd(**scene, backgrounds=None, width=size, height=size)
        if backward:
            rasterize_to_pixels_bwd(ctx, v_render, v_alpha)

    return run


def _torch_runner(scene, size, backward):
    import torch

    from gausslift.render._torch_raster import rasterize_to_pixels_torch

    g = torch.Generator().manual_seed(1)
    v_render = torch.randn(1, size, size, 3, generator=g)
    v_alpha = torch.randn(1, size, size, generator=g)
    ts = {k: torch.from_numpy(v) for k, v in scene.items()}

    def run():
        inp = dict(ts)
        if backward:
            for k in ("means2d", "conics", "colors", "opacities"):
                inp[k] = ts[k].clone().requires_grad_(True)
        with torch.set_grad_enabled(backward):
            render, alpha = rasterize_to_pixels_torch(**inp, backgrounds=None, width=size, height=size)
            if backward:
                ((render * v_render).sum() + (alpha * v_alpha).sum()).backward()

    return run


def measure(key, backend, backward, runs):
    """Median seconds and peak extra RSS (MiB) of one configuration, in this process."""
    n, size = SIZES[key]
    runner = _numba_runner if backend == "cpu" else _torch_runner
    runner(make_scene(200, 32, seed=1), 32, backward)()  # compile / warm up code paths
    scene = make_scene(n, size)
    fn = runner(scene, size, backward)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()  # warm-up at full size
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"median_s": float(np.median(times)), "times": times, "peak_mib": (peak - base) / 1024}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--torch-runs", type=int, default=3)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("SIZE", "BACKEND", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # child process: one configuration, JSON on stdout
        key, backend, mode = args.one
        runs = args.runs if backend == "cpu" else args.torch_runs
        print(json.dumps(measure(key, backend, mode == "fwdbwd", runs)))
        return 0
    rows = []
    for key in args.sizes:
        for mode in ("fwd", "fwdbwd"):
            res = {}
            for backend in ("cpu",) if args.skip_torch else ("cpu", "torch"):
                cmd = [sys.executable, __file__, "--one", key, backend, mode, "--runs", str(args.runs),
                       "--torch-runs", str(args.torch_runs)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    res[backend] = None
                    continue
                res[backend] = json.loads(out.stdout.strip().splitlines()[-1])
            c, t = res.get("cpu"), res.get("torch")
            ratio = t["median_s"] / c["median_s"] if c and t else float("nan")
            rows.append((key, mode, c, t, ratio))
            fmt = lambda r: "failed" if r is None else f"{r['median_s']:.4f} s {r['peak_mib']:7.1f} MiB"  # noqa: E731
            print(f"{key:>5} {mode:>7}  cpu {fmt(c)}   torch {fmt(t) if t or not args.skip_torch else '-'}"
                  f"   ratio {ratio:.1f}x", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
