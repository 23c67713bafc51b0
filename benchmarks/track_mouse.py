"""``gausslift track`` acceptance measurements (issue 21, tracking part); results in docs/benchmarks.md.

1. anipose minimal session (3 usable cameras: the ``side`` camera's calibration is a copy of ``top``
   and the calibration checks exclude it, as ingest does), leave one camera out: track with the
   keypoints and masks of the other two, project the tracked nodes into the third and compare with its
   proofread labels (median pixel error). Baselines on the same labels: plain 2-view DLT (the issue's)
   and a confidence-weighted one. The tracker's error is given on the points the DLT can triangulate
   (seen by both training cameras) and, separately, on the points seen by fewer than two. The
   silhouette IoU of each such track is measured in all three cameras (the held-out one included).
2. Jitter: mean squared second temporal difference of the tracked nodes (3 cameras, keypoints and
   masks) against the raw 3-view DLT and anipose's ``points3d.h5``, on the entries where all are
   defined; and the silhouette IoU of that track per camera.
3. DANNCE ``markerless_mouse_1``: track from 5 cameras' labels, error in the sixth, for each choice,
   against 5-view DLT. Label3D's 2D labels are its 3D labels reprojected, so the DLT reproduces the
   sixth view exactly; the run is repeated with ``--dannce-noise`` px of Gaussian noise on the five
   training views' labels (the held-out labels stay clean), and once more on the clean labels with a
   robust scale of ``--dannce-robust-px`` (3 px instead of 10). No masks there (no video).

The masks are those of ``--masks INGEST_DIR`` or of a fresh ``gausslift ingest`` of the session (13 s);
``--no-silhouette`` tracks from keypoints alone (the IoU is still measured). IoU every ``--iou-every``
frames (default 4). Single-threaded; see docs/benchmarks.md for the wall time.
Skips (exit 0) when the data is absent.

    OMP_NUM_THREADS=1 python benchmarks/track_mouse.py [--data ../shared/data] [--json out.json]
"""

from __future__ import annotations

import argparse
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

ANIPOSE = "mouse_minimal_session"
DANNCE = "dannce_calib/demo/markerless_mouse_1"


def _usable(session: Path, obs) -> list[str]:
    """Cameras with keypoints whose calibration passes ingest's checks."""
    from gausslift.io import read_scene
    from gausslift.preprocess.calib import check_calibration

    checks, _ = check_calibration(read_scene(session))
    return [c for c in obs.cameras if not checks[c].bad]


def _med(e: np.ndarray) -> float | None:
    e = e[np.isfinite(e)]
    return round(float(np.median(e)), 2) if e.size else None


def _masks(ingest_dir, o, opts):
    """The MaskSet of the track's cameras (None without masks or with the term off)."""
    if ingest_dir is None or not opts.silhouette:
        return None
    from gausslift.track.masks import load_masks

    return load_masks(ingest_dir, o.frame_ids, o.cameras, opts.silhouette_res, opts.silhouette_samples)


def _iou(subject, res, frame_ids, ingest_dir, every: int) -> dict | None:
    if ingest_dir is None:
        return None
    from gausslift.track.silhouette import silhouette_iou

    iou = silhouette_iou(subject, res.params, res.world_from_subject, frame_ids, ingest_dir, every=every)
    return {c: d["median"] for c, d in iou["per_camera"].items()}


