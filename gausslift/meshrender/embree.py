"""Ray-casting backend: trimesh's Embree intersector (embreex), one ray per pixel centre.

Embree finds the first triangle along each ray (in float32); the hit point is then the float64
ray-plane intersection with that triangle, and its barycentrics come from
``trimesh.triangles.points_to_barycentric``. Rays start on the near plane (camera z = near), so only
surface with z >= near is seen, as in the rasteriser. Anti-aliasing casts k x k subsample rays at the
pixels whose 3x3 neighbourhood has both covered and uncovered centres (slivers thinner than the pixel
spacing, away from such pixels, are not seen). Back-face culling is not supported here.
"""

from __future__ import annotations

import numpy as np

from gausslift.errors import InputError
from gausslift.meshrender.frame import MeshFrame


def _intersector(v, f):
    try:
        import trimesh
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError as e:  # embreex missing
        raise InputError(None, f"render_mesh(backend='embree') needs trimesh and embreex: {e}") from None
    return RayMeshIntersector(trimesh.Trimesh(v, f, process=False, validate=False))


def _cast(rmi, M, Kinv, near, uv):
    """First-hit triangle ids [N] and camera-space hit points [N, 3] of rays through pixels uv [N, 2]."""
    d = np.concatenate([uv, np.ones_like(uv[:, :1])], 1) @ Kinv.T  # camera space, d_z = 1
    R, t = M[:3, :3], M[:3, 3]
    o = (d * near - t) @ R  # on the near plane, world space
    dw = d @ R
    tri = rmi.intersects_first(o, dw)
    return tri, d


def render_embree(v, f, K, M, width, height, antialias, cull, near, k):
    if cull:
        raise InputError(None, "render_mesh: backend='embree' does not support cull_backfaces")
    h, w = height, width
    tri_id = np.full(h * w, -1, dtype=np.int32)
    depth = np.zeros((h * w), dtype=np.float32)
    normals = np.zeros((h * w, 3), dtype=np.float32)
    bary = np.zeros((h * w, 3), dtype=np.float32)
    if len(f) == 0:
        m = tri_id.reshape(h, w) >= 0
        return MeshFrame(
            m.astype(np.float32),
            m,
            depth.reshape(h, w),
            normals.reshape(h, w, 3),
            tri_id.reshape(h, w),
            bary.reshape(h, w, 3),
            K,
            M,
        )
    import trimesh

    rmi = _intersector(v, f)
    Kinv = np.linalg.inv(K)
    ys, xs = np.mgrid[0:h, 0:w]
    uv = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1).astype(np.float64)
    tri, d = _cast(rmi, M, Kinv, near, uv)
    hit = tri >= 0
    tri_id[hit] = tri[hit]
    P = v @ M[:3, :3].T + M[:3, 3]
    T = P[f[tri[hit]]]  # [n, 3, 3] camera space
    n = np.cross(T[:, 1] - T[:, 0], T[:, 2] - T[:, 0])
    dh = d[hit]
    s = np.einsum("ij,ij->i", n, T[:, 0]) / np.einsum("ij,ij->i", n, dh)
    pts = dh * s[:, None]  # ray-plane hit, z = s
    depth[hit] = s
    bary[hit] = trimesh.triangles.points_to_barycentric(T, pts)
    nn = n / np.linalg.norm(n, axis=1, keepdims=True)
    nn *= -np.sign(np.einsum("ij,ij->i", nn, dh))[:, None]
    normals[hit] = nn
    mask = hit.reshape(h, w)
    alpha = mask.astype(np.float32)
    if antialias:
        pad = np.pad(mask, 1, mode="edge")
        win = np.stack(
            [pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        )
        cand = win.any(0) & ~win.all(0)
        cy, cx = np.nonzero(cand)
        off = (np.arange(k) + 0.5) / k
        sy, sx = np.meshgrid(off, off, indexing="ij")
        sub = np.stack([cx[:, None] + sx.ravel(), cy[:, None] + sy.ravel()], -1).reshape(-1, 2)
        st, _ = _cast(rmi, M, Kinv, near, sub)
        alpha[cy, cx] = (st.reshape(-1, k * k) >= 0).mean(1)
    return MeshFrame(
        alpha,
        mask,
        depth.reshape(h, w),
        normals.reshape(h, w, 3),
        tri_id.reshape(h, w),
        bary.reshape(h, w, 3),
        K,
        M,
    )
