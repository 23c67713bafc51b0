"""Subject framing shared by ``gausslift ingest`` (real rigs) and ``gausslift synth`` (rendered meshes).

One output view is a virtual pinhole at a given camera centre, principal point at the image centre,
square pixels, no distortion. Two framings:

* ``pixel``: the camera aims at the subject mask's centre of mass and f makes
  sqrt(mask area / image area) equal ``target_scale`` (0.3). Both are measured on the mask *as seen by
  the candidate camera*, which a caller supplies as a function ``mask_of(camera) -> HxW mask``
  (ingest: the source mask resampled through that camera's undistort/re-frame map; synth: the mesh
  silhouette rendered with that camera). :func:`refine_pixel_framing` iterates a few times on a
  half-size output (the centre of mass of a warped mask is not the warp of the centre of mass) and
  rescales f each time; with the principal point fixed at the centre a change of f scales the image
  about the centre, so the area scales by (f'/f)^2 and the centred centre of mass stays put.
* ``facelift``: the camera aims at the subject centre (the origin of the normalised world) and
  f = 548.99 * d / 2.7 at 512^2 (d: that camera's distance to the origin), so the subject has the size
  it has in FaceLift's renders (:func:`facelift_focal`).

Normalised world (FaceLift's): z up, subject centre at the origin, cameras about
``FACELIFT_RADIUS`` = 2.7 away. :func:`similarity` builds the 4x4 ``s R (X - c)`` that ingest's
``world_from_capture`` applies; :func:`centre_from_keypoints` is the subject centre both use when 3D
keypoints are known.

Roll: image-up is world +z; for a camera looking (nearly) straight down or up, ``up_hint`` (e.g. the
source camera's own up direction) is used instead.

Masks are uint8 (0..255) or float (0..1); the size ratio reads either.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gausslift.cameras import FACELIFT_FOCAL, FACELIFT_RADIUS, FACELIFT_SIZE, Camera, make_K, viewmat_from_Rt

FRAMINGS = ("pixel", "facelift")
TARGET_SCALE = 0.3
MaskOf = Callable[[Camera], np.ndarray]


def aim_rotation(direction: np.ndarray, up_hint: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera rotation looking along ``direction`` with ``up`` (or ``up_hint``) up."""
    z = np.asarray(direction, dtype=np.float64)
    z = z / np.linalg.norm(z)
    up = np.asarray(up, dtype=np.float64)
    if abs(z @ up) > 0.97:
        up = np.asarray(up_hint, dtype=np.float64)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def mask_centroid(mask: np.ndarray) -> np.ndarray | None:
    """Centre of mass of a mask (pixels, +0.5 convention), None when empty."""
    import cv2

    m = cv2.moments(np.ascontiguousarray(mask, dtype=np.float32 if mask.dtype != np.uint8 else np.uint8))
    if m["m00"] <= 0:
        return None
    return np.array([m["m10"] / m["m00"] + 0.5, m["m01"] / m["m00"] + 0.5])


def size_ratio(mask: np.ndarray) -> float:
    """sqrt(mask area / image area); uint8 masks are read as 0..255, float masks as 0..1."""
    m = np.asarray(mask)
    area = m.mean() / 255.0 if m.dtype == np.uint8 else float(m.mean())
    return float(np.sqrt(area))


def output_camera(center: np.ndarray, R_v: np.ndarray, f: float, size: int) -> Camera:
    """The square output pinhole at ``center`` with world-to-camera rotation ``R_v``, focal ``f``."""
    K = make_K(f, f, size / 2, size / 2)
    return Camera(K, viewmat_from_Rt(R_v, -R_v @ center), size, size)


def facelift_focal(distance: float, size: int = FACELIFT_SIZE) -> float:
    """FaceLift's focal (548.99 px at 512^2 for distance 2.7) scaled by distance and image size."""
    return FACELIFT_FOCAL * distance / FACELIFT_RADIUS * size / FACELIFT_SIZE


def facelift_camera(center: np.ndarray, up_hint: np.ndarray, size: int = FACELIFT_SIZE) -> Camera:
    """``facelift`` framing: aim at the origin, f from the camera's distance."""
    C = np.asarray(center, dtype=np.float64)
    f = facelift_focal(float(np.linalg.norm(C)), size)
    return output_camera(C, aim_rotation(-C, up_hint), f, size)


