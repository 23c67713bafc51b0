"""One similarity transform for the whole rig: capture units (mm) -> normalised FaceLift units.

``world_from_capture`` maps X to ``s * R_up @ (X - c)``:

* ``c`` is the subject centre, which goes to the origin;
* ``R_up`` is the smallest rotation taking the rig's up direction to +z (FaceLift's world is z-up).
  Up is the normalised mean of the cameras' image-up directions (each camera's -y axis in world
  coordinates): rigs mount cameras upright, and around a ring the horizontal parts cancel. It depends
  on the cameras only, so every sample of a session shares it;
* ``s`` makes the median camera-to-subject distance ``target_distance`` (2.7).

Cameras are never rescaled one by one: every camera goes through the same matrix
(:func:`transform_camera`), so relative poses, angles and distance ratios are kept exactly.
"""

from __future__ import annotations

import numpy as np

from gausslift.cameras import FACELIFT_RADIUS, Camera
from gausslift.framing import similarity

UP = np.array([0.0, 0.0, 1.0])


def estimate_up(cams: list[Camera]) -> np.ndarray:
    ups = np.array([-c.R[1] for c in cams])
    u = ups.sum(axis=0)
    n = np.linalg.norm(u)
    if n < 1e-9:
        raise ValueError("camera up directions cancel out: cannot estimate the rig's up direction")
    return u / n


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector ``a`` to unit vector ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    if c < -1 + 1e-12:  # opposite: rotate pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def world_from_capture(
    cams: list[Camera], centre: np.ndarray, target_distance: float = FACELIFT_RADIUS, R_up=None
) -> np.ndarray:
    R = rotation_between(estimate_up(cams), UP) if R_up is None else R_up
    d = np.median([np.linalg.norm(c.center - centre) for c in cams])
    if not d > 0:
        raise ValueError("subject centre coincides with the cameras")
    return similarity(target_distance / d, R, centre)


def decompose(T: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation, translation) of a similarity 4x4."""
    A = T[:3, :3]
    s = float(np.cbrt(np.linalg.det(A)))
    return s, A / s, T[:3, 3].copy()


def transform_camera(cam: Camera, T: np.ndarray) -> Camera:
    """The same physical camera in the world ``T`` maps to: R' = R Rw^T, t' = s t - R' b."""
    s, Rw, b = decompose(T)
    R = cam.R @ Rw.T
    V = np.eye(4)
    V[:3, :3] = R
    V[:3, 3] = s * cam.t - R @ b
    return cam.with_(viewmat=V)


def transform_points(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


def elevation_deg(centre_n: np.ndarray) -> float:
    """Elevation of a normalised camera centre above the subject's horizontal plane (z-up)."""
    return float(np.degrees(np.arcsin(np.clip(centre_n[2] / np.linalg.norm(centre_n), -1, 1))))
