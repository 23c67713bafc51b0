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

The framing maths (aim, output camera, the fixed-point refinement) lives in :mod:`gausslift.framing`,
shared with ``gausslift synth``; this module supplies the mask a candidate camera sees (the source mask
resampled through that camera's map) and the maps for the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausslift.cameras import FACELIFT_SIZE, Camera
from gausslift.framing import (
    FRAMINGS,
    aim_rotation,
    facelift_camera,
    mask_centroid,
    refine_pixel_framing,
    size_ratio,
)
from gausslift.preprocess.undistort import homography, remap_maps

__all__ = ["FRAMINGS", "Reframed", "aim_rotation", "reframe_view", "warp_mask"]


@dataclass
class Reframed:
    camera: Camera  # output pinhole, normalised world
    R_rel: np.ndarray  # virtual camera coords = R_rel @ source camera coords
    homography: np.ndarray  # undistorted source pixels (source K) -> output pixels
    map_x: np.ndarray
    map_y: np.ndarray
    size_ratio: float | None  # sqrt(mask area / image area) of the output mask
    mask: np.ndarray | None  # the source mask resampled through the same map (uint8)


def warp_mask(mask: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.remap(mask, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


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
    one) the view falls back to ``facelift`` framing. The framing itself is :mod:`gausslift.framing`;
    here the mask a candidate camera sees is the source mask resampled through that camera's map.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}")
    C = src_n.center
    up_hint = -src_n.R[1]
    com = None if mask is None else mask_centroid(mask)
    maps: dict = {}

    def mask_of(cam: Camera) -> np.ndarray:
        R_rel = cam.R @ src_n.R.T
        mx, my = remap_maps(src_n, R_rel, cam.K, cam.width, cam.height)
        maps.update(R_rel=R_rel, mx=mx, my=my)
        return warp_mask(mask, mx, my)

    if framing == "facelift" or com is None:
        cam = facelift_camera(C, up_hint, size)
        R_rel = cam.R @ src_n.R.T
        mx, my = remap_maps(src_n, R_rel, cam.K, size, size)
        m = None if mask is None else warp_mask(mask, mx, my)
        ratio = None if m is None else size_ratio(m)
        return Reframed(cam, R_rel, homography(src_n.K, R_rel, cam.K), mx, my, ratio, m)

    # pixel framing: initial aim through the raw centre of mass, f from the raw area
    _, direction = src_n.rays(com[None])
    area_raw = float(mask.mean() / 255.0) * src_n.width * src_n.height
    f = target_scale * size * float(src_n.K[0, 0]) / max(np.sqrt(area_raw), 1.0)
    R_v = aim_rotation(direction[0], up_hint)
    cam, m, ratio = refine_pixel_framing(C, R_v, f, up_hint, mask_of, size, target_scale, iters)
    R_rel = maps["R_rel"]
    return Reframed(cam, R_rel, homography(src_n.K, R_rel, cam.K), maps["mx"], maps["my"], ratio, m)
