"""Exact triangle-mesh renderer for ground-truth synthetic data (ids, barycentrics, depth, normals, AA alpha).

See :mod:`gausslift.meshrender.api` for the conventions and :mod:`gausslift.meshrender.raster` for the
method.
"""

from gausslift.meshrender.api import (
    BACKENDS,
    MeshFrame,
    check_mesh,
    interpolate,
    render_cameras,
    render_mask,
    render_mesh,
    vertex_normals,
)

__all__ = [
    "BACKENDS",
    "MeshFrame",
    "check_mesh",
    "interpolate",
    "render_cameras",
    "render_mask",
    "render_mesh",
    "vertex_normals",
]
