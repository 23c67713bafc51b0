"""Acceptance of ``gausslift ingest`` on the real data in ../shared/data (skips when absent).

Criteria (printed PASS/FAIL with the numbers):
1. consistency: points3d.h5 projected with the source pinhole and mapped through the stored homography
   vs mapped by world_from_capture and projected with the output camera: < 0.5 px in every view; and
   on pixels: each written image vs the raw frame remapped by OpenCV's own initUndistortRectifyMap into
   the written output camera (an independent implementation of the same resampling);
2. masks: in every used camera >= 90% of the body keypoints (all but the four tail points) inside the
   output mask dilated by 6 px;
3. normalisation: size ratio mean 0.30 +- 0.03, CV <= 5%; median camera distance 2.7 +- 0.1;
4. speed: whole run < 3 minutes;
5. calibration checks: the camera whose calibration is a copy of another ('side') is caught and left out,
   and, when kept with --keep-bad-cameras, also caught from its images alone;
6. calibration-only DANNCE rigs: labelled 3D points reproject onto the labelled 2D points, reported per
   camera.

Usage: python scripts/acceptance_ingest.py [--data DIR] [--out DIR] [--frames 0:120:20]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gausslift.cameras import make_K  # noqa: E402
from gausslift.io import read_scene  # noqa: E402
from gausslift.preprocess.ingest import IngestOptions, ingest  # noqa: E402
from gausslift.preprocess.normalize import transform_points  # noqa: E402
from gausslift.preprocess.undistort import apply_homography, pinhole_project, undistort_points  # noqa: E402

TAIL = ("TailTip", "Tail_0", "Tail_1", "Tail_2")
RESULTS: list[bool] = []


def report(name: str, ok: bool, detail: str) -> None:
    RESULTS.append(bool(ok))
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")


def _frames(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "opencv_cameras.json").read_text())


def _project(frame: dict, pts_n: np.ndarray) -> np.ndarray:
    w2c = np.asarray(frame["w2c"])
    K = make_K(frame["fx"], frame["fy"], frame["cx"], frame["cy"])
    pc = pts_n @ w2c[:3, :3].T + w2c[:3, 3]
    p = pc @ K.T
    return p[:, :2] / p[:, 2:3]


def _alpha(sample_dir: Path, frame: dict) -> np.ndarray:
    import cv2

    img = cv2.imread(str(sample_dir / frame["file_path"]), cv2.IMREAD_UNCHANGED)
    return img[..., 3]


def mouse(data: Path, out: Path, frames: str) -> None:
    import cv2

    session = data / "mouse_minimal_session"
    if not session.is_dir():
        print(f"SKIP mouse session: {session} not found")
        return
    t0 = time.perf_counter()
    man = ingest(session, out, IngestOptions(frames=frames, size=512))
    seconds = time.perf_counter() - t0
    scene = read_scene(session)
    kp = scene.keypoints
    names = kp.names or []
    body = np.array([n not in TAIL for n in names]) if names else np.ones(kp.points3d.shape[1], bool)
    rep = json.loads((out / "report.json").read_text())
    cams = {v.name: v.camera for v in scene.views}

    worst, per_cam_inside, per_cam_inside2d, dists = 0.0, {}, {}, []
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))  # radius 6 px
    for s in man["samples"]:
        d = out / s["path"]
        js = _frames(d)
        T = np.asarray(js["world_from_capture"])
        fi = s["frame"]
        P = kp.points3d[fi]
        ok = np.all(np.isfinite(P), axis=1)
        dd = []
        for fr in js["frames"]:
            src = fr["source"]
            cam = cams[src["camera"]]
            H = np.asarray(src["homography"])
            a = apply_homography(H, pinhole_project(cam, P[ok]))
            b = _project(fr, transform_points(T, P[ok]))
            worst = max(worst, float(np.max(np.linalg.norm(a - b, axis=1))))
            w2c = np.asarray(fr["w2c"])
            dd.append(float(np.linalg.norm(-w2c[:3, :3].T @ w2c[:3, 3])))
            alpha = cv2.dilate((_alpha(d, fr) >= 128).astype(np.uint8), kernel)
            for store, uv in (
                (per_cam_inside, _project(fr, transform_points(T, P[ok & body]))),
                (
                    per_cam_inside2d,
                    apply_homography(H, undistort_points(cam, kp.points2d[src["camera"]][fi][body])),
                ),
            ):
                uv = uv[np.all(np.isfinite(uv), axis=1)]
                ij = np.floor(uv).astype(int)
                inb = (ij[:, 0] >= 0) & (ij[:, 0] < fr["w"]) & (ij[:, 1] >= 0) & (ij[:, 1] < fr["h"])
                hit = np.zeros(len(ij), bool)
                hit[inb] = alpha[ij[inb, 1], ij[inb, 0]] > 0
                store.setdefault(src["camera"], []).extend(hit.tolist())
        dists.append(float(np.median(dd)))

    n_views = sum(len(_frames(out / s["path"])["frames"]) for s in man["samples"])
    report(
        "consistency", worst < 0.5, f"max |H*pinhole - output camera| = {worst:.2e} px over {n_views} views"
    )
    map_err, img_err = opencv_reference(scene, out, man)
    report(
        "pixels vs OpenCV",
        map_err < 0.01 and img_err[1] <= 2,
        "output images vs the raw frames remapped by cv2.initUndistortRectifyMap into the output cameras: "
        f"max map difference {map_err:.1e} px, grey-level difference mean {img_err[0]:.3f}, "
        f"max {img_err[1]:.0f}",
    )
    frac = {c: float(np.mean(v)) for c, v in per_cam_inside.items()}
    frac2 = {c: float(np.mean(v)) for c, v in per_cam_inside2d.items()}
    txt = ", ".join(f"{c} {frac[c]:.1%} (2D labels {frac2[c]:.1%})" for c in frac)
    report("masks", bool(frac) and min(frac.values()) >= 0.9, f"body keypoints inside mask+6px: {txt}")
    sr = rep["summary"]["size_ratio_after"]
    report(
        "size ratio",
        abs(sr["mean"] - 0.3) <= 0.03 and sr["cv"] <= 0.05,
        f"mean {sr['mean']:.4f}, std {sr['std']:.2e}, CV {sr['cv']:.3%} over {sr['n']} views "
        f"(before: mean {rep['summary']['size_ratio_before']['mean']:.3f}, "
        f"CV {rep['summary']['size_ratio_before']['cv']:.1%})",
    )
    report(
        "camera distance",
        all(abs(x - 2.7) <= 0.1 for x in dists),
        f"median per sample {min(dists):.4f}..{max(dists):.4f}",
    )
    report("speed", seconds < 180, f"whole run {seconds:.1f} s ({n_views} views; timings {rep['timings']})")
    side = rep["cameras"].get("side", {})
    report(
        "bad calibration caught",
        not side.get("used", True) and bool(side.get("reasons")),
        f"side: used={side.get('used')}, reasons={side.get('reasons')}; cameras used {man['cameras']}",
    )
    # the same camera is also caught from its images alone when it is kept (--keep-bad-cameras)
    ingest(
        session, out.parent / "mouse_keep", IngestOptions(frames="0:120:40", size=256, keep_bad_cameras=True)
    )
    rk = json.loads((out.parent / "mouse_keep" / "report.json").read_text())
    ic = {n: (c.get("image_consistency") or {}).get("centroid_rel") for n, c in rk["cameras"].items()}
    flagged = [n for n, c in rk["cameras"].items() if any("mask centroid" in r for r in c["reasons"])]
    report(
        "bad calibration caught from images",
        flagged == ["side"],
        "kept all 4 cameras; mask-centroid distance to the rig's consensus centre (mask radii): "
        + ", ".join(f"{n} {v:.2f}" for n, v in ic.items() if v is not None)
        + f"; flagged {flagged}",
    )
    methods = rep["summary"]["mask_methods"]
    print(f"       mask methods {methods}; warnings: {len(man['warnings'])}; outputs in {out}")


def opencv_reference(scene, out: Path, man: dict) -> tuple[float, tuple[float, float]]:
    """Rebuild each output view from the raw frame with OpenCV's own undistort+rectify map (R_rel and
    K_out from the written JSON and the calibration) and compare with the written image."""
    import cv2

    from gausslift.cameras import K_to_opencv
    from gausslift.preprocess.frames import read_video_frames
    from gausslift.preprocess.undistort import remap_maps_numpy

    cams = {v.name: v for v in scene.views}
    frames = [s["frame"] for s in man["samples"]]
    raw = {n: read_video_frames(cams[n].meta["video"], frames) for n in man["cameras"]}
    map_err, diffs = 0.0, []
    for s in man["samples"]:
        js = _frames(out / s["path"])
        Rw = np.asarray(js["world_from_capture"])[:3, :3]
        Rw = Rw / np.cbrt(np.linalg.det(Rw))
        for fr in js["frames"]:
            src = cams[fr["source"]["camera"]].camera
            R_rel = np.asarray(fr["w2c"])[:3, :3] @ Rw @ src.R.T
            K_out = make_K(fr["fx"], fr["fy"], fr["cx"], fr["cy"])
            size = (fr["w"], fr["h"])
            cx, cy = cv2.initUndistortRectifyMap(
                K_to_opencv(src.K), src.dist, R_rel, K_to_opencv(K_out), size, 5
            )
            mx, my = remap_maps_numpy(src, R_rel, K_out, *size)  # our formula, not OpenCV's code
            ok = mx > -1000
            map_err = max(map_err, float(np.abs(np.stack([mx - cx, my - cy]))[:, ok].max()))
            ref = cv2.remap(raw[fr["source"]["camera"]][s["frame"]], cx, cy, cv2.INTER_LINEAR)
            img = cv2.imread(str(out / s["path"] / fr["file_path"]), cv2.IMREAD_UNCHANGED)[..., 0]
            inside = ok & (cx >= 1) & (cy >= 1) & (cx < src.width - 2) & (cy < src.height - 2)
            diffs.append(np.abs(img.astype(int) - ref.astype(int))[inside])
    d = np.concatenate(diffs)
    return map_err, (float(d.mean()), float(d.max()))


def dannce(data: Path, out: Path) -> None:
    for rig in ("markerless_mouse_1", "markerless_mouse_2"):
        path = data / "dannce_calib" / "demo" / rig
        if not path.is_dir():
            print(f"SKIP {rig}: {path} not found")
            continue
        ingest(path, out / rig, IngestOptions())
        rep = json.loads((out / rig / "report.json").read_text())
        per = {n: c.get("reprojection") for n, c in rep["cameras"].items()}
        ok = all(r is not None and r["median_px"] is not None and r["median_px"] < 2.0 for r in per.values())
        txt = ", ".join(
            f"{n} {r['median_px']:.2e}/{r['mean_px']:.2e} px (n={r['n']})" for n, r in per.items() if r
        )
        report(f"dannce {rig} reprojection (median/mean)", ok, txt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("GAUSSLIFT_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=default)
    ap.add_argument("--out", default=None)
    ap.add_argument("--frames", default="0:120:20")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"SKIP: real data not found at {data} (set GAUSSLIFT_SHARED_DATA)")
        return 0
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gausslift_ingest_"))
    mouse(data, out / "mouse", args.frames)
    dannce(data, out)
    print(f"{sum(RESULTS)}/{len(RESULTS)} criteria passed")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
