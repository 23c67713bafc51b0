"""Mesh renderer benchmark: the numba rasteriser vs trimesh + embreex ray casting, speed and agreement.

The embree backend is the independent correctness oracle, not a tuned speed baseline (it builds its
intersector on every call, and ``--threads`` sets numba's threads only), so its ratio says how much the
default saves over the oracle, not over the best ray caster.

Meshes: a UV sphere of ~52k triangles made here, and, when ``../shared/data/meshes`` is present, the ICT
FaceKit neutral head (52,220 triangles) and the MAMMAL mouse rest pose (28,800 triangles); each is
centred and scaled to a bounding radius of 1 and seen by a ring of cameras at distance 2.7, 50 deg FOV,
elevation 20 deg, 512^2 (the FaceLift rig; the bounding sphere then spans about 400 px).

Timed: one ``render_mesh(..., antialias=True)`` call per view (validation, camera transform, raster,
AA supersampling, resolve to MeshFrame), median over ``--runs`` passes of the ring after one warm-up
pass, for each backend in the same process (and numba with ``cull_backfaces=True``, with the largest
count of pixels whose triangle id changes; and ``render_mask`` at half size, as synth's framing
silhouette, checked equal to ``render_mesh``'s mask); wall time and process CPU time (all threads; on a
shared, busy machine the CPU time of a single-threaded run is the steadier number). Agreement on pixels both
backends cover: share of equal triangle ids, largest relative depth difference, mean |alpha|
difference, and the count of pixels covered by only one. First-call time (cache load or JIT compile)
is measured in fresh subprocesses with a warm and with an empty numba cache.

    python benchmarks/meshrender.py                 # all meshes, numba threads as configured
    python benchmarks/meshrender.py --threads 1 --runs 5 --views 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
MESHES = Path(os.environ.get("GAUSSLIFT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "meshes"


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    c = 0.5 * (v.min(0) + v.max(0))
    return (v - c) / np.linalg.norm(v - c, axis=1).max()


def meshes() -> dict[str, tuple[np.ndarray, np.ndarray, tuple]]:
    import trimesh

    s = trimesh.creation.uv_sphere(radius=1.0, count=[115, 115])
    out = {"uv_sphere": (_normalise(s.vertices), np.asarray(s.faces, np.int32), (0.0, 0.0, 1.0))}
    ict, mouse = MESHES / "ict_facekit.npz", MESHES / "mammal_mouse.npz"
    if ict.is_file():
        d = np.load(ict)
        out["ict_head"] = (_normalise(d["neutral"]), d["faces"].astype(np.int32), (0.0, 1.0, 0.0))
    else:
        print(f"skipping the ICT head: {ict} not found")
    if mouse.is_file():
        d = np.load(mouse)
        out["mouse"] = (_normalise(d["vertices"]), d["faces"].astype(np.int32), (0.0, 0.0, 1.0))
    else:
        print(f"skipping the mouse: {mouse} not found")
    return out


def time_backend(v, f, cams, backend, runs, cull=False):
    from gausslift.meshrender import render_mesh

    kw = dict(backend=backend, cull_backfaces=cull)
    frames = [render_mesh(v, f, c.K, c.viewmat, c.width, c.height, **kw) for c in cams]
    wall, cpu = [], []
    for _ in range(runs):
        for c in cams:
            t, tc = time.perf_counter(), time.process_time()
            render_mesh(v, f, c.K, c.viewmat, c.width, c.height, **kw)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - tc)
    return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3, frames


def time_mask(v, f, cams, runs) -> tuple[float, float]:
    """CPU ms per view of ``render_mask`` (synth's framing silhouette), without and with culling."""
    from gausslift.meshrender import render_mask, render_mesh

    out = []
    for cull in (False, True):
        cpu = []
        for c in cams:
            m = render_mask(v, f, c.K, c.viewmat, c.width, c.height, cull_backfaces=cull)
            assert np.array_equal(m, render_mesh(v, f, c.K, c.viewmat, c.width, c.height,
                                                 cull_backfaces=cull).mask)
        for _ in range(runs):
            for c in cams:
                tc = time.process_time()
                render_mask(v, f, c.K, c.viewmat, c.width, c.height, cull_backfaces=cull)
                cpu.append(time.process_time() - tc)
        out.append(float(np.median(cpu)) * 1e3)
    return out[0], out[1]


def agreement(a, b) -> dict:
    both = a.mask & b.mask
    same = (a.tri_id == b.tri_id)[both].mean()
    rel = np.abs(a.depth[both] - b.depth[both]) / b.depth[both]
    return dict(
        same_id=float(same),
        depth_rel_max=float(rel.max()),
        alpha_mad=float(np.abs(a.alpha - b.alpha).mean()),
        only_one=int((a.mask != b.mask).sum()),
    )


FIRST_CALL = """
import time, numpy as np
t = time.perf_counter()
from gausslift.meshrender import render_mesh
t1 = time.perf_counter()
v = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1.0]]); f = np.array([[0, 1, 2]])
render_mesh(v, f, np.array([[10, 0, 8], [0, 10, 8], [0, 0, 1.0]]), np.eye(4), 16, 16)
print(f"{t1 - t:.2f} {time.perf_counter() - t1:.2f}")
"""


def first_call(cache_dir: str) -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True
    )
    imp, call = out.stdout.split()
    return f"import {imp} s, first call {call} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: numba's)")
    ap.add_argument("--no-embree", action="store_true")
    ap.add_argument("--no-jit", action="store_true", help="skip the first-call measurements")
    args = ap.parse_args()
    import numba

    from gausslift import cameras as C

    if args.threads:
        numba.set_num_threads(args.threads)
    print(
        f"load: {os.getloadavg()}, numba threads {numba.get_num_threads()}, {args.size}^2, {args.views} views"
    )
    if not args.no_jit:
        print("first call, warm cache:", first_call(os.environ["NUMBA_CACHE_DIR"]))
        with tempfile.TemporaryDirectory() as d:
            print("first call, empty cache (JIT):", first_call(d))
    for name, (v, f, up) in meshes().items():
        cams = C.ring(args.views, radius=2.7, elevation_deg=20.0, size=args.size, up=up)
        ms, cpu, fa = time_backend(v, f, cams, "numba", args.runs)
        cover = np.mean([fr.mask.mean() for fr in fa])
        ms_c, cpu_c, fc = time_backend(v, f, cams, "numba", args.runs, cull=True)
        culled = max(int((a.tri_id != b.tri_id).sum()) for a, b in zip(fa, fc))
        half = C.ring(args.views, radius=2.7, elevation_deg=20.0, size=args.size // 2, up=up)
        cpu_m = time_mask(v, f, half, args.runs)
        line = f"{name:9s} F={len(f):6d} cover {cover:.2f}  numba {ms:6.2f} ms/view (cpu {cpu:6.2f})"
        line += f"  culled {ms_c:6.2f} (cpu {cpu_c:6.2f}, {culled} px differ)"
        line += f"  render_mask {args.size // 2}^2 cpu {cpu_m[0]:5.2f} (culled {cpu_m[1]:5.2f})"
        if not args.no_embree:
            ms_e, cpu_e, fb = time_backend(v, f, cams, "embree", max(1, args.runs // 2))
            ag = [agreement(a, b) for a, b in zip(fa, fb)]
            same = min(a["same_id"] for a in ag)
            rel = max(a["depth_rel_max"] for a in ag)
            mad = max(a["alpha_mad"] for a in ag)
            one = max(a["only_one"] for a in ag)
            line += f"  embree oracle {ms_e:7.2f} (cpu {cpu_e:7.2f})  ratio {ms_e / ms:5.1f}x"
            line += f" | same id {same:.5f}"
            line += f"  depth rel {rel:.1e}  alpha mad {mad:.1e}  only one {one} px"
        print(line, flush=True)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
