"""Calibration checks before ingest: is each camera consistent with the other cameras and its images?

1. The generic scene checks of :mod:`gausslift.checks` (when present), passed on as warnings.
2. Duplicates: two cameras with the same K, distortion and pose cannot film different images; both are
   suspects.
3. Keypoint reprojection (where the capture has labelled/triangulated 3D and 2D points): a camera whose
   median error is above ``min(max(rel * rig median, min_px), diag_frac * image diagonal)`` is bad
   (the thresholds of :mod:`gausslift.checks`); a duplicate with the worse error of its pair is bad.
4. After masks exist (:func:`image_consistency`): the subject centre triangulated from the *other*
   cameras' mask centroids must project inside this camera's mask (distance from its centroid below
   the mask's equivalent radius), and projected 3D keypoints must mostly fall inside its mask.

Bad cameras are reported and excluded unless the user insists (``keep_bad``); never used silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gausslift.cameras import Camera
from gausslift.preprocess.center import centre_from_masks, mask_centroid
from gausslift.scene import Scene


@dataclass
class CameraCheck:
    name: str
    reprojection: dict | None = None  # {"median_px", "mean_px", "n"}
    duplicate_of: list[str] = field(default_factory=list)
    image_consistency: dict | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def bad(self) -> bool:
        return bool(self.reasons)

    def as_dict(self) -> dict:
        return {
            "reprojection": self.reprojection,
            "duplicate_of": self.duplicate_of,
            "image_consistency": self.image_consistency,
            "bad": self.bad,
            "reasons": self.reasons,
        }


def _same(a: Camera, b: Camera) -> bool:
    return (
        np.allclose(a.K, b.K, atol=1e-6)
        and np.allclose(a.viewmat, b.viewmat, atol=1e-6)
        and np.allclose(a.dist, b.dist, atol=1e-9)
    )


def reprojection_errors(scene: Scene) -> dict[str, dict]:
    """Per view: distance between projected 3D keypoints and their 2D labels (pixels)."""
    try:
        from gausslift.checks import reprojection_errors as other
    except ImportError:
        other = None
    if other is not None:
        return other(scene)
    kp = scene.keypoints
    out: dict[str, dict] = {}
    if kp is None:
        return out
    for v in scene.views:
        if v.name not in kp.points2d:
            continue
        uv, _ = v.camera.project(kp.points3d.reshape(-1, 3))
        e = np.linalg.norm(uv - kp.points2d[v.name].reshape(-1, 2), axis=1)
        e = e[np.isfinite(e)]
        if len(e):
            out[v.name] = {"median_px": float(np.median(e)), "mean_px": float(e.mean()), "n": int(len(e))}
    return out


def check_calibration(
    scene: Scene, rel: float = 3.0, min_px: float = 2.0, diag_frac: float = 0.01
) -> tuple[dict, list[str]]:
    """Checks 1-3 on every view of ``scene``: ({name: CameraCheck}, warnings)."""
    warnings: list[str] = []
    try:
        from gausslift.checks import check_scene
    except ImportError:
        check_scene = None
    if check_scene is not None:
        warnings += [str(w) for w in check_scene(scene)]
    checks = {v.name: CameraCheck(v.name) for v in scene.views}
    views = scene.views
    for i, a in enumerate(views):
        for b in views[i + 1 :]:
            if _same(a.camera, b.camera):
                checks[a.name].duplicate_of.append(b.name)
                checks[b.name].duplicate_of.append(a.name)
    reproj = reprojection_errors(scene)
    for name, r in reproj.items():
        if name in checks and r.get("median_px") is not None:
            checks[name].reprojection = r
    med = [c.reprojection["median_px"] for c in checks.values() if c.reprojection]
    rig = float(np.median(med)) if med else 0.0
    for v in views:
        c = checks[v.name]
        # as gausslift.checks: above rel x the rig's median (and min_px), or above diag_frac of the diagonal
        limit = min(max(rel * rig, min_px), diag_frac * float(np.hypot(v.camera.width, v.camera.height)))
        if c.reprojection is not None and c.reprojection["median_px"] > limit:
            c.reasons.append(
                f"keypoints reproject {c.reprojection['median_px']:.1f} px (median) from their labels "
                f"(limit {limit:.1f} px)"
            )
    for c in checks.values():
        for other in c.duplicate_of:
            o = checks[other]
            if (
                c.reprojection
                and o.reprojection
                and c.reprojection["median_px"] > o.reprojection["median_px"]
            ):
                if not c.reasons:
                    c.reasons.append(f"calibration identical to '{other}', which fits the keypoints better")
        if c.duplicate_of and check_scene is None:
            warnings.append(
                f"camera '{c.name}': calibration identical to {', '.join(map(repr, c.duplicate_of))}"
            )
        if check_scene is None:  # (gausslift.checks already words these)
            warnings += [f"camera '{c.name}': {r}" for r in c.reasons]
    return checks, warnings


def _consensus_errors(cams, masks, cents, f, agree: float = 0.5) -> dict:
    """Per camera: distance (in mask radii) from its mask centroid to the projection of the subject
    centre that most cameras agree on: the centre triangulated from each pair of cameras, scored by how
    many cameras see it within ``agree`` radii of their centroid (robust to a wrong camera in the rig)."""
    from itertools import combinations

    have = [n for n in cams if cents[n] is not None]
    radius = {n: np.sqrt((masks[n][f] > 0).sum() / np.pi) for n in have}
    best, best_key = None, None
    for a, b in combinations(have, 2):
        try:
            c = centre_from_masks([cams[a], cams[b]], [cents[a], cents[b]])
        except ValueError:
            continue
        e = {}
        for n in have:
            uv, z = cams[n].project(c[None])
            ok = z[0] > 0 and radius[n] > 0 and np.all(np.isfinite(uv))
            e[n] = float(np.linalg.norm(uv[0] - cents[n]) / radius[n]) if ok else np.inf
        others = [v for k, v in e.items() if k not in (a, b)]
        if not others:
            continue
        key = (-sum(v < agree for v in e.values()), float(np.median(others)))
        if best_key is None or key < best_key:
            best, best_key = e, key
    return best or {}


def image_consistency(
    cams: dict[str, Camera],
    masks: dict[str, list[np.ndarray]],
    points3d: list[np.ndarray | None] | None = None,
    max_rel: float = 0.6,
    min_inside: float = 0.5,
) -> dict[str, dict]:
    """Check 4 per camera over the frames (lists aligned across cameras): {name: {"centroid_rel",
    "keypoints_inside", "reason"}}; ``centroid_rel`` is the median distance, in mask radii, between
    the mask centroid and the projected subject centre the rig agrees on (:func:`_consensus_errors`)."""
    import cv2

    names = list(cams)
    n_frames = len(next(iter(masks.values()))) if masks else 0
    rel = {n: [] for n in names}
    inside = {n: [] for n in names}
    for f in range(n_frames):
        cents = {n: mask_centroid(masks[n][f]) for n in names}
        errs = _consensus_errors(cams, masks, cents, f)
        for n in names:
            if errs.get(n) is not None:
                rel[n].append(errs[n])
        for n in names:
            if cents[n] is not None and points3d is not None and points3d[f] is not None:
                uv, z = cams[n].project(points3d[f])
                ok = np.all(np.isfinite(uv), axis=1) & (z > 0)
                if ok.any():
                    m = cv2.dilate(masks[n][f], np.ones((9, 9), np.uint8))
                    ij = np.floor(uv[ok]).astype(int)
                    h, w = m.shape
                    inb = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
                    hit = np.zeros(len(ij), bool)
                    hit[inb] = m[ij[inb, 1], ij[inb, 0]] > 0
                    inside[n].append(float(hit.mean()))
    out = {}
    for n in names:
        r = {
            "centroid_rel": float(np.median(rel[n])) if rel[n] else None,
            "keypoints_inside": float(np.median(inside[n])) if inside[n] else None,
            "reason": None,
        }
        if r["centroid_rel"] is not None and r["centroid_rel"] > max_rel:
            r["reason"] = (
                f"its mask centroid is {r['centroid_rel']:.1f} mask radii from the subject centre "
                "the other cameras agree on"
            )
        elif r["keypoints_inside"] is not None and r["keypoints_inside"] < min_inside:
            r["reason"] = f"only {r['keypoints_inside']:.0%} of the projected 3D keypoints fall on its mask"
        out[n] = r
    return out
