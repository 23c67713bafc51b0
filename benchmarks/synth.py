"""``gausslift synth`` throughput: views per second at 512^2 for heads (ICT) and mice (MAMMAL).

Two measurements per subject, in one process run:

* end to end: ``generate()`` of ``--n`` samples on the 6-view FaceLift rig (the seed's 2,000 samples
  x 6 views) with every core (``--workers``), pixel framing; wall time from the first sample to the
  lists, *including* worker start-up (spawn, unpickling the prepared model); and the same samples
  through a warm pool (after one warm-up sample per worker), which is what a long run sees.
  Median of ``--runs``.
* per view, one thread, median over the views of ``--n`` / 2 samples: framing (one wide silhouette
  render plus four homography warps), the final anti-aliased render, shading, PNG encoding and
  writing. The reference for the encoder is the same RGBA image encoded with the parameters of
  ``gausslift.io.facelift.write`` (zlib 1 with libpng's adaptive filters), timed on the same images.

    python benchmarks/synth.py                 # both subjects
    python benchmarks/synth.py --subject mouse --n 8 --runs 3
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))


def end_to_end(kind: str, n: int, workers: int, runs: int) -> dict:
    """views/s of ``generate()`` (with start-up) and of a warm pool (after one sample per worker)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from gausslift.synth import SynthOptions, generate
    from gausslift.synth import model as md

    g = importlib.import_module("gausslift.synth.generate")
    cold, warm = [], []
    w = workers or len(os.sched_getaffinity(0))
    for r in range(runs):
        opts = SynthOptions(kind=kind, n=n, rig="facelift6", workers=workers, seed=100 + r)
        with tempfile.TemporaryDirectory() as d:
            cold.append(generate(opts, d, progress_bar=False)["views_per_s"])
    model = md.load(kind)
    opts = SynthOptions(kind=kind, n=n, rig="facelift6", workers=w)
    with ProcessPoolExecutor(w, mp_context=mp.get_context("spawn"), initializer=g._init_worker,
                             initargs=(model, opts)) as pool, tempfile.TemporaryDirectory() as d:
        list(pool.map(g._work, [(opts, 10_000 + k, d) for k in range(w)]))  # warm-up
        for r in range(runs):
            t0 = time.perf_counter()
            metas = list(pool.map(g._work, [(opts, 1000 * (r + 1) + k, d) for k in range(n)]))
            warm.append(sum(m["views"] for m in metas) / (time.perf_counter() - t0))
    return {"with_startup": cold, "warm_pool": warm}


def stages(kind: str, n: int) -> dict:
    import cv2
    import numba

    from gausslift.meshrender import render_mesh
    from gausslift.synth import model as md
    from gausslift.synth.rigs import parse_rig
    from gausslift.synth.shading import random_light, shade, smooth_normals

    g = importlib.import_module("gausslift.synth.generate")
    numba.set_num_threads(1)
    m = md.load(kind)
    opts = g.SynthOptions(kind=kind, rig="facelift6")
    t = {k: [] for k in ("framing_renders", "final_render", "shade", "encode", "encode_reference", "write")}
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            rng = g.sample_rng(1, i)
            out = m.subject(m.subject.sample_params(rng, 1))
            v0 = out.vertices[0].detach().numpy().astype(np.float64)
            kp = None if out.keypoints is None else out.keypoints[0].detach().numpy().astype(np.float64)
            verts = md.apply(m.world_from_model(v0, kp), v0)
            vn = smooth_normals(verts, m.faces)
            app, light = m.appearance(rng), random_light(rng)
            for k, C in enumerate(parse_rig("facelift6").centres()):
                t0 = time.perf_counter()
                cam, _ = g.render_view(m, verts, C, opts)  # framing + final render
                t1 = time.perf_counter()
                fr = render_mesh(verts, m.faces, cam.K, cam.viewmat, 512, 512, antialias=True)
                t2 = time.perf_counter()
                rgb, alpha = shade(fr, m.faces, vn, m.uv_corner, app, light)
                t3 = time.perf_counter()
                bgra = np.dstack([rgb[..., ::-1], alpha])
                ok, buf = cv2.imencode(".png", bgra, g.PNG_PARAMS)
                t4 = time.perf_counter()
                cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                t5 = time.perf_counter()
                Path(d, f"{i}_{k}.png").write_bytes(buf.tobytes())
                t6 = time.perf_counter()
                t["final_render"].append(t2 - t1)
                t["framing_renders"].append((t1 - t0) - (t2 - t1))
                t["shade"].append(t3 - t2)
                t["encode"].append(t4 - t3)
                t["encode_reference"].append(t5 - t4)
                t["write"].append(t6 - t5)
    return {k: 1e3 * float(np.median(v)) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", choices=("head", "mouse", "both"), default="both")
    ap.add_argument("--n", type=int, default=6, help="samples per measurement")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    res = {"load": os.getloadavg(), "cores": len(os.sched_getaffinity(0))}
    for kind in ("head", "mouse") if a.subject == "both" else (a.subject,):
        st = stages(kind, max(1, a.n // 2))
        rates = end_to_end(kind, a.n, a.workers, a.runs)
        res[kind] = {"views_per_s": rates, "per_view_ms_one_thread": st,
                     "median_warm": float(np.median(rates["warm_pool"])),
                     "median_with_startup": float(np.median(rates["with_startup"]))}
        print(f"{kind}: {res[kind]['median_warm']:.1f} views/s warm pool, "
              f"{res[kind]['median_with_startup']:.1f} with start-up (runs "
              f"{np.round(rates['warm_pool'], 1).tolist()}, {np.round(rates['with_startup'], 1).tolist()}); "
              "per view, one thread (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()), flush=True)
    res["load_after"] = os.getloadavg()
    print(f"load average before {res['load'][0]:.1f}, after {res['load_after'][0]:.1f}; {res['cores']} cores")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
