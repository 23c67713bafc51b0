"""Measurements of a track: keypoint error per camera and frame, and jitter."""

from __future__ import annotations

import numpy as np

from gausslift.cameras import Camera


def pixel_errors(cameras: list[Camera], points3d: np.ndarray, points2d: np.ndarray) -> np.ndarray:
    """Distance [C, F, K] between ``points3d`` [F,K,3] projected into each camera and ``points2d``
    [C,F,K,2] (NaN where either is missing)."""
    F, K = points3d.shape[:2]
    out = []
    for c, cam in enumerate(cameras):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            uv, _ = cam.project(points3d.reshape(-1, 3))
            out.append(np.linalg.norm(uv.reshape(F, K, 2) - points2d[c], axis=-1))
    return np.stack(out)


def summary(e: np.ndarray) -> dict:
    """Median, mean, 90th percentile and count of the finite values of ``e``."""
    e = np.asarray(e, np.float64).ravel()
    e = e[np.isfinite(e)]
    if not e.size:
        return {"median_px": None, "mean_px": None, "p90_px": None, "n": 0}
    return {"median_px": round(float(np.median(e)), 3), "mean_px": round(float(e.mean()), 3),
            "p90_px": round(float(np.percentile(e, 90)), 3), "n": int(e.size)}


def second_differences(points3d: np.ndarray, frame_ids: np.ndarray) -> np.ndarray:
    """|X[t+1] - 2 X[t] + X[t-1]|^2 [F-2, K] where the three frames are consecutive (NaN elsewhere)."""
    X = np.asarray(points3d, np.float64)
    ids = np.asarray(frame_ids)
    a = ((X[2:] - 2 * X[1:-1] + X[:-2]) ** 2).sum(-1)
    ok = (ids[2:] - ids[1:-1] == 1) & (ids[1:-1] - ids[:-2] == 1)
    a[~ok] = np.nan
    return a


def jitter_energy(points3d: np.ndarray, frame_ids: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean squared second temporal difference (units^2 per frame^2) over the finite entries
    (restricted to ``where`` [F-2, K] when given)."""
    a = second_differences(points3d, frame_ids)
    if where is not None:
        a = np.where(where, a, np.nan)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
