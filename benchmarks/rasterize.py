"""Rasteriser benchmark: numba CPU raster kernels vs the dense-tile plain-PyTorch oracle.

Scenes: Gaussians uniform in the unit ball, scales 0.02 with log-normal jitter, opacities U(0.1, 1), random
colours and rotations; one camera at distance 2.7 looking at the centre, horizontal FOV 50 degrees.
Sizes: 20k at 200^2, 100k at 400^2, 300k at 512^2.

What is timed (--stage):
* full (default): ``gausslift.render.rasterize(..., backend="cpu")`` vs ``backend="torch"``: projection, tile
  binning, depth sort, compositing, and for fwdbwd the backward to means/quats/scales/opacities/colors;
* raster: only the raster stage (binning + sort + compositing, and its backward to means2d/conics/colors/
  opacities): ``raster.rasterize_to_pixels_fwd/bwd`` vs the dense-tile ``rasterize_to_pixels_torch``, from
  2D Gaussians projected here in numpy (EWA, eps2d = 0.3, radius = ceil(3 sigma) per axis).
The torch reference is the correctness oracle, not a tuned renderer: with gradients it runs a no-grad pass
for each tile's used list length, then composites every tile batch under activation checkpointing (about
three compositing passes for fwd+bwd, to stay under 1 GB), so its fwd ratio is the cleaner comparison.
Timings are medians of several runs after a warm-up run. Peak memory is measured in a fresh subprocess
per (scene, backend, mode): the kernel's peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs
after imports, scene creation, a tiny warm-up render and malloc_trim; the reported value is VmHWM after
the warm-up and timed runs minus the RSS at the reset: the extra resident memory at the peak of a render.

OMP_WAIT_POLICY: torch and numba each run an OpenMP thread pool; with the default (active) policy the
idle threads of one spin while the other works, which on 2 cores halved the speed of the mixed
torch + numba pipeline (100k fwd+bwd 0.36 s -> 0.18 s with PASSIVE, measured). It must be set before torch
is imported, so the measured subprocesses get OMP_WAIT_POLICY=PASSIVE (both backends) unless the caller
set it; ``--omp-wait-policy ACTIVE`` measures the default behaviour.

Thread scaling (``--threads 1 2 4 8 16``): the cpu backend alone, one subprocess per thread count with
NUMBA_NUM_THREADS and OMP_NUM_THREADS (torch) set to it; ``--breakdown`` adds the time of every stage
(projection, depth sort, tile binning, record packing, compositing forward / backward, the reduction of
the workers' gradient buffers, projection backward; "other" is torch and the autograd glue).

    python benchmarks/rasterize.py                 # all sizes
    python benchmarks/rasterize.py --sizes 100k --runs 5
    python benchmarks/rasterize.py --sizes 300k --modes fwdbwd --threads 1 2 4 8 16 --breakdown
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {"20k": (20_000, 200), "100k": (100_000, 400), "300k": (300_000, 512)}


def make_gaussians(n, seed=0):
    """Gaussians uniform in the unit ball: means, quats (wxyz), scales, opacities, colours (numpy)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    means = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0, 1, (n, 1)) ** (1 / 3)
    q = rng.normal(size=(n, 4))
    return dict(
        means=means,
        quats=q / np.linalg.norm(q, axis=1, keepdims=True),
        scales=0.02 * np.exp(rng.normal(0, 0.3, (n, 3))),
        opacities=rng.uniform(0.1, 1.0, n),
        colors=rng.uniform(0, 1, (n, 3)),
    )


def make_camera(size, distance=2.7, fov_deg=50.0):
    """viewmat (camera on -z looking at the origin, OpenCV axes) and K for a square image."""
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0, 0.5 * size], [0, f, 0.5 * size], [0, 0, 1.0]])
    viewmat = np.eye(4)
    viewmat[2, 3] = distance
    return viewmat, K


