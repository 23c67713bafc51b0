"""One resampling map per output view: undistortion and the re-framing rotation/zoom in a single remap.

A source camera (K_s, distortion) and a virtual pinhole (K_out) at the same centre, rotated by R_rel
(virtual-camera coordinates = R_rel @ source-camera coordinates), are related on *undistorted* source
pixels by the homography ``H = K_out R_rel K_s^-1``. For each output pixel centre p the map holds the
raw (distorted) source position: ray = R_rel^T K_out^-1 p, then distort and apply K_s. All K use the
internal convention (pixel centres at +0.5); cv2.remap samples with pixel centres at integers, so the
map stores ``u - 0.5``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gausslift.cameras import (
    Camera,
    distort_normalized,
    normalized_to_pixels,
    pixels_to_normalized,
    undistort_normalized,
)


def homography(K_src: np.ndarray, R_rel: np.ndarray, K_out: np.ndarray) -> np.ndarray:
    """Undistorted source pixels -> output pixels (both +0.5 convention), normalised so H[2,2] = 1."""
    H = np.asarray(K_out) @ np.asarray(R_rel) @ np.linalg.inv(np.asarray(K_src))
    return H / H[2, 2]


def apply_homography(H: np.ndarray, uv: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv, dtype=np.float64)
    p = np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1) @ np.asarray(H).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[..., :2] / p[..., 2:3]


def max_valid_radius2(dist: np.ndarray, r2_max: float = 25.0) -> float:
    """Largest r^2 (normalised, undistorted) up to which the radial model is monotonic.

    Beyond the fold of a strong barrel distortion (k1 < 0) distorted radii shrink again and the model
    maps far-away rays back into the image; such samples are invalid.
    """
    return _max_valid_radius2(tuple(float(x) for x in np.asarray(dist, dtype=np.float64)[:5]), r2_max)


@lru_cache(maxsize=256)
def _max_valid_radius2(dist: tuple, r2_max: float) -> float:
    k1, k2, _, _, k3 = dist
    r2 = np.linspace(0.0, r2_max, 20001)
    # d/dr [r (1 + k1 r^2 + k2 r^4 + k3 r^6)] = 1 + 3 k1 r^2 + 5 k2 r^4 + 7 k3 r^6
    deriv = 1 + 3 * k1 * r2 + 5 * k2 * r2**2 + 7 * k3 * r2**3
    bad = np.nonzero(deriv <= 0.05)[0]
    return float(r2[bad[0]]) if bad.size else r2_max


def source_positions(
    src: Camera, R_rel: np.ndarray, K_out: np.ndarray, uv_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Raw source pixel positions (+0.5 convention) of output pixels ``uv_out`` [..., 2]; valid flags."""
    xy = pixels_to_normalized(uv_out, K_out)
    rays = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1) @ np.asarray(R_rel)  # R_rel^T ray
    z = rays[..., 2]
    valid = z > 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = rays[..., :2] / np.where(valid, z, 1.0)[..., None]
    if src.has_distortion:
        r2 = np.sum(xs * xs, axis=-1)
        valid &= r2 < max_valid_radius2(src.dist)
        xs = distort_normalized(xs, np.asarray(src.dist))
    K = np.asarray(src.K)
    u = K[0, 0] * xs[..., 0] + K[0, 1] * xs[..., 1] + K[0, 2]
    v = K[1, 1] * xs[..., 1] + K[1, 2]
    return np.stack([u, v], axis=-1), valid


def _all_valid(src: Camera, M: np.ndarray, width: int, height: int) -> bool:
    """Whether every output pixel centre samples a valid ray: in front of the source camera and inside
    the distortion model's monotonic radius. The ray's Z is affine in (u, v), so it is positive on the
    whole grid when it is at the four corner pixel centres; the grid then maps to a convex quadrilateral
    of the source's normalised plane, on which r^2 (convex) is largest at a corner."""
    u = np.array([0.5, width - 0.5, 0.5, width - 0.5])
    v = np.array([0.5, 0.5, height - 0.5, height - 0.5])
    X, Y, Z = M @ np.stack([u, v, np.ones(4)])
    if not np.all(Z > 1e-6):
        return False
    if not src.has_distortion:
        return True
    return bool(np.all((X / Z) ** 2 + (Y / Z) ** 2 < max_valid_radius2(src.dist)))