def leave_one_out(subject, kmap, obs, cameras: list[str], opts, noise_px: float = 0.0,
                  ingest_dir: Path | None = None, iou_every: int = 4) -> list[dict]:
    """Track from all cameras but one, measure in that one; ``noise_px``: Gaussian noise added to the
    training cameras' labels (the held-out labels stay clean); ``ingest_dir``: the training cameras'
    masks are fitted too (with ``opts.silhouette``), and the IoU is measured in every camera."""
    from gausslift.track import track
    from gausslift.track.metrics import pixel_errors
    from gausslift.track.triangulate import triangulate

    rows = []
    for held in cameras:
        train = [c for c in cameras if c != held]
        o = obs.select(cameras=train)
        if noise_px:
            o.points2d = o.points2d + np.random.default_rng(0).normal(0, noise_px, o.points2d.shape)
        t0 = time.perf_counter()
        res = track(subject, kmap, o, opts, masks=_masks(ingest_dir, o, opts))
        dt = time.perf_counter() - t0
        h = obs.select(cameras=[held], nodes=res.nodes)
        plain, views = triangulate(o.camera_models, o.points2d)
        weighted, _ = triangulate(o.camera_models, o.points2d, o.confidence)
        e_t, e_p, e_w = (pixel_errors(h.camera_models, X, h.points2d)[0]
                         for X in (res.points3d, plain, weighted))
        both = views >= 2
        few = ~both
        rows.append({
            "held_out": held, "train": train, "frames": o.num_frames, "seconds": round(dt, 1),
            "track_px": _med(e_t[both]), "dlt_plain_px": _med(e_p[both]), "dlt_weighted_px": _med(e_w[both]),
            "n": int(np.isfinite(e_t[both]).sum()),
            "track_lt2_views_px": _med(e_t[few]), "n_lt2_views": int(np.isfinite(e_t[few]).sum()),
            "track_all_px": _med(e_t),
            "per_node_track_px": {n: _med(e_t[:, k]) for k, n in enumerate(res.nodes)},
            "per_node_dlt_px": {n: _med(e_p[:, k]) for k, n in enumerate(res.nodes)},
            "silhouette_iou": _iou(subject, res, o.frame_ids, ingest_dir, iou_every),
        })
        print(f"  held out {held}: track {rows[-1]['track_px']} px, DLT {rows[-1]['dlt_plain_px']} px "
              f"(weighted {rows[-1]['dlt_weighted_px']}), n={rows[-1]['n']}; <2 views: "
              f"{rows[-1]['track_lt2_views_px']} px n={rows[-1]['n_lt2_views']} ({dt:.0f} s); IoU "
              f"{rows[-1]['silhouette_iou']}", flush=True)
    return rows


