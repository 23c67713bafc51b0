"""Calibration checks: what is wrong with a capture's cameras, said in one sentence per problem.

Real rig calibrations are often wrong (a camera copied over another, a distortion model that folds
over inside the image, skew the rasterizer ignores, an image size that does not match). These checks
report such problems; they never change the scene. :func:`check_scene` returns the warnings (the
reader's own first), :func:`reprojection_errors` the per-camera keypoint reprojection numbers.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, nearest_point_to_rays, pixels_to_normalized
from gausslift.scene import Keypoints, Scene, View, read_image_raw

# thresholds (each warning message states the numbers it found)
DUPLICATE_REL = 1e-3  # K entries and camera centres closer than this (relative) ...
DUPLICATE_DEG = 0.05  # ... and rotations closer than this: the "same" camera
ASPECT_TOL = 0.05  # |fx/fy - 1| above this is suspicious
SKEW_SHIFT_PX = 0.5  # skew moving pixels by more than this (the rasterizer ignores skew)
ROTATION_TOL = 1e-3  # orthonormality error of the rotation part
REPROJ_REL = 3.0  # a camera's median reprojection error above REPROJ_REL x the rig's median ...
REPROJ_MIN_PX = 2.0  # ... and above this, or ...
REPROJ_DIAG = 0.01  # ... above this fraction of the image diagonal: flagged
EXACT_PX = 1e-6  # 2D labels this close to the reprojection were computed from the 3D labels


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def check_scene(scene: Scene, media: bool = True) -> list[str]:
    """Warnings about the scene's cameras, images and keypoints (reader warnings first, no repeats).

    ``media=False`` skips reading image/video headers."""
    out: list[str] = list(scene.warnings)
    finite = []
    for v in scene.views:
        out += check_intrinsics(v) + check_pose(v)
        if usable(v.camera):
            finite.append(v)
            out += check_distortion(v)
    out += duplicate_cameras(finite)
    out += facing_subject(finite, subject_point(scene, finite))
    if media:
        for v in scene.views:
            out += check_media(v)
    out += keypoint_warnings(scene)
    seen, unique = set(), []
    for m in out:
        if m not in seen:
            seen.add(m)
            unique.append(m)
    return unique


# ---------------------------------------------------------------------------------------------------
# single cameras
def usable(cam: Camera) -> bool:
    """Finite K and pose, positive focal lengths and image size (the other checks need these)."""
    ok = np.all(np.isfinite(cam.K)) and np.all(np.isfinite(cam.viewmat)) and np.all(np.isfinite(cam.dist))
    return bool(ok and cam.K[0, 0] > 0 and cam.K[1, 1] > 0 and cam.width > 0 and cam.height > 0)


def check_intrinsics(view: View) -> list[str]:
    cam, n = view.camera, view.name
    K = cam.K
    if not np.all(np.isfinite(K)):
        return [f"camera '{n}': its intrinsic matrix K contains NaN or infinite values"]
    fx, fy, s, cx, cy = K[0, 0], K[1, 1], K[0, 1], K[0, 2], K[1, 2]
    out = []
    if fx <= 0 or fy <= 0:
        return [f"camera '{n}': focal length is not positive (fx={_fmt(fx)}, fy={_fmt(fy)})"]
    if cam.width <= 0 or cam.height <= 0:
        return [f"camera '{n}': image size {cam.width}x{cam.height} is not positive"]
    if abs(fx / fy - 1) > ASPECT_TOL:
        out.append(
            f"camera '{n}': fx/fy = {fx / fy:.3f} (fx={_fmt(fx)}, fy={_fmt(fy)}): pixels this far from "
            "square usually mean a wrong calibration or a resized image"
        )
    if not (0 <= cx <= cam.width and 0 <= cy <= cam.height):
        out.append(
            f"camera '{n}': principal point ({_fmt(cx)}, {_fmt(cy)}) lies outside its "
            f"{cam.width}x{cam.height} image"
        )
    shift = abs(s) * max(cy, cam.height - cy) / fy
    if shift > SKEW_SHIFT_PX:
        out.append(
            f"camera '{n}': skew {s:.3g} px ({math.degrees(math.atan2(abs(s), fy)):.2f} deg); the "
            f"Gaussian rasterizer ignores skew, which moves pixels by up to {shift:.2g} px at the image edge"
        )
    return out


def check_pose(view: View) -> list[str]:
    M = view.camera.viewmat
    n = view.name
    if not np.all(np.isfinite(M)):
        return [f"camera '{n}': its pose (viewmat) contains NaN or infinite values"]
    R = M[:3, :3]
    err = float(np.abs(R @ R.T - np.eye(3)).max())
    if err > ROTATION_TOL:
        return [f"camera '{n}': rotation is not orthonormal (error {err:.2g}): the pose is not rigid"]
    if np.linalg.det(R) < 0:
        return [f"camera '{n}': rotation has determinant -1 (a mirror): the axes are flipped"]
    return []


def distortion_fold(cam: Camera) -> tuple[float, float] | None:
    """Where the radial model r -> r (1 + k1 r^2 + k2 r^4 + k3 r^6) stops increasing inside the image:
    (fold radius in pixels from the principal point, fraction of the image beyond it), else None."""
    k1, k2, _, _, k3 = cam.dist
    if k1 == 0 and k2 == 0 and k3 == 0:
        return None
    corners = np.array([[0, 0], [cam.width, 0], [0, cam.height], [cam.width, cam.height]], float)
    r_corner = float(np.linalg.norm(pixels_to_normalized(corners, cam.K), axis=-1).max())
    r = np.linspace(0.0, 3.0 * r_corner, 6001)
    r2 = r * r
    rd = r * (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3)
    bad = np.flatnonzero(np.diff(rd) <= 0)
    if bad.size == 0 or rd[bad[0]] >= r_corner:
        return None
    rd_max = float(rd[bad[0]])
    ys, xs = np.mgrid[0 : cam.height : 8, 0 : cam.width : 8] + 4.0
    pix = np.stack([xs.ravel(), ys.ravel()], -1)
    frac = float((np.linalg.norm(pixels_to_normalized(pix, cam.K), axis=-1) > rd_max).mean())
    return rd_max * float(cam.K[0, 0]), frac


def check_distortion(view: View) -> list[str]:
    fold = distortion_fold(view.camera)
    if fold is None or fold[1] <= 0:
        return []
    k1, k2, _, _, k3 = view.camera.dist
    return [
        f"camera '{view.name}': its radial distortion (k1={k1:.3g}, k2={k2:.3g}, k3={k3:.3g}) turns back "
        f"{fold[0]:.0f} px from the principal point; {100 * fold[1]:.0f}% of the image lies beyond, where "
        "the model cannot be inverted (those pixels cannot be undistorted correctly)"
    ]


# ---------------------------------------------------------------------------------------------------
# the rig
def duplicate_cameras(views: list[View]) -> list[str]:
    if len(views) < 2:
        return []
    K = np.stack([v.camera.K for v in views])
    C = np.stack([v.camera.center for v in views])
    R = np.stack([v.camera.R for v in views])
    scale = float(np.linalg.norm(C.max(0) - C.min(0))) or 1.0
    dK = np.abs(K[:, None] - K[None]).max(axis=(-1, -2)) / np.maximum(np.abs(K[:, 0, 0]), 1e-12)[:, None]
    dc = np.linalg.norm(C[:, None] - C[None], axis=-1)
    cosang = np.clip((np.einsum("aij,bij->ab", R, R) - 1) / 2, -1.0, 1.0)
    ang = np.degrees(np.arccos(cosang))
    close = (dK < DUPLICATE_REL) & (dc < DUPLICATE_REL * scale) & (ang < DUPLICATE_DEG)
    out = []
    for i, j in zip(*np.nonzero(np.triu(close, 1))):
        a, b = views[i], views[j]
        fa, fb = a.meta.get("frame"), b.meta.get("frame")
        if fa is not None and fb is not None and fa != fb:
            continue  # the same static camera at different frames
        same = (
            np.array_equal(a.camera.K, b.camera.K)
            and np.array_equal(a.camera.viewmat, b.camera.viewmat)
            and np.array_equal(a.camera.dist, b.camera.dist)
        )
        what = "identical" if same else f"near-identical (centres {dc[i, j]:.3g} apart, {ang[i, j]:.2g} deg)"
        out.append(
            f"cameras '{a.name}' and '{b.name}' have {what} calibrations (K and pose): one was "
            "probably copied over the other"
        )
    return out


def axes_point(views: list[View]) -> np.ndarray | None:
    """Least-squares point nearest all optical axes (None when the axes are near parallel)."""
    if len(views) < 2:
        return None
    return nearest_point_to_rays([v.camera.center for v in views], [v.camera.forward for v in views])


def subject_point(scene: Scene, views: list[View] | None = None) -> np.ndarray | None:
    """The common subject: the keypoints' centroid, else a robust nearest point to the optical axes
    (the pairwise axis crossing seen inside the most images, refined by least squares over those)."""
    kp = scene.keypoints
    if kp is not None and np.isfinite(kp.points3d).any():
        pts = kp.points3d.reshape(-1, 3)
        return np.nanmean(pts[np.isfinite(pts).all(-1)], axis=0)
    views = [v for v in (scene.views if views is None else views) if usable(v.camera)]
    if len(views) < 2:
        return None
    C = np.stack([v.camera.center for v in views])
    D = np.stack([v.camera.forward / np.linalg.norm(v.camera.forward) for v in views])
    pairs = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))]
    if len(pairs) > 300:
        rng = np.random.default_rng(0)
        pairs = [pairs[k] for k in rng.choice(len(pairs), 300, replace=False)]
    cands = []
    for i, j in pairs:  # closest point between the two axes C + s D
        b = D[i] @ D[j]
        w = C[i] - C[j]
        den = 1 - b * b
        if den < 1e-6:
            continue
        s_i = (b * (D[j] @ w) - D[i] @ w) / den
        s_j = ((D[j] @ w) - b * (D[i] @ w)) / den
        if s_i > 0 and s_j > 0:
            cands.append((C[i] + s_i * D[i] + C[j] + s_j * D[j]) / 2)
    if not cands:
        return axes_point(views)
    P = np.stack(cands)
    inside = np.stack([_sees(v.camera, P) for v in views])  # [views, candidates]
    best = P[int(np.argmax(inside.sum(0)))]
    inliers = [v for v in views if _sees(v.camera, best[None])[0]]
    refined = axes_point(inliers) if len(inliers) >= 2 else None
    if refined is not None and sum(bool(_sees(v.camera, refined[None])[0]) for v in views) >= len(inliers):
        return refined
    return best


def _sees(cam: Camera, P: np.ndarray) -> np.ndarray:
    uv, z = cam.project(P, distort=False)
    with np.errstate(invalid="ignore"):
        return (
            (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= cam.height)
        )


def _off_axis_deg(cam: Camera, p: np.ndarray) -> float:
    v = p - cam.center
    c = float(cam.forward @ v / (np.linalg.norm(v) * np.linalg.norm(cam.forward) + 1e-300))
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def facing_subject(views: list[View], subject: np.ndarray | None) -> list[str]:
    if subject is None:
        return []
    out = []
    for v in views:
        cam = v.camera
        uv, z = cam.project(subject[None], distort=False)
        ang = _off_axis_deg(cam, subject)
        if z[0] <= 0:
            out.append(f"camera '{v.name}' has the subject behind it ({ang:.0f} deg off its optical axis)")
            continue
        u, w = uv[0]
        if not (0 <= u <= cam.width and 0 <= w <= cam.height):
            out.append(
                f"camera '{v.name}' does not face the subject: it is {ang:.0f} deg off the optical axis and "
                f"projects to ({u:.0f}, {w:.0f}), outside the {cam.width}x{cam.height} image"
            )
    return out


# ---------------------------------------------------------------------------------------------------
# images and videos
def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image (PNG header, else decoded), None when unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    img = read_image_raw(path)
    return None if img is None else (img.shape[1], img.shape[0])


def truncated(path: Path) -> bool:
    """A PNG without its IEND chunk, or a JPEG without its end-of-image marker near the end: the file was
    cut short (a copy or download interrupted). Reads the first and last bytes only."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError:
        return False
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return tail[-8:-4] != b"IEND"
    if head[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in tail
    return False


def video_size(path: Path) -> tuple[int, int] | None:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return (w, h) if cap.isOpened() and w > 0 and h > 0 else None
    finally:
        cap.release()


def check_media(view: View) -> list[str]:
    cam, out = view.camera, []
    items = [("image", view.image, image_size), ("mask", view.mask, image_size)]
    items += [(k, view.meta.get(k), video_size) for k in ("video", "mask_video")]
    for kind, path, probe in items:
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            out.append(f"view '{view.name}': {kind} file {path} is missing")
            continue
        size = probe(path)
        if size is None:
            out.append(f"view '{view.name}': {kind} file {path} is not readable")
        elif probe is image_size and truncated(path):
            out.append(f"view '{view.name}': {kind} file {path} is truncated (no end marker)")
        elif size != (cam.width, cam.height):
            out.append(
                f"view '{view.name}': {kind} {path.name} is {size[0]}x{size[1]} but its calibration is "
                f"{cam.width}x{cam.height}"
            )
    return out


# ---------------------------------------------------------------------------------------------------
# keypoints
def _points(scene: Scene, source: str) -> Keypoints | None:
    kp = scene.keypoints if source == "keypoints" else scene.meta.get(source)
    return kp if isinstance(kp, Keypoints) else None


def _residuals(kp: Keypoints | None, view: View) -> tuple[np.ndarray, np.ndarray] | None:
    if kp is None or view.name not in kp.points2d:
        return None
    obs = np.asarray(kp.points2d[view.name], dtype=np.float64).reshape(-1, 2)
    pts = np.asarray(kp.points3d, dtype=np.float64).reshape(-1, 3)
    if obs.shape[0] != pts.shape[0]:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        uv, _ = view.camera.project(pts)
        err = np.linalg.norm(uv - obs, axis=-1)
    return err[np.isfinite(err)], obs[np.isfinite(obs).all(-1)]


def reprojection_errors(scene: Scene, source: str = "keypoints") -> dict[str, dict[str, float | int | None]]:
    """Per view with 2D observations: distance between the projected 3D points and the 2D ones,
    ``{"median_px", "mean_px", "max_px", "n"}`` (None when no point is both labelled and in front).

    ``source`` is ``"keypoints"`` (``scene.keypoints``) or a key of ``scene.meta`` holding other
    :class:`Keypoints`, e.g. ``"board"`` (calibration-board corners some readers load)."""
    kp = _points(scene, source)
    out: dict[str, dict[str, float | int | None]] = {}
    for v in scene.views:
        res = _residuals(kp, v)
        if res is None:
            continue
        e = res[0]
        stats = (float(np.median(e)), float(e.mean()), float(e.max())) if e.size else (None,) * 3
        out[v.name] = dict(zip(("median_px", "mean_px", "max_px"), stats), n=int(e.size))
    return out


POINT_SOURCES = {"keypoints": "keypoints", "board": "calibration-board corners"}


def keypoint_warnings(scene: Scene) -> list[str]:
    out = []
    for source, label in POINT_SOURCES.items():
        out += _point_warnings(scene, source, label)
    return out


def _point_warnings(scene: Scene, source: str, label: str) -> list[str]:
    errs = reprojection_errors(scene, source)
    meds = {k: d["median_px"] for k, d in errs.items() if d["median_px"] is not None}
    out = []
    if meds and max(meds.values()) < EXACT_PX and len(meds) > 1:
        out.append(
            f"{label}: the 2D points of all {len(meds)} views equal the reprojected 3D points "
            f"(median error < {EXACT_PX:g} px): they were computed from the 3D points and cannot validate "
            "the calibration"
        )
        return out
    rig = float(np.median(list(meds.values()))) if meds else 0.0
    for v in scene.views:
        if v.name not in meds:
            continue
        m, d = meds[v.name], errs[v.name]
        diag = math.hypot(v.camera.width, v.camera.height)
        if (m > REPROJ_REL * rig and m > REPROJ_MIN_PX) or m > REPROJ_DIAG * diag:
            out.append(
                f"camera '{v.name}': reprojection error of the {label}: median {m:.1f} px, mean "
                f"{d['mean_px']:.1f} px over {d['n']} points (rig median {rig:.1f} px): its calibration "
                "does not fit them"
            )
    kp = _points(scene, source)
    for v in scene.views:
        res = _residuals(kp, v)
        if res is None or not res[1].size:
            continue
        lo, hi = res[1].min(axis=0), res[1].max(axis=0)
        if lo[0] < 0 or lo[1] < 0 or hi[0] > v.camera.width or hi[1] > v.camera.height:
            out.append(
                f"view '{v.name}': 2D {label} span x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}.."
                f"{hi[1]:.0f}, beyond its {v.camera.width}x{v.camera.height} image: wrong image size?"
            )
    return out
