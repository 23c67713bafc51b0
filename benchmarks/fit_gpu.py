"""Fit-loop speed against the rasteriser alone, in the same process: the loop overhead.

For one capture, backend and device this measures, after a warm-up:

* fit: iterations/s of the trainer's own step as the loop runs it (``Trainer.loss`` + the guard's read +
  ``Trainer.update``: view pick, random background, render, L1 + SSIM loss, backward, six Adam steps,
  densification statistics; the logged numbers read back every ``log_every`` steps as ``fit`` does),
  with the model held at ``--gaussians`` Gaussians and SH degree 3 (refinement switched off so the
  size stays fixed);
* bare: iterations/s of the rasteriser alone on the same Gaussians, image size and cameras: forward and
  backward of ``renders.sum() + alphas.sum()``; with ``--backend gsplat`` this is gsplat's own
  ``rasterization()`` call, otherwise ``gausslift.render.rasterize``;
* overhead = bare it/s / fit it/s (1.0: the loop costs nothing beyond rasterising);
* host syncs per fit step (CUDA only: ``torch.cuda.set_sync_debug_mode`` warnings, gsplat's own
  included) and peak memory (CUDA: ``max_memory_allocated`` over the timed blocks, whose peak is the
  fit's; CPU: the process's peak RSS, ``ru_maxrss``, everything included). The fit and the bare calls
  get the same warm-up and their blocks alternate.

Timings are the median of ``--repeats`` blocks of ``--steps`` iterations, each block closed by a device
synchronisation. On a CPU it runs with the numba backend, so the script is exercised without a GPU
(tests/test_fit_benchmark.py).

    python benchmarks/fit_gpu.py --data ../shared/data/facelift_head/gslrm_sample_000 --backend gsplat \
        --gaussians 100000 300000 --steps 200 --out fit_gpu.json
    python benchmarks/fit_gpu.py --backend cpu --device cpu --gaussians 20000 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "gausslift" / "data" / "facelift_head_128"
NEVER = 1 << 40


def make_trainer(data, backend, device, gaussians, downscale, out, views=0):
    """A trainer with ``gaussians`` Gaussians, SH degree 3 from the start, no refinement, full size."""
    from gausslift.fit.config import FitConfig
    from gausslift.fit.strategy import Schedule
    from gausslift.fit.trainer import Trainer
    from gausslift.io import read_scene

    scene = read_scene(data)
    if views > 0:
        scene = scene.subset(scene.views[:views])
    cfg = FitConfig(iters=NEVER, init_num_points=gaussians, backend=backend, device=device,
                    downscale=downscale, c2f_min_size=0, log_every=50)  # fmt: skip
    tr = Trainer(scene, cfg, out)
    tr.start()
    tr.plan(NEVER)
    tr.strategy.schedule = Schedule(NEVER, NEVER, NEVER, NEVER)  # statistics every step, never refine
    tr.sh_interval = 1  # SH degree 3 from step 1
    tr.step = 0
    return tr


def fit_block(tr, steps):
    """``steps`` trainer steps as ``gausslift.train.loop.Loop`` runs them: the task's loss, the guard's
    one boolean read, the task's update; the logged numbers read every log_every steps."""
    from gausslift.train.runlog import to_scalars

    for _ in range(steps):
        loss, terms = tr.loss(tr.step)
        ok = torch.isfinite(loss.detach()).all().float().item() > 0.5
        stats = tr.update(loss, tr.step, 1.0) if ok else {}
        tr.step += 1
        if tr.step % tr.cfg.log_every == 0:
            to_scalars({"loss": loss.detach(), **terms, **stats})