def make_scene(n, size, seed=0, eps2d=0.3):
    """Projected inputs of the raster stage (numpy EWA splatting, radius = ceil(3 sigma) per axis)."""
    gs = make_gaussians(n, seed)
    viewmat, K = make_camera(size)
    w, x, y, z = gs["quats"].T
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(n, 3, 3)  # fmt: skip
    cov3 = R @ (gs["scales"][:, :, None] ** 2 * np.eye(3)) @ R.transpose(0, 2, 1)
    pc = gs["means"] @ viewmat[:3, :3].T + viewmat[:3, 3]
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
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
        colors=f32(gs["colors"]),
        opacities=f32(gs["opacities"]),
        radii=np.ascontiguousarray(radii[None]),
        depths=f32(tz),
    )


def _full_runner(n, size, backward, backend, seed=0):
    """The whole pipeline through gausslift.render.rasterize (projection + raster), RGB, one camera."""
    import torch

    from gausslift.render import rasterize

    gs = {k: torch.tensor(v, dtype=torch.float32) for k, v in make_gaussians(n, seed).items()}
    viewmat, K = make_camera(size)
    viewmats = torch.tensor(viewmat, dtype=torch.float32)[None]
    Ks = torch.tensor(K, dtype=torch.float32)[None]
    g = torch.Generator().manual_seed(1)
    v_render = torch.randn(1, size, size, 3, generator=g)
    v_alpha = torch.randn(1, size, size, 1, generator=g)

    def run():
        inp = {k: v.clone().requires_grad_(backward) for k, v in gs.items()}
        with torch.set_grad_enabled(backward):
            render, alpha, _ = rasterize(**inp, viewmats=viewmats, Ks=Ks, width=size, height=size,
                                         backend=backend)  # fmt: skip
            if backward:
                ((render * v_render).sum() + (alpha * v_alpha).sum()).backward()

    return run


def _numba_runner(scene, size, backward):
    from gausslift.render.raster import rasterize_to_pixels_fwd
    from gausslift.render.raster_bwd import rasterize_to_pixels_bwd

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


STAGES = (("project", "project_fwd"), ("project", "project_bwd"), ("sh", "sh_fwd"), ("sh", "sh_bwd"),
          ("tiles", "_depth_order"), ("tiles", "_bin"), ("raster", "_pack"), ("raster", "_forward"),
          ("raster", "_backward"), ("raster", "_reduce"))  # fmt: skip


def _time_stages(acc):
    """Wrap the cpu backend's stage functions so that their seconds add up in ``acc`` (name -> list)."""
    import importlib

    for mod_name, fn_name in STAGES:
        mod = importlib.import_module(f"gausslift.render.{mod_name}")
        fn, key = getattr(mod, fn_name), fn_name.strip("_")

        def timed(*a, _fn=fn, _key=key, **kw):
            t = time.perf_counter()
            out = _fn(*a, **kw)
            acc[_key] = acc.get(_key, 0.0) + time.perf_counter() - t
            return out

        setattr(mod, fn_name, timed)


