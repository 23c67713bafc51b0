"""``gausslift ingest``: a multi-view capture -> normalised FaceLift samples, images and cameras changed
together by construction.

Per selected frame (a sample): masks per camera, the subject centre (mean of the 3D keypoints, else the
rays through the mask centroids), ONE similarity ``world_from_capture`` for all cameras (subject at the
origin, rig up = +z, median camera distance 2.7; the rotation is shared by all samples of a session),
then per view a virtual pinhole at the same centre (see :mod:`gausslift.preprocess.reframe`); the image
and the mask are resampled through one map that undistorts and applies ``H = K_out R_rel K_src^-1``,
and the output camera is that same virtual pinhole, so they cannot disagree. Each output frame stores
``source = {camera, frame, homography}``.

Bad calibrations (see :mod:`gausslift.preprocess.calib`) are reported and their cameras excluded
unless ``keep_bad_cameras``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.io import read_scene
from gausslift.ioutil import atomic_write_json
from gausslift.preprocess import calib
from gausslift.preprocess.center import (
    centre_from_axes,
    centre_from_keypoints,
    centre_from_masks,
    mask_centroid,
)
from gausslift.preprocess.frames import parse_frames
from gausslift.preprocess.masks import MaskResult, auto_mask, given_mask
from gausslift.preprocess.normalize import (
    UP,
    elevation_deg,
    estimate_up,
    rotation_between,
    world_from_capture,
)
from gausslift.preprocess.reframe import FRAMINGS
from gausslift.preprocess.report import summarize, write_report
from gausslift.preprocess.sources import Source, load_source, media_kind, n_video_frames
from gausslift.preprocess.write import calibration_only, reframe_and_warp, write_sample
from gausslift.scene import Scene


@dataclass
class IngestOptions:
    frames: str | None = None
    size: int = 512
    target_scale: float = 0.3
    exclude: tuple[str, ...] = ()
    masks: str = "auto"  # or a folder of given masks
    framing: str = "pixel"
    keep_bad_cameras: bool = False
    workers: int = 2
    background_frames: int = 41


@dataclass
class Session:
    scene: Scene
    opts: IngestOptions
    warnings: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    used: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def _validate(opts: IngestOptions) -> None:
    if opts.framing not in FRAMINGS:
        raise InputError(None, f"--framing must be one of {', '.join(FRAMINGS)}")
    if not 16 <= opts.size <= 8192:
        raise InputError(None, f"--size {opts.size}: expected 16..8192")
    if not 0.01 < opts.target_scale < 1.0:
        raise InputError(None, f"--target-scale {opts.target_scale}: expected a fraction in (0.01, 1)")
    if opts.masks != "auto" and not Path(opts.masks).is_dir():
        raise InputError(opts.masks, "--masks must be 'auto' or a folder of masks")


def select_cameras(sess: Session) -> list:
    """Apply --exclude-camera and the calibration checks; returns the views to use, in scene order."""
    scene, opts = sess.scene, sess.opts
    unknown = [n for n in opts.exclude if n not in scene.names]
    if unknown:
        raise InputError(
            scene.root, f"--exclude-camera {unknown[0]}: no such camera ({', '.join(scene.names)})"
        )
    sess.checks, w = calib.check_calibration(scene)
    sess.warnings += w
    views = [v for v in scene.views if v.name not in opts.exclude]
    bad = [v.name for v in views if sess.checks[v.name].bad]
    if bad:
        if opts.keep_bad_cameras:
            sess.warnings.append(
                f"camera(s) {', '.join(bad)} have bad calibrations but are USED (--keep-bad-cameras)"
            )
        else:
            sess.warnings.append(
                f"camera(s) {', '.join(bad)} excluded: calibration inconsistent "
                "(--keep-bad-cameras to use them)"
            )
            views = [v for v in views if v.name not in bad]
    if not views:
        raise InputError(scene.root, "no camera left to ingest")
    return views


def _seeds(scene: Scene, view, frame: int) -> tuple[np.ndarray | None, bool]:
    kp = scene.keypoints
    if kp is None or frame >= kp.points3d.shape[0]:
        return None, False
    if view.name in kp.points2d:
        p = kp.points2d[view.name][frame]
        p = p[np.all(np.isfinite(p), axis=1)]
        if len(p) >= 2:
            return p, True
    uv, z = view.camera.project(kp.points3d[frame])
    ok = np.all(np.isfinite(uv), axis=1) & (z > 0)
    return (uv[ok], True) if ok.sum() >= 2 else (None, False)


def compute_masks(sess: Session, src: Source, indices: list[int]) -> dict[int, MaskResult]:
    out = {}
    for i in indices:
        seeds, are_kp = _seeds(sess.scene, src.view, i)
        if i in src.given:
            out[i] = given_mask(src.given[i], seeds)
        else:
            out[i] = auto_mask(src.frames[i], src.background, seeds, are_kp)
    return out


def _retry_from_centre(sess: Session, sources, masks, indices) -> None:
    """Views left without a mask: grabCut seeded by the subject centre the other views agree on."""
    for i in indices:
        empty = [s for s in sources if masks[s.view.name][i].method == "none"]
        full = [s for s in sources if masks[s.view.name][i].method != "none"]
        if not empty or len(full) < 2:
            continue
        cents = [mask_centroid(masks[s.view.name][i].mask) for s in full]
        c = centre_from_masks([s.view.camera for s in full], cents)
        for s in empty:
            uv, z = s.view.camera.project(c[None])
            if z[0] > 0:
                masks[s.view.name][i] = auto_mask(s.frames[i], None, uv, False)


def sample_centre(sess: Session, sources, masks, frame: int) -> tuple[np.ndarray, str]:
    kp = sess.scene.keypoints
    if kp is not None and frame < kp.points3d.shape[0]:
        c = centre_from_keypoints(kp.points3d[frame])
        if c is not None:
            return c, "keypoints"
    have = [s for s in sources if masks[s.view.name][frame].coverage > 0]
    if len(have) >= 2:
        try:
            cents = [mask_centroid(masks[s.view.name][frame].mask) for s in have]
            return centre_from_masks([s.view.camera for s in have], cents), "mask rays"
        except ValueError:
            pass
    return centre_from_axes([s.view.camera for s in sources]), "optical axes"


def ingest(
    capture: str | Path, out: str | Path, opts: IngestOptions | None = None, scene: Scene | None = None
):
    """Ingest ``capture`` (or an already read ``scene``) into ``out``; returns the manifest dict."""
    t0 = time.perf_counter()
    opts = opts or IngestOptions()
    _validate(opts)
    out = Path(out)
    scene = scene if scene is not None else read_scene(capture)
    sess = Session(scene, opts)
    views = select_cameras(sess)
    kinds = {media_kind(v) for v in views}
    if kinds == {"none"}:
        return calibration_only(sess, views, out, capture, t0)
    if "none" in kinds:
        nomedia = [v.name for v in views if media_kind(v) == "none"]
        sess.warnings.append(f"camera(s) {', '.join(nomedia)} have no video or image; left out")
        views = [v for v in views if media_kind(v) != "none"]
    if len({media_kind(v) for v in views}) > 1:
        raise InputError(scene.root, "some cameras have videos and others still images; cannot synchronise")
    video = media_kind(views[0]) == "video"
    if video:
        counts = {v.name: n_video_frames(v) for v in views}
        n = min(counts.values())
        if len(set(counts.values())) > 1:
            sess.warnings.append(f"videos differ in length {counts}; using the first {n} frames")
        indices = parse_frames(opts.frames, n)
    else:
        n, indices = 1, [0]
        if opts.frames not in (None, "", "0", "0:1", ":"):
            sess.warnings.append(f"--frames {opts.frames} ignored: the capture is still images (one sample)")

    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        sources = list(
            pool.map(lambda v: load_source(v, indices, opts.masks, opts.background_frames, n), views)
        )
        sess.timings["decode_s"] = time.perf_counter() - t0
        masks = dict(
            zip([s.view.name for s in sources], pool.map(lambda s: compute_masks(sess, s, indices), sources))
        )
        _retry_from_centre(sess, sources, masks, indices)
        sess.timings["masks_s"] = time.perf_counter() - t0 - sess.timings["decode_s"]
        t1 = time.perf_counter()
        sources = _image_checks(sess, sources, masks, indices)
        sess.used = [s.view.name for s in sources]
        R_up = rotation_between(estimate_up([s.view.camera for s in sources]), UP)
        rows, samples, writes = [], [], []
        plan = []
        for fi in indices:
            centre, how = sample_centre(sess, sources, masks, fi)
            T = world_from_capture([s.view.camera for s in sources], centre, R_up=R_up)
            jobs = [(k, s, masks[s.view.name][fi]) for k, s in enumerate(sources)]
            futs = [pool.submit(reframe_and_warp, s, mr, fi, T, opts) for _, s, mr in jobs]
            plan.append((fi, how, T, jobs, futs))
        for fi, how, T, jobs, futs in plan:
            results = [f.result() for f in futs]
            name = f"frame_{fi:06d}" if video else "sample_000000"
            writes.append(pool.submit(write_sample, out / name, name, jobs, results, T, fi))
            samples.append(
                {"id": name, "frame": fi, "path": name, "centre_from": how, "world_from_capture": T.tolist()}
            )
            rows += [_row(name, k, s, mr, r) for (k, s, mr), r in zip(jobs, results)]
        for w in writes:
            w.result()
    sess.timings["reframe_write_s"] = time.perf_counter() - t1
    sess.timings["views_per_s_reframe_write"] = len(rows) / max(sess.timings["reframe_write_s"], 1e-9)
    return _finish(sess, out, capture, samples, rows, R_up, t0)


def _row(name: str, k: int, s: Source, mr: MaskResult, r) -> dict:
    C = r.camera.center
    return {
        "sample": name, "camera": s.view.name, "index": k, "mask_method": mr.method,
        "mask_coverage": mr.coverage, "mask_confidence": mr.confidence, "mask_note": mr.note,
        "size_ratio_before": float(np.sqrt(mr.coverage)), "size_ratio_after": r.size_ratio,
        "scale_factor": float(r.camera.K[0, 0] / s.view.camera.K[0, 0]),
        "distance": float(np.linalg.norm(C)), "elevation_deg": elevation_deg(C),
    }  # fmt: skip


def _image_checks(sess: Session, sources, masks, indices) -> list[Source]:
    kp = sess.scene.keypoints
    p3 = None
    if kp is not None:
        p3 = [kp.points3d[i] if i < kp.points3d.shape[0] else None for i in indices]
    names = [s.view.name for s in sources]
    if len(names) < 3:
        return sources
    res = calib.image_consistency(
        {s.view.name: s.view.camera for s in sources},
        {n: [masks[n][i].mask for i in indices] for n in names},
        p3,
    )
    bad = []
    for n, r in res.items():
        sess.checks[n].image_consistency = r
        if r["reason"]:
            sess.checks[n].reasons.append(r["reason"])
            sess.warnings.append(f"camera '{n}': calibration inconsistent with its images: {r['reason']}")
            bad.append(n)
    if bad and not sess.opts.keep_bad_cameras and len(bad) < len(names):
        sess.warnings.append(f"camera(s) {', '.join(bad)} excluded (--keep-bad-cameras to use them)")
        return [s for s in sources if s.view.name not in bad]
    return sources


def _finish(sess: Session, out: Path, capture, samples, rows, R_up, t0) -> dict:
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
