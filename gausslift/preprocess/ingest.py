"""``gausslift ingest``: a multi-view capture -> normalised FaceLift samples, images and cameras changed
together by construction.

Per selected frame (a sample): masks per camera, the subject centre (mean of the 3D keypoints, else the
rays through the mask centroids), ONE similarity ``world_from_capture`` applied to every camera of the
sample (subject at the origin, rig up = +z, median camera distance 2.7). The rotation depends on the
cameras only and is shared by all samples of a session (``rotation_up`` in the manifest); translation
and scale follow the subject, which may move between frames, so each sample stores its own transform
(its ``opencv_cameras.json`` and the manifest's ``samples``). Then per view a virtual pinhole at the
same centre (see :mod:`gausslift.preprocess.reframe`); the image and the mask are resampled through one
map that undistorts and applies ``H = K_out R_rel K_src^-1``, and the output camera is that same
virtual pinhole, so they cannot disagree. Each output frame stores ``source = {camera, frame,
homography}``. Videos are decoded front to back in chunks of frames (bounded memory: a reader thread
decodes the next chunk while two workers segment, warp and write the current one, so at most two chunks
are held). ``report.json`` gives wall seconds and CPU seconds per phase (``timings``).

Bad calibrations (see :mod:`gausslift.preprocess.calib`) are reported and their cameras excluded
unless ``keep_bad_cameras``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.io import read_scene
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
from gausslift.preprocess.report import PhaseClock
from gausslift.preprocess.sources import Source, check_video, load_chunk, media_kind, open_source
from gausslift.preprocess.write import calibration_only, finish, reframe_and_warp, write_sample
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
    background_frames: int = 25
    chunk: int = 16  # frames held in memory at once


@dataclass
class Session:
    scene: Scene
    opts: IngestOptions
    warnings: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    used: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    clock: PhaseClock = field(default_factory=PhaseClock)


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
    for n in bad:
        sess.warnings.append(f"camera '{n}': bad calibration: {'; '.join(sess.checks[n].reasons)}")
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


def compute_mask(sess: Session, src: Source, i: int, model: dict | None = None) -> MaskResult:
    """Mask of one camera at frame ``i``. Once the background model has missed the subject in two
    frames of a camera (it hardly moves), its later chunks go straight to the seeded segmentation."""
    seeds, are_kp = _seeds(sess.scene, src.view, i)
    if i in src.given:
        return given_mask(src.given[i], seeds)
    bg = src.background if src.background_misses < 2 else None
    r = auto_mask(src.frames[i], bg, seeds, are_kp, model=model if are_kp else None)
    if bg is None and src.background is not None:
        r.note = "background model skipped: it missed the subject in earlier frames (it hardly moves)"
    return r


def _camera_head(sess: Session, src: Source, frames: list[int], model: dict) -> dict[int, MaskResult]:
    """The chunk's first frames of one camera, in order: the first learns the grabCut colour models,
    and each background-model miss is counted before the next frame is segmented."""
    out = {}
    for i in frames:
        out[i] = r = compute_mask(sess, src, i, model)
        src.background_misses += r.note.startswith("background model misses")
    return out


def compute_masks(sess: Session, pool, sources: list[Source], chunk: list[int]) -> dict:
    """{camera: {frame: MaskResult}} for a chunk. Per camera the first two frames run in order (see
    :func:`_camera_head`): the grabCut colour models are learnt on the first and used frozen on the
    others (steadier and about 3x faster than re-learning them every frame), and a background model that
    has missed twice is not tried on the rest. The other frames run one task per (camera, frame)."""
    head, rest = chunk[:2], chunk[2:]
    models = {s.view.name: {} for s in sources}
    heads = sess.clock.timed("masks", _camera_head)
    first = {s.view.name: pool.submit(heads, sess, s, head, models[s.view.name]) for s in sources}
    masks: dict[str, dict[int, MaskResult]] = {n: f.result() for n, f in first.items()}
    task = sess.clock.timed("masks", compute_mask)
    futs = {(s.view.name, i): pool.submit(task, sess, s, i, models[s.view.name])
            for s in sources for i in rest}  # fmt: skip
    for (name, i), f in futs.items():
        masks[name][i] = f.result()
    missed = "background model misses"
    for s in sources:
        s.background_misses += sum(masks[s.view.name][i].note.startswith(missed) for i in rest)
    return masks


def _retry_from_centre(sess: Session, sources, masks, indices) -> None:
    """Views left without a mask: grabCut seeded by the projected subject centre (the one the other
    views' masks agree on, else the point the cameras' optical axes meet)."""
    for i in indices:
        empty = [s for s in sources if masks[s.view.name][i].method == "none"]
        full = [s for s in sources if masks[s.view.name][i].method != "none"]
        if not empty:
            continue
        try:
            if len(full) >= 2:
                cents = [mask_centroid(masks[s.view.name][i].mask) for s in full]
                c = centre_from_masks([s.view.camera for s in full], cents)
            else:
                c = centre_from_axes([s.view.camera for s in sources])
        except ValueError:
            continue
        for s in empty:
            uv, z = s.view.camera.project(c[None])
            if z[0] > 0 and np.all(np.isfinite(uv)):
                r = auto_mask(s.frames[i], None, uv, False)
                r.note = (r.note + "; " if r.note else "") + "seeded by the projected subject centre"
                masks[s.view.name][i] = r


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
        checked = [check_video(v, sess.warnings) for v in views]
        views = [v for v, _ in checked]
        counts = {v.name: k for v, k in checked}
        n = min(counts.values())
        if len(set(counts.values())) > 1:
            sess.warnings.append(f"videos differ in length {counts}; using the first {n} frames")
        indices = parse_frames(opts.frames, n)
    else:
        n, indices = 1, [0]
        if opts.frames not in (None, "", "0", "0:1", ":"):
            sess.warnings.append(f"--frames {opts.frames} ignored: the capture is still images (one sample)")

    chunks = [indices[i : i + opts.chunk] for i in range(0, len(indices), max(1, opts.chunk))]
    rows, samples = [], []
    tm, clock = sess.timings, sess.clock
    tm.update(read_check_s=time.perf_counter() - t0, decode_wait_s=0.0, masks_s=0.0, reframe_write_s=0.0)
    # two workers for the per-view work; one reader thread decodes the next chunk meanwhile (OpenCV
    # releases the GIL while decoding, warping and segmenting)
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool, ThreadPoolExecutor(1) as reader:
        t = time.perf_counter()
        args = (opts.masks, opts.background_frames, n, chunks[0])
        with ThreadPoolExecutor(max_workers=len(views)) as opener:  # decoding: all cameras at once
            sources = list(opener.map(clock.timed("decode", lambda v: open_source(v, *args)), views))
        nxt = reader.submit(clock.timed("decode", _load), sources, chunks[0])
        try:
            for ci, chunk in enumerate(chunks):
                loaded = nxt.result()
                for s in sources:
                    s.frames, s.given = loaded[s.view.name]
                if ci + 1 < len(chunks):
                    nxt = reader.submit(clock.timed("decode", _load), sources, chunks[ci + 1])
                t = _tick(tm, "decode_wait_s", t)
                masks = compute_masks(sess, pool, sources, chunk)
                _retry_from_centre(sess, sources, masks, chunk)
                if ci == 0:  # the image checks use the first chunk
                    sources = _image_checks(sess, sources, masks, chunk)
                    sess.used = [s.view.name for s in sources]
                    R_up = rotation_between(estimate_up([s.view.camera for s in sources]), UP)
                t = _tick(tm, "masks_s", t)
                _reframe_chunk(sess, pool, out, sources, masks, chunk, R_up, video, rows, samples)
                t = _tick(tm, "reframe_write_s", t)
        finally:
            nxt.cancel()
            reader.shutdown(wait=True)
            for s in sources:
                s.close()
    tm["views_per_s"] = len(rows) / max(time.perf_counter() - t0, 1e-9)
    tm["cpu_s"] = {k: round(v, 3) for k, v in clock.cpu.items()}
    return finish(sess, out, capture, samples, rows, R_up, t0)


def _load(sources: list[Source], chunk: list[int]) -> dict:
    return {s.view.name: load_chunk(s, chunk) for s in sources}


def _tick(timings: dict, key: str, t: float) -> float:
    now = time.perf_counter()
    timings[key] += now - t
    return now


def _reframe_chunk(sess, pool, out, sources, masks, chunk, R_up, video, rows, samples) -> None:
    """Re-frame, resample and write every view of the chunk's samples (all views in parallel)."""
    plan, writes = [], []
    for fi in chunk:
        centre, how = sample_centre(sess, sources, masks, fi)
        T = world_from_capture([s.view.camera for s in sources], centre, R_up=R_up)
        jobs = [(k, s, masks[s.view.name][fi]) for k, s in enumerate(sources)]
        warp = sess.clock.timed("reframe", reframe_and_warp)
        futs = [pool.submit(warp, s, mr, fi, T, sess.opts) for _, s, mr in jobs]
        plan.append((fi, how, T, jobs, futs))
    for fi, how, T, jobs, futs in plan:
        results = [f.result() for f in futs]
        name = f"frame_{fi:06d}" if video else "sample_000000"
        write = sess.clock.timed("write", write_sample)
        writes.append(pool.submit(write, out / name, name, jobs, results, T, fi))
        samples.append(
            {"id": name, "frame": fi, "path": name, "centre_from": how, "world_from_capture": T.tolist()}
        )
        rows += [_row(name, k, s, mr, r) for (k, s, mr), r in zip(jobs, results)]
    for w in writes:
        w.result()


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
    if bad:
        sess.warnings.append(f"camera(s) {', '.join(bad)} fail the image check but are USED")
    return sources
