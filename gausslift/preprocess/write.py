"""Ingest outputs: the resampled views of one sample written as a FaceLift sample folder
(``images/cam_XXX.png`` RGBA with alpha = mask, ``opencv_cameras.json`` with per-frame ``source`` and the
top-level ``world_from_capture``), for calibration-only captures the normalised cameras, and the
session's ``report.md`` / ``report.json`` and ``manifest.json`` (:func:`finish`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera
from gausslift.ioutil import atomic_write_json
from gausslift.preprocess.center import centre_from_axes, centre_from_keypoints
from gausslift.preprocess.masks import MaskResult
from gausslift.preprocess.normalize import elevation_deg, transform_camera, world_from_capture
from gausslift.preprocess.reframe import reframe_view
from gausslift.preprocess.report import summarize, write_report
from gausslift.scene import Scene, View


@dataclass
class Warped:
    camera: Camera
    homography: np.ndarray
    rgba: np.ndarray  # uint8 HxWx4, alpha = the mask resampled through the same map
    size_ratio: float | None


def reframe_and_warp(src, mr: MaskResult, frame: int, T: np.ndarray, opts) -> Warped:
    """Re-frame one view and resample its image and mask through one map (see reframe/undistort)."""
    import cv2

    src_n = transform_camera(src.view.camera, T)
    mask = mr.mask if mr.coverage > 0 else None
    rf = reframe_view(src_n, mask, opts.size, opts.framing, opts.target_scale)
    img = src.frames[frame]
    scale = rf.camera.K[0, 0] / src_n.K[0, 0]
    if scale < 0.75:  # shrinking: low-pass first so the bilinear resampling does not alias
        sigma = 0.5 * np.sqrt(1.0 / scale**2 - 1.0)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    out = cv2.remap(img, rf.map_x, rf.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rgba = cv2.cvtColor(out, cv2.COLOR_GRAY2RGBA if out.ndim == 2 else cv2.COLOR_RGB2RGBA)
    rgba[..., 3] = rf.mask if rf.mask is not None else 0
    return Warped(rf.camera, rf.homography, rgba, rf.size_ratio)


def write_sample(folder: Path, sample_id: str, jobs, results: list[Warped], T, frame: int) -> None:
    """Write one sample through :func:`gausslift.io.facelift.write` (JSON last, all atomic)."""
    from gausslift.io.facelift import write

    views = []
    for (k, src, mr), r in zip(jobs, results):
        meta = {
            "source": {"camera": src.view.name, "frame": int(frame), "homography": r.homography.tolist()},
            "frame_extra": {
                "mask": {"method": mr.method, "coverage": mr.coverage, "confidence": mr.confidence},
            },
        }
        views.append(View(name=f"cam_{k:03d}", camera=r.camera, meta=meta))
    out_scene = Scene(
        views=views, format="facelift", world_from_capture=np.asarray(T), meta={"facelift": {"id": sample_id}}
    )
    # (masks as float: io.facelift.write reads a mask as a fraction in [0, 1], a uint8 alpha included)
    masks = [r.rgba[..., 3].astype(np.float32) / 255.0 for r in results]
    write(out_scene, folder, images=[r.rgba[..., :3] for r in results], masks=masks)


def calibration_only(sess, views, out: Path, capture, t0) -> dict:
    """A capture without images: normalise the rig, report the calibration checks (keypoint
    reprojection per camera) and write the normalised cameras (``cameras.json``)."""
    kp = sess.scene.keypoints
    cams = [v.camera for v in views]
    centre = centre_from_keypoints(kp.points3d) if kp is not None else None
    how = "keypoints"
    if centre is None:
        centre, how = centre_from_axes(cams), "optical axes"
    T = world_from_capture(cams, centre)
    sess.used = [v.name for v in views]
    entries = []
    for v in views:
        c = transform_camera(v.camera, T)
        entries.append(
            {
                "name": v.name, "w": c.width, "h": c.height, "K": c.K.tolist(), "dist": c.dist.tolist(),
                "w2c": c.viewmat.tolist(), "distance": float(np.linalg.norm(c.center)),
                "elevation_deg": elevation_deg(c.center),
            }
        )  # fmt: skip
    atomic_write_json(
        out / "cameras.json", {"world_from_capture": T.tolist(), "centre_from": how, "cameras": entries}
    )
    sess.warnings.append("calibration only (no video or images): no samples written; cameras in cameras.json")
    R = T[:3, :3] / np.cbrt(np.linalg.det(T[:3, :3]))
    man = finish(sess, out, capture, [], [], R, t0)
    man["world_from_capture"] = T.tolist()
    atomic_write_json(out / "manifest.json", man)
    return man


def finish(sess, out: Path, capture, samples, rows, R_up, t0) -> dict:
    """Write ``report.md`` / ``report.json`` and ``manifest.json`` of an ingest session
    (``gausslift.preprocess.ingest.Session``) into ``out``; returns the manifest."""
    cams = {}
    for v in sess.scene.views:
        d = sess.checks[v.name].as_dict() if v.name in sess.checks else {}
        d["used"] = v.name in sess.used
        cams[v.name] = d
    for r in rows:
        if r["mask_confidence"] < 0.5:
            sess.warnings.append(
                f"{r['sample']} camera '{r['camera']}': low mask confidence "
                f"{r['mask_confidence']:.2f} ({r['mask_method']})"
            )
    report = {
        "capture": str(capture), "format": sess.scene.format, "framing": sess.opts.framing,
        "size": sess.opts.size, "n_samples": len(samples), "n_views": len(sess.used),
        "seconds": time.perf_counter() - t0, "timings": sess.timings, "summary": summarize(rows),
        "views": rows, "cameras": cams, "warnings": sess.warnings,
    }  # fmt: skip
    manifest = {
        "capture": str(capture),
        "format": sess.scene.format,
        "options": asdict(sess.opts),
        "cameras": sess.used,
        "rotation_up": R_up.tolist(),
        "world_from_capture": samples[0]["world_from_capture"] if len(samples) == 1 else None,
        "samples": samples,
        "warnings": sess.warnings,
        "report": "report.md",
    }
    write_report(out, report)
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
