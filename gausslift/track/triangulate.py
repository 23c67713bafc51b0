"""Linear (DLT) triangulation of 2D keypoints: the tracker's initialiser and its baseline.

Pixels are undistorted to normalised coordinates first (the cameras' OpenCV distortion), so the
linear system is the pinhole one; each view's two rows are weighted by its confidence. A point seen by
fewer than ``min_views`` cameras is NaN.
"""

from __future__ import annotations

import numpy as np

from gausslift.cameras import Camera, pixels_to_normalized, undistort_normalized


def normalised(cam: Camera, uv: np.ndarray) -> np.ndarray:
    """Pixels [..., 2] (internal convention) -> undistorted normalised image coordinates [..., 2]."""
    shape = uv.shape
    xy = pixels_to_normalized(uv.reshape(-1, 2), cam.K)
    if cam.has_distortion:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            xy = undistort_normalized(xy, cam.dist)
    return xy.reshape(shape)


def triangulate(cameras: list[Camera], points2d: np.ndarray, weights: np.ndarray | None = None,
                min_views: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``points2d`` [C, ..., 2] (NaN missing), ``weights`` [C, ...] -> (points [..., 3], views [...]).

    Homogeneous DLT per point, solved by SVD of the stacked 2C x 4 system."""
    C = len(cameras)
    pts = np.asarray(points2d, np.float64)
    shape = pts.shape[1:-1]
    uv = pts.reshape(C, -1, 2)
    w = np.ones(uv.shape[:2]) if weights is None else np.asarray(weights, np.float64).reshape(C, -1).copy()
    ok = np.isfinite(uv).all(-1) & (w > 0)
    rows = []
    for c, cam in enumerate(cameras):
        xy = normalised(cam, np.where(ok[c, :, None], uv[c], 0.0))
        P = cam.viewmat[:3]  # normalised projection [R | t]
        wc = np.where(ok[c], w[c], 0.0)[:, None]
        rows.append(wc * (xy[:, :1] * P[2] - P[0]))
        rows.append(wc * (xy[:, 1:] * P[2] - P[1]))
    A = np.stack(rows, 1)  # [N, 2C, 4]
    views = ok.sum(0)
    out = np.full((A.shape[0], 3), np.nan)
    solve = views >= min_views
    if solve.any():
        _, _, vt = np.linalg.svd(A[solve])
        h = vt[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[solve] = h[:, :3] / h[:, 3:]
    return out.reshape(*shape, 3), views.reshape(shape)