def refine_pixel_framing(
    center: np.ndarray,
    R_v: np.ndarray,
    f: float,
    up_hint: np.ndarray,
    mask_of: MaskOf,
    size: int = FACELIFT_SIZE,
    target_scale: float = TARGET_SCALE,
    iters: int = 4,
) -> tuple[Camera, np.ndarray, float]:
    """``pixel`` framing from an initial aim ``R_v`` and focal ``f`` (for ``size``).

    Refines the aim (at the mask's centre of mass) and f (size ratio = ``target_scale``) ``iters``
    times on a half-size output, then returns ``(camera, mask, size_ratio)`` at ``size``, the mask
    being ``mask_of(camera)``. A candidate that loses the subject keeps its aim and halves f.
    """
    C = np.asarray(center, dtype=np.float64)
    small = max(64, size // 2)
    for _ in range(iters):
        cam = output_camera(C, R_v, f * small / size, small)
        m = mask_of(cam)
        c = mask_centroid(m)
        if c is None:  # lost the subject (degenerate): keep the last aim, widen the view
            f *= 0.5
            continue
        ratio = size_ratio(m)
        ray = np.linalg.solve(cam.K, np.array([c[0], c[1], 1.0]))
        R_v = aim_rotation(R_v.T @ ray, up_hint)  # re-aim at the resampled centre of mass
        f *= target_scale / max(ratio, 1e-6)
    cam = output_camera(C, R_v, f, size)
    m = mask_of(cam)
    return cam, m, size_ratio(m)


def pixel_camera(
    center: np.ndarray,
    up_hint: np.ndarray,
    mask_of: MaskOf,
    size: int = FACELIFT_SIZE,
    target_scale: float = TARGET_SCALE,
    iters: int = 4,
) -> tuple[Camera, np.ndarray, float]:
    """``pixel`` framing for a camera at ``center`` that starts from FaceLift framing (aim at the
    origin, FaceLift focal): what synth uses, where the subject centre is at the origin."""
    cam0 = facelift_camera(center, up_hint, size)
    f0 = float(cam0.K[0, 0])
    return refine_pixel_framing(center, cam0.R, f0, up_hint, mask_of, size, target_scale, iters)


def reframe_similarity(
    mask: np.ndarray, cam: Camera, target_scale: float = TARGET_SCALE, target_uv=(0.0, 0.0)
) -> tuple[float, np.ndarray] | None:
    """The 3D counterpart of pixel framing: ``(s, delta)`` such that moving the subject by
    ``x -> s x + delta`` puts its mask as seen by ``cam`` at size ratio ``target_scale`` with its centre
    of mass at the normalised image coordinates ``target_uv`` (0, 0: the principal point).

    The similarity scales about the point q on the ray through the centre of mass at the depth z0 of the
    world origin and moves q to the target ray at that depth, so it is exact for a flat subject at that
    depth and first-order right for a subject small against its distance; a caller wanting the 2D
    framing to a fraction of a pixel re-measures and applies it again. None when the mask is empty."""
    c = mask_centroid(mask)
    if c is None:
        return None
    s = float(target_scale) / max(size_ratio(mask), 1e-9)
    R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    z0 = float(t[2])
    u = (c - cam.K[:2, 2]) / np.diag(cam.K)[:2]
    q, q_new = np.array([*u * z0, z0]), np.array([*np.asarray(target_uv, np.float64) * z0, z0])
    return s, R.T @ (s * (t - q) + q_new - t)


# ---------------------------------------------------------------------------------------------------
# normalised world
def centre_from_keypoints(points3d: np.ndarray) -> np.ndarray | None:
    """Mean of the finite 3D keypoints [..., 3], None when there are none."""
    p = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    p = p[np.all(np.isfinite(p), axis=1)]
    return p.mean(axis=0) if len(p) else None


def similarity(scale: float, R: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 mapping X to ``scale * R @ (X - centre)``."""
    T = np.eye(4)
    T[:3, :3] = scale * R
    T[:3, 3] = -scale * R @ centre
    return T
