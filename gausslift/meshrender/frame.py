"""``MeshFrame``: what :func:`gausslift.meshrender.render_mesh` returns, whichever backend renders it
(``api`` for the numba rasteriser, ``embree`` for ray casting; both import it from here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MeshFrame:
    """One rendered view; :mod:`gausslift.meshrender.api` describes every field."""

    alpha: np.ndarray  # [H, W] float32
    mask: np.ndarray  # [H, W] bool
    depth: np.ndarray  # [H, W] float32, 0 where empty
    normals: np.ndarray  # [H, W, 3] float32 camera space, facing the camera
    tri_id: np.ndarray  # [H, W] int32, -1 where empty
    bary: np.ndarray  # [H, W, 3] float32
    K: np.ndarray  # [3, 3] float64
    viewmat: np.ndarray  # [4, 4] float64

    @property
    def height(self) -> int:
        return self.tri_id.shape[0]

    @property
    def width(self) -> int:
        return self.tri_id.shape[1]

    def normals_world(self) -> np.ndarray:
        """Normals rotated to world space (n_world = R^T n_cam), [H, W, 3] float32."""
        return (self.normals @ self.viewmat[:3, :3].astype(np.float32)).astype(np.float32)

    def points_camera(self) -> np.ndarray:
        """Camera-space hit points [H, W, 3] (0 where empty): depth * K^-1 [u, v, 1]."""
        h, w = self.depth.shape
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        d = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(self.K).T
        return (d * self.depth[..., None]).astype(np.float32)