def remap_maps(
    src: Camera, R_rel: np.ndarray, K_out: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """float32 (map_x, map_y) for cv2.remap producing the ``width`` x ``height`` output view.

    When every output pixel samples a valid ray (:func:`_all_valid`) and the source K has no skew, the
    maps are OpenCV's ``initUndistortRectifyMap`` (the same model: 5 coefficients, rectification
    R_rel, new camera K_out; both K shifted by -0.5 to OpenCV's integer pixel centres), which is about
    20x faster than numpy and agrees with :func:`remap_maps_numpy` to float32 rounding. Otherwise the
    numpy maps, which mark invalid samples outside the image.
    """
    K = np.asarray(src.K, dtype=np.float64)
    K_out = np.asarray(K_out, dtype=np.float64)
    M = np.asarray(R_rel, dtype=np.float64).T @ np.linalg.inv(K_out)
    if K[0, 1] == 0.0 and _all_valid(src, M, width, height):
        import cv2

        shift = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
        return cv2.initUndistortRectifyMap(
            K - shift, np.asarray(src.dist, dtype=np.float64)[:5], np.asarray(R_rel, dtype=np.float64),
            K_out - shift, (int(width), int(height)), cv2.CV_32FC1,
        )  # fmt: skip
    return remap_maps_numpy(src, R_rel, K_out, width, height)


def remap_maps_numpy(
    src: Camera, R_rel: np.ndarray, K_out: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`remap_maps` in numpy: the maths of :func:`source_positions` written out on the separable
    pixel grid (ray = M [u, v, 1] with M = R_rel^T K_out^-1); samples behind the camera or beyond the
    distortion fold are set to -1e4 (remap fills them with the border value)."""
    M = np.asarray(R_rel).T @ np.linalg.inv(np.asarray(K_out))
    u = np.arange(width, dtype=np.float64)[None, :] + 0.5
    v = np.arange(height, dtype=np.float64)[:, None] + 0.5
    X = M[0, 0] * u + (M[0, 1] * v + M[0, 2])
    Y = M[1, 0] * u + (M[1, 1] * v + M[1, 2])
    Z = M[2, 0] * u + (M[2, 1] * v + M[2, 2])
    valid = Z > 1e-6
    inv = 1.0 / np.where(valid, Z, 1.0)
    x, y = X * inv, Y * inv
    k1, k2, p1, p2, k3 = (float(c) for c in np.asarray(src.dist)[:5])
    if src.has_distortion:
        r2 = x * x + y * y
        valid &= r2 < max_valid_radius2(src.dist)
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xy = x * y
        x, y = (
            x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy,
        )
    K = np.asarray(src.K)
    mx = K[0, 0] * x + K[0, 1] * y + (K[0, 2] - 0.5)  # internal (+0.5) -> cv2.remap (centres at integers)
    my = K[1, 1] * y + (K[1, 2] - 0.5)
    mx[~valid] = -1e4  # outside: remap fills with the border value
    my[~valid] = -1e4
    return mx.astype(np.float32), my.astype(np.float32)


def undistort_points(src: Camera, uv_raw: np.ndarray) -> np.ndarray:
    """Raw (distorted) pixels -> undistorted pinhole pixels of the same K (both +0.5 convention)."""
    xy = pixels_to_normalized(uv_raw, src.K)
    if src.has_distortion:
        xy = undistort_normalized(xy, np.asarray(src.dist))
    return normalized_to_pixels(xy, src.K)


def pinhole_project(src: Camera, points: np.ndarray) -> np.ndarray:
    """World points [..., N, 3] to undistorted pixels of ``src`` (its own K, no distortion)."""
    return src.project(points, distort=False)[0]