def measure(key, stage, backend, backward, runs, breakdown=False):
    """Median seconds and peak extra RSS (MiB) of one configuration, in this process."""
    n, size = SIZES[key]
    acc: dict = {}
    if breakdown:
        _time_stages(acc)
    if stage == "full":
        _full_runner(200, 32, backward, backend, seed=1)()  # compile / warm up code paths
        fn = _full_runner(n, size, backward, backend)
    else:
        runner = _numba_runner if backend == "cpu" else _torch_runner
        runner(make_scene(200, 32, seed=1), 32, backward)()
        fn = runner(make_scene(n, size), size, backward)
    gc.collect()
    base = _reset_peak_rss()
    fn()  # warm-up at full size
    times, stages = [], []
    for _ in range(runs):
        acc.clear()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        stages.append(dict(acc, other=times[-1] - sum(acc.values())))
    out = {"median_s": float(np.median(times)), "times": times, "peak_mib": (_peak_rss() - base) / 1024}
    if breakdown:
        out["stages"] = {k: float(np.median([s.get(k, 0.0) for s in stages])) for k in stages[0]}
    return out


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter (VmHWM) and return the current RSS in KiB (Linux). Freed heap
    memory is first handed back to the OS (malloc_trim) so that reusing it is counted as new memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS")
    except OSError:  # no clear_refs: fall back to the process-lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss():
    try:
        return _status_kib("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _fmt(r):
    if r is None:
        return "failed"
    t = r["times"]
    return f"{r['median_s']:.4f} s [{min(t):.3f}-{max(t):.3f}] {r['peak_mib']:6.1f} MiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--torch-runs", type=int, default=3)
    ap.add_argument("--stage", choices=("full", "raster"), default="full",
                    help="full: gausslift.render.rasterize(); raster: the raster kernels alone")  # fmt: skip
    ap.add_argument("--modes", nargs="*", default=["fwd", "fwdbwd"], choices=["fwd", "fwdbwd"])
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY of the measured processes unless set (see above)")  # fmt: skip
    ap.add_argument("--threads", type=int, nargs="*", help="thread-scaling curve of the cpu backend")
    ap.add_argument("--breakdown", action="store_true", help="per-stage times (with --threads)")
    ap.add_argument("--json", help="write the --threads results here")
    ap.add_argument("--one", nargs=3, metavar=("SIZE", "BACKEND", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # child process: one configuration, JSON on stdout
        key, backend, mode = args.one
        runs = args.runs if backend == "cpu" else args.torch_runs
        print(json.dumps(measure(key, args.stage, backend, mode == "fwdbwd", runs, args.breakdown)))
        return 0
    if args.threads:
        return scaling(args)
    rows = []
    for key in args.sizes:
        for mode in args.modes:
            res = {}
            for backend in ("cpu",) if args.skip_torch else ("cpu", "torch"):
                cmd = [sys.executable, __file__, "--one", key, backend, mode, "--runs", str(args.runs),
                       "--torch-runs", str(args.torch_runs), "--stage", args.stage]  # fmt: skip
                env = dict(os.environ)
                env.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy)
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    res[backend] = None
                    continue
                res[backend] = json.loads(out.stdout.strip().splitlines()[-1])
            c, t = res.get("cpu"), res.get("torch")
            ratio = t["median_s"] / c["median_s"] if c and t else float("nan")
            rows.append((key, mode, c, t, ratio))
            fmt = _fmt
            print(f"{key:>5} {mode:>7}  cpu {fmt(c)}   torch {fmt(t) if t or not args.skip_torch else '-'}"
                  f"   ratio {ratio:.1f}x", flush=True)  # fmt: skip
    return 0


def scaling(args) -> int:
    """The cpu backend at each thread count (subprocesses), with speed-ups over the first count."""
    results = []
    for key in args.sizes:
        for mode in args.modes:
            first = None
            for th in args.threads:
                cmd = [sys.executable, __file__, "--one", key, "cpu", mode, "--runs", str(args.runs),
                       "--stage", args.stage] + (["--breakdown"] if args.breakdown else [])  # fmt: skip
                env = dict(os.environ, NUMBA_NUM_THREADS=str(th), OMP_NUM_THREADS=str(th))
                env.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy)
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                first = first or r["median_s"]
                r.update(size=key, mode=mode, threads=th, speedup=first / r["median_s"])
                r["load"] = os.getloadavg()[0]
                results.append(r)
                parts = "".join(f" {k} {v * 1e3:.1f}" for k, v in r.get("stages", {}).items())
                print(f"{key:>5} {mode:>7} {th:>3} threads: {_fmt(r)}  x{r['speedup']:.2f} (load "
                      f"{r['load']:.1f}){'  ms:' + parts if parts else ''}", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
