"""Re-framing one view: a virtual pinhole at the source camera's centre, rotated to look at the subject,
principal point at the image centre, focal length chosen for the subject's size.

* ``pixel``: the rotation aims at the mask's centre of mass and f makes sqrt(mask area / image area)
  equal ``target_scale``, both measured on the mask resampled through the very map used for the image
  (so undistortion and perspective are accounted for). The aim is refined a few times (the centre of
  mass of a warped mask is not the warp of the centre of mass); f is then set exactly: with the
  principal point fixed at the centre, a change of f scales the output about the centre, so the area
  scales by (f'/f)^2 and the centred centre of mass stays put.
* ``facelift``: the rotation aims at the subject centre (the origin) and f = 548.99 * d / 2.7 at 512^2
  (d: that camera's normalised distance), so the subject has the size it has in FaceLift's renders.

Roll: image-up is world +z (z-up world); for a camera looking (nearly) straight down or up, the source
camera's own up direction is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausslift.cameras import FACELIFT_FOCAL, FACELIFT_RADIUS, FACELIFT_SIZE, Camera, make_K, viewmat_from_Rt
from gausslift.preprocess.center import mask_centroid
from gausslift.preprocess.undistort import homography, remap_maps

FRAMINGS = ("pixel", "facelift")


@dataclass
class Reframed:
    camera: Camera  # output pinhole, normalised world
    R_rel: np.ndarray  # virtual camera coords = R_rel @ source camera coords
    homography: np.ndarray  # undistorted source pixels (source K) -> output pixels
    map_x: np.ndarray
    map_y: np.ndarray
    size_ratio: float | None  # sqrt(mask area / image area) of the output mask
    mask: np.ndarray | None  # the source mask resampled through the same map (uint8)


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


def warp_mask(mask: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.remap(mask, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _output_camera(src_n: Camera, R_v: np.ndarray, f: float, size: int) -> tuple[Camera, np.ndarray]:
    C = src_n.center
    K = make_K(f, f, size / 2, size / 2)
    cam = Camera(K, viewmat_from_Rt(R_v, -R_v @ C), size, size)
    return cam, R_v @ src_n.R.T


def reframe_view(
    src_n: Camera,
    mask: np.ndarray | None,
    size: int = FACELIFT_SIZE,
    framing: str = "pixel",
    target_scale: float = 0.3,
    iters: int = 4,
) -> Reframed:
    """Re-frame one source view given in the normalised world (subject at the origin, z up).

    ``mask``: uint8 source mask (raw, distorted image) for ``pixel`` framing; without one (or an empty
    one) the view falls back to ``facelift`` framing.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}")
    C = src_n.center
    up_hint = -src_n.R[1]
    com = None if mask is None else mask_centroid(mask)
    if framing == "facelift" or com is None:
        d = float(np.linalg.norm(C))
        f = FACELIFT_FOCAL * d / FACELIFT_RADIUS * size / FACELIFT_SIZE
        cam, R_rel = _output_camera(src_n, aim_rotation(-C, up_hint), f, size)
        mx, my = remap_maps(src_n, R_rel, cam.K, size, size)
        m = None if mask is None else warp_mask(mask, mx, my)
        ratio = None if m is None else float(np.sqrt(m.mean() / 255.0))
        return Reframed(cam, R_rel, homography(src_n.K, R_rel, cam.K), mx, my, ratio, m)

    # pixel framing: initial aim through the raw centre of mass, f from the raw area
    _, direction = src_n.rays(com[None])
    area_raw = float(mask.mean() / 255.0) * src_n.width * src_n.height
    f = target_scale * size * float(src_n.K[0, 0]) / max(np.sqrt(area_raw), 1.0)
    R_v = aim_rotation(direction[0], up_hint)
    small = max(64, size // 2)
    for _ in range(iters):  # refine the aim and f on a half-size output (cheap)
        fn = f * small / size
        cam, R_rel = _output_camera(src_n, R_v, fn, small)
        mx, my = remap_maps(src_n, R_rel, cam.K, small, small)
        m = warp_mask(mask, mx, my)
        c = mask_centroid(m)
        if c is None:  # lost the subject (degenerate): keep the last aim, widen the view
            f *= 0.5
            continue
        ratio = float(np.sqrt(m.mean() / 255.0))
        ray = np.linalg.solve(cam.K, np.array([c[0], c[1], 1.0]))
        R_v = aim_rotation(R_v.T @ ray, up_hint)  # re-aim at the warped centre of mass
        f *= target_scale / max(ratio, 1e-6)
    cam, R_rel = _output_camera(src_n, R_v, f, size)
    mx, my = remap_maps(src_n, R_rel, cam.K, size, size)
    m = warp_mask(mask, mx, my)
    ratio = float(np.sqrt(m.mean() / 255.0))
    return Reframed(cam, R_rel, homography(src_n.K, R_rel, cam.K), mx, my, ratio, m)
