"""``gausslift inspect PATH [--json]``: what a capture holds and what is wrong with its calibration."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections import Counter

import numpy as np

from gausslift.checks import check_scene, reprojection_errors, subject_point
from gausslift.io import read_scene
from gausslift.scene import Scene

HELP = "summarise a capture (format, cameras, sizes, focal lengths, distances) and check its calibration"
MAX_ROWS = 40


def add_arguments(parser) -> None:
    parser.add_argument("path", help="capture folder or calibration file")
    parser.add_argument("--json", action="store_true", help="print a JSON description only")
    parser.add_argument("--format", default=None, help="force a reader instead of auto-detection")
    parser.add_argument("--no-media", action="store_true", help="do not open images/videos to check sizes")


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _nums(a: np.ndarray) -> list:
    return [_nums(r) for r in a] if np.ndim(a) > 1 else [_num(x) for x in np.ravel(a)]


def describe(scene: Scene, warnings: list[str]) -> dict:
    """The ``--json`` document: format, views (camera in the internal convention) and warnings."""
    views = []
    for v in scene.views:
        c = v.camera
        views.append(
            {
                "name": v.name,
                "split": v.split,
                "width": c.width,
                "height": c.height,
                "K": _nums(c.K),
                "viewmat": _nums(c.viewmat),
                "distortion": _nums(c.dist),
                "image": None if v.image is None else str(v.image),
                "mask": None if v.mask is None else str(v.mask),
            }
        )
    return {"format": scene.format, "views": views, "warnings": list(warnings)}


def summary(scene: Scene, warnings: list[str]) -> str:
    units = scene.meta.get("units", "")
    lines = [f"format: {scene.format}", f"root: {scene.root}"]
    splits = Counter(v.split for v in scene.views)
    lines.append(f"views: {len(scene.views)} (" + ", ".join(f"{k} {n}" for k, n in splits.items()) + ")")
    sizes = Counter(f"{v.camera.width}x{v.camera.height}" for v in scene.views)
    lines.append("image sizes: " + ", ".join(f"{s} ({n})" for s, n in sizes.items()))
    subject = subject_point(scene, [v for v in scene.views if np.all(np.isfinite(v.camera.viewmat))])
    if subject is not None:
        lines.append(f"subject (estimated): {np.array2string(subject, precision=3)} {units}".rstrip())
    has_masks = sum(v.mask is not None for v in scene.views)
    has_video = sum("video" in v.meta for v in scene.views)
    lines.append(
        f"images: {sum(v.image is not None for v in scene.views)}, masks: {has_masks}, videos: {has_video}"
    )
    head = f"{'name':<16} {'split':<5} {'size':>9} {'fx':>8} {'fy':>8} {'cx':>8} {'cy':>8} {'dist':>9}  media"
    lines += ["", head]
    rows = scene.views if len(scene.views) <= MAX_ROWS else scene.views[: MAX_ROWS // 2]
    for v in rows:
        c = v.camera
        K = c.K
        d = float(np.linalg.norm(c.center - subject)) if subject is not None else float("nan")
        media = v.image or v.meta.get("video") or "-"
        lines.append(
            f"{v.name[:16]:<16} {v.split:<5} {c.width:>4}x{c.height:<4} {K[0, 0]:8.1f} {K[1, 1]:8.1f} "
            f"{K[0, 2]:8.1f} {K[1, 2]:8.1f} {d:9.3g}  {media}{'  [distorted]' if c.has_distortion else ''}"
        )
    if len(rows) < len(scene.views):
        lines.append(f"... {len(scene.views) - len(rows)} more views")
    lines.append("(dist: camera centre to subject" + (f", {units})" if units else ")"))
    kp = scene.keypoints
    if kp is not None:
        F, J = kp.points3d.shape[:2]
        lines += ["", f"keypoints: {F} frames x {J} points, 2D in {len(kp.points2d)} views"]
        lines += _reprojection_lines(scene, "keypoints")
    board = scene.meta.get("board")
    if board is not None:
        F, J = board.points3d.shape[:2]
        lines += ["", f"calibration board: {F} frames x {J} corners, 2D in {len(board.points2d)} views"]
        lines += _reprojection_lines(scene, "board")
    lines += ["", f"warnings: {len(warnings)}"] + [f"  - {w}" for w in warnings]
    return "\n".join(lines)


def _reprojection_lines(scene: Scene, source: str) -> list[str]:
    lines = []
    for name, e in reprojection_errors(scene, source).items():
        if e["median_px"] is None:
            lines.append(f"  {name}: no point both labelled and in front of the camera")
        else:
            lines.append(
                f"  {name}: reprojection median {e['median_px']:.3g} px, mean {e['mean_px']:.3g} px, "
                f"max {e['max_px']:.3g} px over {e['n']} points"
            )
    return lines


def run(args) -> int:
    with contextlib.redirect_stdout(sys.stderr):  # --json: nothing but the document on stdout
        scene = read_scene(args.path, args.format)
        warnings = check_scene(scene, media=not args.no_media)
    if args.json:
        sys.stdout.write(json.dumps(describe(scene, warnings), allow_nan=False) + "\n")
    else:
        print(summary(scene, warnings))
    return 0