def bare_runner(tr, backend):
    """One forward + backward of the rasteriser alone on the trainer's Gaussians and first view."""
    from gausslift.render import rasterize

    p, v = tr.params, tr._views(1)[0]
    h, w = v.image.shape[:2]
    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in p.items()}
    bg = tr.bg.reshape(1, 3)

    def args():
        colors = torch.cat([leaves["sh0"], leaves["shN"]], 1)
        return (leaves["means"], leaves["quats"], leaves["scales"].exp(), torch.sigmoid(leaves["opacities"]),
                colors, v.viewmat[None], v.K[None], w, h)  # fmt: skip

    if backend == "gsplat":
        import gsplat

        def run():
            r, a, _ = gsplat.rasterization(*args(), sh_degree=3, backgrounds=bg, packed=False,
                                           rasterize_mode="classic")  # fmt: skip
            (r.sum() + a.sum()).backward()
    else:

        def run():
            r, a, _ = rasterize(*args(), sh_degree=3, backgrounds=bg, backend=backend)
            (r.sum() + a.sum()).backward()

    return run, (w, h)


def timed(fn, device, steps, repeats):
    """Median iterations/s over ``repeats`` blocks of ``steps`` calls of fn(steps)."""
    from gausslift.train.device import synchronize

    rates = []
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        fn(steps)
        synchronize(device)
        rates.append(steps / (time.perf_counter() - t))
    return statistics.median(rates), rates


def syncs_per_step(tr, steps):
    """Host synchronisations per trainer step (CUDA only), counted by torch's sync debug mode."""
    if tr.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit_block(tr, steps)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def measure(data, backend, device, gaussians, steps, warmup, repeats, downscale, out, views=0):
    tr = make_trainer(data, backend, device, gaussians, downscale, out, views)
    dev = tr.device
    run, (w, h) = bare_runner(tr, backend if backend != "auto" else tr.cfg.backend)
    fit_block(tr, warmup)  # JIT compilation, allocator warm-up: the same number of calls for both
    for _ in range(warmup):
        run()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    fit_all, bare_all = [], []
    for _ in range(repeats):  # the two alternate, block by block, so drifts of the machine hit both alike
        fit_all += timed(lambda n: fit_block(tr, n), dev, steps, 1)[1]
        bare_all += timed(lambda n: [run() for _ in range(n)], dev, steps, 1)[1]
    fit_rate, bare_rate = statistics.median(fit_all), statistics.median(bare_all)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    syncs = syncs_per_step(tr, min(steps, 50))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {
        "backend": backend, "device": str(dev), "gaussians": len(tr.params["means"]), "image": f"{w}x{h}",
        "views": len(tr.data), "fit_it_s": round(fit_rate, 2), "bare_it_s": round(bare_rate, 2),
        "loop_overhead": round(bare_rate / fit_rate, 3), "fit_it_s_all": [round(r, 2) for r in fit_all],
        "bare_it_s_all": [round(r, 2) for r in bare_all], "syncs_per_step": syncs,
        "peak_gpu_mib": None if peak is None else round(peak / 2**20, 1), "peak_rss_mib": round(rss, 1),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SAMPLE), help="capture (default: the bundled 128^2 head sample)")
    ap.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "gsplat"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gaussians", type=int, nargs="+", default=[100_000])
    ap.add_argument("--steps", type=int, default=200, help="iterations per timed block")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--downscale", type=int, default=1)
    ap.add_argument("--views", type=int, default=0, help="use only the first K views (0: all)")
    ap.add_argument("--out", help="JSON file for the results (a list, one entry per size)")
    args = ap.parse_args(argv)
    import tempfile

    results = []
    for n in args.gaussians:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(args.data, args.backend, args.device, n, args.steps, args.warmup, args.repeats,
                        args.downscale, tmp, args.views)  # fmt: skip
        results.append(r)
        print(f"{r['backend']:6s} {r['device']:6s} {r['gaussians']:>8d} Gaussians {r['image']:>9s}: "
              f"fit {r['fit_it_s']:8.2f} it/s, rasteriser alone {r['bare_it_s']:8.2f} it/s, "
              f"overhead x{r['loop_overhead']:.2f}, syncs/step {r['syncs_per_step']}, "
              f"peak GPU {r['peak_gpu_mib']} MiB, peak RSS {r['peak_rss_mib']} MiB", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
