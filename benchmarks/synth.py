"""``gausslift synth`` throughput: views per second at 512^2 for heads (ICT) and mice (MAMMAL).

The machine is shared, so wall time is inflated by other jobs: every measurement also reports CPU time,
and the projected throughput of a quiet machine is ``cores / CPU-seconds per view`` (labelled projected).

* end to end: ``generate()`` of ``--n`` samples on the 6-view FaceLift rig (the seed's 2,000 samples
  x 6 views) with every core (``--workers``), pixel framing; wall time from the first sample to the
  lists, *including* worker start-up (spawn, unpickling the prepared model); and the same samples
  through a warm pool (after one warm-up sample per worker), which is what a long run sees: wall
  views/s and the workers' CPU seconds per view (utime + stime of the pool's processes, /proc).
  Median of ``--runs``.
* per view, one thread, CPU time (``time.thread_time``), median over the views of ``--n`` / 2
  samples: framing (the half-size culled coverage mask plus warps and the framing maths), the final
  anti-aliased render, shading, PNG encoding; ``per_sample``: the rest (subject forward pass,
  appearance, normals, keypoints, file writes, params and json) divided by the views. The
  reference for the encoder is the same BGRA image encoded with the parameters of
  ``gausslift.io.facelift.write`` (``_PNG_FAST``: zlib 1, the 'up' filter), timed on the same images,
  and its ratio to synth's own encoder (zlib 1, 'sub' filter, RLE) is printed.

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
from gausslift.io.facelift import _PNG_FAST as WRITER_PNG  # noqa: E402  (the facelift writer's parameters)


def _cpu_seconds(pids) -> float:
    """utime + stime of these processes (Linux /proc), in seconds."""
    tick, tot = os.sysconf("SC_CLK_TCK"), 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tot += int(fields[11]) + int(fields[12])
    return tot / tick


def _warm(args) -> int:
    importlib.import_module("gausslift.synth.generate")._work(args)
    return os.getpid()


def end_to_end(kind: str, n: int, workers: int, runs: int) -> dict:
    """views/s of ``generate()`` (with start-up) and of a warm pool (after one sample per worker), with
    the warm pool's CPU milliseconds per view."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from gausslift.synth import SynthOptions, generate
    from gausslift.synth import model as md

    g = importlib.import_module("gausslift.synth.generate")
    cold, warm, cpu = [], [], []
    w = workers or len(os.sched_getaffinity(0))
    for r in range(runs):
        opts = SynthOptions(kind=kind, n=n, rig="facelift6", workers=workers, seed=100 + r)
        with tempfile.TemporaryDirectory() as d:
            cold.append(generate(opts, d, progress_bar=False)["views_per_s"])
    model = md.load(kind)
    opts = SynthOptions(kind=kind, n=n, rig="facelift6", workers=w)
    with ProcessPoolExecutor(w, mp_context=mp.get_context("spawn"), initializer=g._init_worker,
                             initargs=(model, opts)) as pool, tempfile.TemporaryDirectory() as d:
        seen, k = set(), 0  # warm-up: until every worker has made a sample (numba caches loaded)
        while len(seen) < w and k < 20 * w:
            seen |= set(pool.map(_warm, [(opts, 10_000 + k + j, d) for j in range(w)]))
            k += w
        pids = list(pool._processes)
        for r in range(runs):
            c0, t0 = _cpu_seconds(pids), time.perf_counter()
            metas = list(pool.map(g._work, [(opts, 1000 * (r + 1) + k, d) for k in range(n)]))
            views = sum(m["views"] for m in metas)
            warm.append(views / (time.perf_counter() - t0))
            cpu.append(1e3 * (_cpu_seconds(pids) - c0) / views)
    return {"with_startup": cold, "warm_pool": warm, "warm_pool_cpu_ms_per_view": cpu}


