"""Texels of the face region's UV layout: each covered texel of an ``R`` x ``R`` map is one Gaussian, bound
to the region triangle that contains the texel centre, at that texel's barycentric coordinates.

The region's UV corners (``subject.uv[subject.face_uv]`` of the region's triangles) are mapped to the unit
square by their bounding box (each axis on its own), and rasterised as a flat mesh by
:func:`gausslift.meshrender.render_mesh` with an identity camera (texel ``(x, y)`` has its centre at
``((x + 0.5) / R, (y + 0.5) / R)``): the exact fill rule gives each covered texel one triangle and its
barycentrics. Triangles without UVs, or regions whose UV islands overlap, keep the first triangle hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gausslift.errors import InputError


@dataclass
class UVLayout:
    res: int
    region_faces: np.ndarray  # [Fr] indices into subject.faces
    texel: np.ndarray  # [N,2] int (x, y) of each Gaussian's texel
    face: np.ndarray  # [N] index into region_faces (the binding in the region's triangle list)
    bary: np.ndarray  # [N,3] float64 barycentrics of the texel centre in that triangle's corners
    uv_box: np.ndarray  # [2,2] (min, max) of the region's UVs
    uv_norm: np.ndarray  # [Fr,3,2] the region triangles' UV corners mapped to [0,1]^2

    @property
    def n(self) -> int:
        return len(self.face)

    def flat_index(self) -> torch.Tensor:
        """Index of each Gaussian's texel in a flattened [R*R] map (row-major, y then x)."""
        return torch.as_tensor(self.texel[:, 1] * self.res + self.texel[:, 0], dtype=torch.long)


def region_faces(subject, region: str = "face") -> np.ndarray:
    """Indices of the subject's triangles in ``region`` (:meth:`Subject.face_regions`)."""
    regs = subject.face_regions()
    if region not in regs:
        raise InputError(getattr(subject, "source", None),
                         f"the subject has no {region!r} region (has {', '.join(sorted(regs))})")
    idx = np.flatnonzero(regs[region])
    if len(idx) == 0:
        raise InputError(getattr(subject, "source", None), f"the {region!r} region is empty")
    return idx


def uv_corners(subject, faces: np.ndarray) -> np.ndarray:
    """UV corners [F,3,2] of the given triangles (``subject.uv[subject.face_uv[faces]]``)."""
    if getattr(subject, "uv", None) is None or getattr(subject, "face_uv", None) is None:
        raise InputError(getattr(subject, "source", None), "the subject model has no UV layout")
    return subject.uv.cpu().numpy()[subject.face_uv.cpu().numpy()[faces]].astype(np.float64)


def build_layout(subject, res: int, region: str = "face") -> UVLayout:
    """The Gaussians of an ``res`` x ``res`` UV map over ``region`` (see the module docstring)."""
    from gausslift.meshrender import render_mesh

    rf = region_faces(subject, region)
    c = uv_corners(subject, rf)
    lo, hi = c.reshape(-1, 2).min(0), c.reshape(-1, 2).max(0)
    span = np.maximum(hi - lo, 1e-12)
    # a flat mesh at depth 1 seen by K = I * res: pixel x = res * u_normalised
    pts = (c.reshape(-1, 2) - lo) / span * res
    verts = np.concatenate([pts, np.ones((len(pts), 1))], 1)
    tris = np.arange(len(pts)).reshape(-1, 3)
    K = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    fr = render_mesh(verts, tris, K, np.eye(4), res, res, antialias=False)
    ys, xs = np.nonzero(fr.tri_id >= 0)
    return UVLayout(res=int(res), region_faces=rf, texel=np.stack([xs, ys], 1).astype(np.int64),
                    face=fr.tri_id[ys, xs].astype(np.int64), bary=fr.bary[ys, xs].astype(np.float64),
                    uv_box=np.stack([lo, hi]), uv_norm=(c - lo) / span)
