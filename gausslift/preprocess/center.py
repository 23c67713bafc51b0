"""The subject's centre in 3D: mean of given 3D keypoints, else the least-squares intersection of the
rays through each view's mask centroid (each ray weighted equally), else the point nearest to all
optical axes (cameras of a rig look at the subject)."""

from __future__ import annotations

import numpy as np

from gausslift.cameras import Camera, nearest_point_to_rays


def mask_centroid(mask: np.ndarray) -> np.ndarray | None:
    """Centre of mass of a mask (pixels, +0.5 convention), None when empty."""
    import cv2

    m = cv2.moments(np.ascontiguousarray(mask, dtype=np.float32 if mask.dtype != np.uint8 else np.uint8))
    if m["m00"] <= 0:
        return None
    return np.array([m["m10"] / m["m00"] + 0.5, m["m01"] / m["m00"] + 0.5])


def intersect_rays(origins: np.ndarray, dirs: np.ndarray, weights=None) -> np.ndarray:
    """Point minimising the weighted sum of squared distances to rays (origins [N,3], dirs [N,3])."""
    p = nearest_point_to_rays(origins, dirs, weights, min_eig=1e-10)
    if p is None:
        raise ValueError("rays are (nearly) parallel: no intersection")
    return p


def centre_from_masks(cams: list[Camera], centroids: list[np.ndarray]) -> np.ndarray:
    """Least-squares intersection of the rays through the mask centroids (>= 2 views)."""
    origins, dirs = [], []
    for cam, c in zip(cams, centroids):
        o, d = cam.rays(np.asarray(c, dtype=np.float64)[None])
        origins.append(o[0])
        dirs.append(d[0])
    return intersect_rays(np.array(origins), np.array(dirs))


def centre_from_axes(cams: list[Camera]) -> np.ndarray:
    return intersect_rays(np.array([c.center for c in cams]), np.array([c.forward for c in cams]))


def centre_from_keypoints(points3d: np.ndarray) -> np.ndarray | None:
    """Mean of the finite 3D keypoints [J, 3], None when there are none."""
    p = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    p = p[np.all(np.isfinite(p), axis=1)]
    return p.mean(axis=0) if len(p) else None