def stages(kind: str, n: int) -> dict:
    """CPU ms per view and stage, one thread (see the module docstring)."""
    import cv2
    import numba
    import torch

    from gausslift.meshrender import render_mesh
    from gausslift.synth import model as md

    g = importlib.import_module("gausslift.synth.generate")
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    m = md.load(kind)
    opts = g.SynthOptions(kind=kind, rig="facelift6")
    keys = ("framing", "final_render", "shade", "encode", "encode_reference", "per_sample", "total")
    t = {k: [] for k in keys}
    clock = time.thread_time
    orig = (g.render_view, g.shade_bgra, cv2.imencode)
    acc = {}

    def timed(name, f):
        def run(*a, **kw):
            t0 = clock()
            r = f(*a, **kw)
            acc[name] = acc.get(name, 0.0) + clock() - t0
            return r
        return run

    def final_render(*a, **kw):  # the final render inside render_view, told apart by its size
        t0 = clock()
        fr = render_mesh(*a, **kw)
        if a[4] == opts.size and kw.get("antialias", True):
            acc["final_render"] = acc.get("final_render", 0.0) + clock() - t0
        return fr

    import gausslift.meshrender as mr

    g.render_view, g.shade_bgra = timed("render_view", g.render_view), timed("shade", g.shade_bgra)
    cv2.imencode, mr.render_mesh = timed("encode", cv2.imencode), final_render
    try:
        with tempfile.TemporaryDirectory() as d:
            g.make_sample(m, opts, 10_000, Path(d))  # warm-up (numba caches, first allocations)
            for i in range(n):
                acc.clear()
                t0 = clock()
                views = g.make_sample(m, opts, i, Path(d))["views"]
                total = clock() - t0
                # the encoder's reference on this sample's images
                ims = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                       for p in sorted(Path(d, g.sample_name(kind, i), "images").glob("*.png"))]
                t1 = clock()
                for im in ims:
                    orig[2](".png", im, WRITER_PNG)
                ref = clock() - t1
                fin = acc.get("final_render", 0.0)
                per = {"framing": acc["render_view"] - fin, "final_render": fin, "shade": acc["shade"],
                       "encode": acc["encode"], "encode_reference": ref, "total": total}
                per["per_sample"] = total - acc["render_view"] - acc["shade"] - acc["encode"]
                for k in keys:
                    t[k].append(1e3 * per[k] / views)
    finally:
        g.render_view, g.shade_bgra = orig[0], orig[1]
        cv2.imencode, mr.render_mesh = orig[2], render_mesh
    out = {k: float(np.median(v)) for k, v in t.items()}
    out["projected_views_per_s_2_cores"] = 2e3 / out["total"]
    out["encode_reference_ratio"] = out["encode_reference"] / out["encode"]  # the writer's / synth's
    return out


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
        res[kind] = {"views_per_s": rates, "per_view_cpu_ms_one_thread": st,
                     "median_warm": float(np.median(rates["warm_pool"])),
                     "median_warm_cpu_ms_per_view": float(np.median(rates["warm_pool_cpu_ms_per_view"])),
                     "median_with_startup": float(np.median(rates["with_startup"]))}
        r = res[kind]
        print(f"{kind}: {r['median_warm']:.1f} views/s warm pool (wall; CPU "
              f"{r['median_warm_cpu_ms_per_view']:.1f} ms/view, projected "
              f"{res['cores'] * 1e3 / r['median_warm_cpu_ms_per_view']:.1f} views/s on {res['cores']} quiet "
              f"cores), {r['median_with_startup']:.1f} with start-up (runs "
              f"{np.round(rates['warm_pool'], 1).tolist()}, {np.round(rates['with_startup'], 1).tolist()}); "
              "per view, one thread, CPU ms: " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()
                                                           if k != "encode_reference_ratio")
              + f"; the facelift writer's PNG encoding takes {st['encode_reference_ratio']:.2f}x synth's",
              flush=True)
    res["load_after"] = os.getloadavg()
    print(f"load average before {res['load'][0]:.1f}, after {res['load_after'][0]:.1f}; {res['cores']} cores")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
