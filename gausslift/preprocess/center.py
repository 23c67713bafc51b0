"""The subject's centre in 3D: mean of given 3D keypoints, else the least-squares intersection of the
rays through each view's mask centroid (each ray weighted equally), else the point nearest to all
optical axes (cameras of a rig look at the subject)."""

from __future__ import annotations

import numpy as np

from gausslift.cameras import Camera, nearest_point_to_rays
from gausslift.framing import centre_from_keypoints, mask_centroid  # noqa: F401  (re-exported)


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