def jitter(subject, kmap, obs, cameras: list[str], opts, ingest_dir: Path | None = None,
           iou_every: int = 4) -> dict:
    """Jitter of a 3-camera track (with the masks of ``ingest_dir`` when the term is on), and its
    silhouette IoU per camera (every ``iou_every``-th frame)."""
    from gausslift.track import track
    from gausslift.track.metrics import pixel_errors, second_differences, summary
    from gausslift.track.triangulate import triangulate

    o = obs.select(cameras=cameras)
    t0 = time.perf_counter()
    res = track(subject, kmap, o, opts, masks=_masks(ingest_dir, o, opts))
    dt = time.perf_counter() - t0
    o = o.select(nodes=res.nodes)
    dlt, _ = triangulate(o.camera_models, o.points2d)
    series = {"track": res.points3d, "dlt_3view": dlt}
    if o.points3d is not None:
        series["anipose_points3d"] = o.points3d
    acc = {k: second_differences(v, o.frame_ids) for k, v in series.items()}
    common = np.logical_and.reduce([np.isfinite(a) for a in acc.values()])
    out = {k: float(f"{a[common].mean():.4g}") for k, a in acc.items()}
    out["entries"] = int(common.sum())
    out["units"] = f"{o.units}^2 / frame^2"
    e = pixel_errors(o.camera_models, res.points3d, o.points2d)
    out["track_train_error_px"] = {c: summary(e[i])["median_px"] for i, c in enumerate(o.cameras)}
    out["seconds"] = round(dt, 1)
    out["scale"] = round(res.scale, 2)
    out["bone_length_factors"] = sorted({round(float(b), 3) for b in res.params["bone_lengths"][0]})
    if ingest_dir is not None:
        out["silhouette_iou"] = _iou(subject, res, o.frame_ids, ingest_dir, iou_every)
        print(f"  silhouette IoU vs ingest masks: {out['silhouette_iou']}", flush=True)
    print(f"  jitter (mean |d2X|^2, {out['units']}, {out['entries']} entries): " +
          ", ".join(f"{k} {out[k]}" for k in series) + f"; train error {out['track_train_error_px']} px "
          f"({dt:.0f} s)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--iters", type=int, default=None, help="articulated steps (default: TrackOptions')")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--skip-dannce", action="store_true")
    ap.add_argument("--dannce-robust-px", type=float, default=3.0,
                    help="also run clean DANNCE with this robust scale (its hand labels agree to ~0 px)")
    ap.add_argument("--dannce-noise", type=float, default=2.0,
                    help="also run DANNCE with this much pixel noise on the training labels (0: no)")
    ap.add_argument("--masks", default=None, metavar="INGEST_DIR",
                    help="an ingest output of the session (default: a fresh ingest in a temporary folder)")
    ap.add_argument("--no-silhouette", action="store_true", help="track from keypoints alone")
    ap.add_argument("--iou-every", type=int, default=4, help="measure the IoU every N-th frame")
    args = ap.parse_args()
    T0 = time.perf_counter()

    from gausslift.train.device import set_threads

    set_threads(1)  # torch's and numba's pools: numba's idle threads (after silhouette_iou's mask
    # renders) otherwise spin against the next track's torch ops
    from gausslift.subjects import load_subject
    from gausslift.track import TrackOptions, load_map, load_observations

    data = Path(args.data)
    opts = TrackOptions() if args.iters is None else TrackOptions(iters=args.iters)
    opts.silhouette = not args.no_silhouette
    results: dict = {"options": dict(vars(opts))}
    session = data / ANIPOSE
    if not session.is_dir():
        print(f"skipped: {session} not found (the anipose minimal session)")
        return 0
    subject = load_subject("mouse")
    obs = load_observations(session)
    cams = _usable(session, obs)
    kmap = load_map("sleap", subject)
    print(f"anipose session: cameras {cams} (of {obs.cameras}), {obs.num_frames} frames, "
          f"{len(obs.names)} nodes")
    with tempfile.TemporaryDirectory() as tmp:
        ingest_dir = Path(args.masks) if args.masks else None
        if ingest_dir is None:
            from gausslift.preprocess.ingest import IngestOptions, ingest

            t0 = time.perf_counter()
            ingest_dir = Path(tmp) / "ingest"
            ingest(session, ingest_dir, IngestOptions(workers=1))
            print(f"ingest: {time.perf_counter() - t0:.0f} s", flush=True)
        results["masks"] = str(args.masks or "a fresh gausslift ingest (workers=1)")
        results["anipose_leave_one_out"] = leave_one_out(subject, kmap, obs, cams, opts,
                                                         ingest_dir=ingest_dir, iou_every=args.iou_every)
        results["anipose_jitter"] = jitter(subject, kmap, obs, cams, opts, ingest_dir, args.iou_every)
    dannce = data / DANNCE
    if args.skip_dannce:
        pass
    elif not dannce.is_dir():
        print(f"skipped DANNCE: {dannce} not found")
    else:
        dobs = load_observations(dannce)
        print(f"DANNCE {dannce.name}: {len(dobs.cameras)} cameras, {dobs.num_frames} labelled frames")
        dmap = load_map("dannce", subject)
        results["dannce_leave_one_out"] = leave_one_out(subject, dmap, dobs, dobs.cameras, opts)
        if args.dannce_robust_px > 0:
            print(f"DANNCE with robust_px {args.dannce_robust_px}")
            o2 = TrackOptions(**{**vars(opts), "robust_px": args.dannce_robust_px})
            results["dannce_leave_one_out_robust"] = leave_one_out(subject, dmap, dobs, dobs.cameras, o2)
        if args.dannce_noise > 0:
            print(f"DANNCE with {args.dannce_noise} px noise on the training labels")
            results["dannce_leave_one_out_noisy"] = leave_one_out(subject, dmap, dobs, dobs.cameras, opts,
                                                                  args.dannce_noise)
            results["dannce_noise_px"] = args.dannce_noise
    results["wall_seconds"] = round(time.perf_counter() - T0, 1)
    print(f"wall time {results['wall_seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
