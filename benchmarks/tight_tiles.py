"""Opacity-tight tile binning against the 3-sigma box, on fitted Gaussians (issue 26).

The CPU rasteriser bins each Gaussian into the tiles its alpha >= 1/255 ellipse reaches where that is
smaller than its 3-sigma box (``gausslift.render.raster.TIGHT_TILES``, gsplat's opacity-aware radii).
The image and gradients are the same; what changes is the number of tile-list entries and the time.

For each fitted run given (``RUN/splats.ply`` of ``gausslift fit``, with the capture it was fitted on),
every training view is rendered forward + backward (loss: the sum of the render) with both settings,
alternating per view and repeated ``--reps`` times, in this one process and thread count. Printed per
run: the tile intersections of both settings and their ratio, and the median time per view of each and
their ratio (tight / box; below 1 is faster).

    python benchmarks/tight_tiles.py --run /tmp/fs/facelift_new_r0/run --data ../shared/data/facelift_head \\
        --holdout-every 4 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time


def measure(run: str, data: str, holdout_every: int, reps: int, max_views: int) -> dict:
    import torch

    from gausslift.cli.fit import load_scene, split_views
    from gausslift.fit.data import load_views
    from gausslift.fit.model import render_params
    from gausslift.fit.runs import load_splats, sh_degree_of
    from gausslift.render import raster

    params = {k: v.requires_grad_(True) for k, v in load_splats(f"{run}/splats.ply").items()}
    scene = load_scene(data, None, holdout_every)
    views = load_views(split_views(scene, "train")[:max_views])
    count = {"n": 0}
    real_bin = raster.bin_gaussians

    def counting(*a, **k):
        out = real_bin(*a, **k)
        count["n"] += int(out[1].size)
        return out

    raster.bin_gaussians = counting
    bg = torch.ones(3)
    times: dict[bool, list[float]] = {True: [], False: []}
    isects: dict[bool, int] = {}
    try:
        for rep in range(reps + 1):  # rep 0 warms up (numba compile, caches)
            for vd in views:
                h, w = vd.image.shape[:2]
                for tight in (True, False) if rep % 2 else (False, True):
                    raster.TIGHT_TILES = tight
                    count["n"] = 0
                    t0 = time.perf_counter()
                    deg = sh_degree_of(params)
                    rgb, _, _ = render_params(params, vd.viewmat[None], vd.K[None], w, h, deg, bg)
                    rgb.sum().backward()
                    dt = time.perf_counter() - t0
                    for p in params.values():
                        p.grad = None
                    if rep:
                        times[tight].append(dt)
                    if rep == 1:
                        isects[tight] = isects.get(tight, 0) + count["n"]
    finally:
        raster.bin_gaussians = real_bin
        raster.TIGHT_TILES = True
    t_tight, t_box = statistics.median(times[True]), statistics.median(times[False])
    op = torch.sigmoid(params["opacities"].detach())
    return {
        "run": run, "gaussians": int(op.numel()), "views": len(views),
        "opacity_below_0.35": round(float((op < 0.353).float().mean()), 3),
        "isects_tight": isects[True], "isects_box": isects[False],
        "isect_ratio": round(isects[True] / max(1, isects[False]), 3),
        "ms_tight": round(1e3 * t_tight, 1), "ms_box": round(1e3 * t_box, 1),
        "time_ratio": round(t_tight / t_box, 3),
    }  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs="+", required=True, help="fit run folders (each with splats.ply)")
    p.add_argument("--data", nargs="+", required=True, help="each run's capture (or one for all)")
    p.add_argument("--holdout-every", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-views", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    from gausslift.train.device import set_threads

    set_threads(a.threads)
    datas = a.data if len(a.data) == len(a.run) else a.data[:1] * len(a.run)
    for run, data in zip(a.run, datas):
        print(measure(run, data, a.holdout_every, a.reps, a.max_views), flush=True)


if __name__ == "__main__":
    main()
