"""``render_mesh``: exact ids, depth, normals, barycentrics and anti-aliased alpha of a triangle mesh.

Conventions (as everywhere in gausslift): OpenCV camera (x right, y down, z forward), ``viewmat``
world-to-camera 4x4, ``K`` in pixels with the centre of pixel (x, y) at (x + 0.5, y + 0.5). Every
per-pixel quantity is that of the ray through the pixel centre; only ``alpha`` looks inside the pixel.

* ``tri_id`` [H, W] int32: the nearest triangle whose surface the centre ray hits at camera z >= near
  (-1: none). Triangles crossing the near plane are cut exactly at it (the part with z >= near is
  drawn), triangles wholly behind it are dropped. No far plane. Shared edges follow one fill rule, so a
  closed mesh has neither cracks nor double coverage.
* ``depth`` [H, W] float32: camera-space z of that hit; **0 where empty**.
* ``bary`` [H, W, 3] float32: perspective-correct barycentrics of the hit in the triangle's corners
  ``faces[tri_id]`` (they sum to 1; 0 where empty).
* ``normals`` [H, W, 3] float32: unit geometric (face) normal in camera space, flipped to face the camera
  (``dot(normal, ray) < 0``); 0 where empty. ``MeshFrame.normals_world()`` rotates them to the world.
  For smooth shading interpolate ``vertex_normals`` with :func:`interpolate`.
* ``mask`` [H, W] bool: ``tri_id >= 0``.
* ``alpha`` [H, W] float32: pixel coverage in [0, 1]. At silhouette pixels (the 3x3 neighbourhood holds
  covered and uncovered centres) and at uncovered pixels touched by a triangle that covers no pixel
  centre (sub-pixel slivers), it is the covered fraction of k x k regular subsamples (``aa_samples``,
  default 4, at most 8; union of all triangles, no depth test); elsewhere 1 where the centre is covered,
  else 0. With ``antialias=False`` alpha is the mask. Not seen: a gap narrower than a pixel away from
  the silhouette, and the parts of a thin triangle that covers some centre lying more than a pixel from
  any covered centre.

``render_mask`` is the fast path for silhouettes: the same coverage as ``mask``, nothing else.

Backends: ``"numba"`` (default; a tile-parallel z-buffer rasteriser: ``gausslift.meshrender.raster``
and ``.aa``; numba's thread count applies, set 1 per worker process) and ``"embree"`` (trimesh +
embreex ray casting, extra ``mesh``; float32 ray tests, an independent oracle, about 20x slower).
"""

from __future__ import annotations

import sys

import numpy as np

from gausslift.cameras import Camera
from gausslift.errors import InputError
from gausslift.meshrender import aa as _aa
from gausslift.meshrender import raster as _r
from gausslift.meshrender.embree import render_embree
from gausslift.meshrender.frame import MeshFrame

BACKENDS = ("numba", "embree")


def _torch():
    """The torch module if it is already imported (a tensor cannot exist otherwise), else None."""
    return sys.modules.get("torch")


def _array(x, name: str, dtype) -> np.ndarray:
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.ascontiguousarray(np.asarray(x), dtype=dtype) if dtype is not None else np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(None, f"render_mesh: {name} is not a numeric array ({e})") from None


def check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 vertices [V, 3] and int32 faces [F, 3]; InputError on anything else."""
    v = _array(vertices, "vertices", np.float64)
    f = _array(faces, "faces", None)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(None, f"render_mesh: vertices must be [V, 3], got {list(v.shape)}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise InputError(None, f"render_mesh: faces must be [F, 3], got {list(f.shape)}")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        raise InputError(None, f"render_mesh: faces must be integers, got {f.dtype}")
    if not np.all(np.isfinite(v)):
        raise InputError(None, f"render_mesh: {int((~np.isfinite(v)).any(1).sum())} vertices are not finite")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise InputError(
            None, f"render_mesh: face indices must be in [0, {len(v)}), got [{f.min()}, {f.max()}]"
        )
    return v, np.ascontiguousarray(f, dtype=np.int32)


def _check_camera(K, viewmat, width, height) -> tuple[np.ndarray, np.ndarray, int, int]:
    K = _array(K, "K", np.float64)
    M = _array(viewmat, "viewmat", np.float64)
    if K.shape != (3, 3) or M.shape != (4, 4):
        raise InputError(None, f"render_mesh: K must be [3, 3] and viewmat [4, 4], got {K.shape}, {M.shape}")
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(M))):
        raise InputError(None, "render_mesh: K or viewmat is not finite")
    if not (K[0, 0] > 0 and K[1, 1] > 0 and K[1, 0] == 0 and np.array_equal(K[2], [0.0, 0.0, 1.0])):
        raise InputError(
            None, f"render_mesh: K must be upper triangular with fx, fy > 0 and K[2] = [0, 0, 1]: {K}"
        )
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise InputError(
            None, f"render_mesh: width and height must be positive integers, got {width}x{height}"
        )
    return K, M, int(width), int(height)


def render_mesh(
    vertices,
    faces,
    K,
    viewmat,
    width: int,
    height: int,
    *,
    antialias: bool = True,
    cull_backfaces: bool = False,
    near: float = 1e-3,
    aa_samples: int = 4,
    backend: str = "numba",
) -> MeshFrame:
    """Render a triangle mesh (vertices [V, 3] world units, numpy or torch; faces [F, 3] int) in one camera.

    ``cull_backfaces`` drops triangles whose corners run clockwise on screen, i.e. whose normal
    ``(v1 - v0) x (v2 - v0)`` points away from the camera (outward-wound closed meshes: the hidden side).
    ``near`` is the near plane (camera z, world units). Returns a :class:`MeshFrame`.
    """
    v, f = check_mesh(vertices, faces)
    K, M, width, height = _check_camera(K, viewmat, width, height)
    if not (near > 0 and np.isfinite(near)):
        raise InputError(None, f"render_mesh: near must be a positive number, got {near}")
    if not (1 <= int(aa_samples) <= 8):
        raise InputError(None, f"render_mesh: aa_samples must be in 1..8, got {aa_samples}")
    if backend == "embree":
        return render_embree(v, f, K, M, width, height, antialias, cull_backfaces, near, int(aa_samples))
    if backend != "numba":
        raise InputError(None, f"render_mesh: unknown backend {backend!r}; use one of {BACKENDS}")
    P, Kinv, box, (start, ids), tri_id, hit = _raster(v, f, K, M, width, height, bool(cull_backfaces),
                                                      float(near))
    inv_near = 1.0 / near
    k = int(aa_samples)
    cover = np.zeros((height, width), dtype=np.uint64)
    if antialias:
        cand, sat = _aa.candidates(P, f, Kinv, box, inv_near, tri_id, hit)
        _aa.supersample(P, f, Kinv, box, start, ids, inv_near, cand, sat, k, cover)
    else:
        cand = np.zeros((height, width), dtype=np.bool_)
    depth = np.zeros((height, width), dtype=np.float32)
    normals = np.zeros((height, width, 3), dtype=np.float32)
    bary = np.zeros((height, width, 3), dtype=np.float32)
    alpha = np.zeros((height, width), dtype=np.float32)
    _r.resolve(P, f, Kinv, tri_id, cand, cover, k, depth, normals, bary, alpha)
    return MeshFrame(alpha, tri_id >= 0, depth, normals, tri_id, bary, K, M)


def render_mask(vertices, faces, K, viewmat, width: int, height: int, *, cull_backfaces: bool = False,
                near: float = 1e-3) -> np.ndarray:
    """Only the coverage mask [H, W] bool of :func:`render_mesh` (``MeshFrame.mask``, exactly the same
    pixels), without anti-aliasing, depth, normals or barycentrics: the fast path for silhouettes (numba
    backend; see :func:`render_mesh` for the arguments)."""
    v, f = check_mesh(vertices, faces)
    K, M, width, height = _check_camera(K, viewmat, width, height)
    if not (near > 0 and np.isfinite(near)):
        raise InputError(None, f"render_mask: near must be a positive number, got {near}")
    return _raster(v, f, K, M, width, height, bool(cull_backfaces), float(near))[4] >= 0


def _raster(v, f, K, M, width, height, cull, near):
    """The z-buffer pass: (P, Kinv, box, (start, ids), tri_id, hit)."""
    P = np.ascontiguousarray(v @ M[:3, :3].T + M[:3, 3])
    Kinv = np.linalg.inv(K)
    uv = _r.project(P, K, near)
    box = _r.boxes(P, f, K, uv, near, width, height, cull)
    start, ids = _r.bin_tiles(box, width, height)
    izbuf = np.zeros((height, width))
    tri_id = np.full((height, width), -1, dtype=np.int32)
    hit = np.zeros(len(f), dtype=np.uint8)
    _r.raster(P, f, Kinv, box, start, ids, 1.0 / near, izbuf, tri_id, hit)
    return P, Kinv, box, (start, ids), tri_id, hit


def render_cameras(vertices, faces, cameras: Camera, **kwargs) -> list[MeshFrame]:
    """Render one mesh in every camera of a (batched or single) :class:`gausslift.cameras.Camera`.

    Distortion is not supported (the rasteriser is pinhole): cameras with distortion raise InputError.
    """
    if cameras.has_distortion:
        raise InputError(
            None, "render_cameras: cameras with lens distortion are not supported; undistort first"
        )
    v, f = check_mesh(vertices, faces)
    if len(cameras.batch_shape) > 1:
        raise InputError(
            None, f"render_cameras: expected a camera batch of shape [N], got {cameras.batch_shape}"
        )
    cams = list(cameras) if cameras.batch_shape else [cameras]
    return [render_mesh(v, f, c.K, c.viewmat, c.width, c.height, **kwargs) for c in cams]


def vertex_normals(vertices, faces) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] (float64) from outward-wound faces; 0 for unused vertices."""
    v, f = check_mesh(vertices, faces)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for i in range(3):
        np.add.at(n, f[:, i], fn)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, ln, out=np.zeros_like(n), where=ln > 0)


def interpolate(frame: MeshFrame, attr, faces=None):
    """Interpolate an attribute over the visible triangles with the frame's barycentrics: [H, W, C].

    ``attr`` is per vertex [V, C] (or [V]) indexed through ``faces`` [F, 3] (the mesh's faces, or e.g.
    ``face_uv`` with per-UV-vertex ``uv``), or per corner [F, 3, C] with ``faces=None``. Empty pixels
    get 0. A torch ``attr`` gives a torch result, differentiable with respect to ``attr``.
    """
    torch = _torch()
    is_t = torch is not None and isinstance(attr, torch.Tensor)
    a = attr if is_t else np.asarray(attr)
    squeeze = False
    if faces is None:
        if a.ndim == 2:
            a, squeeze = a[..., None], True
        if a.ndim != 3 or a.shape[1] != 3:
            raise InputError(None, f"interpolate: per-corner attr must be [F, 3, C], got {list(a.shape)}")
        nf = a.shape[0]
    else:
        fi = np.asarray(faces)
        if a.ndim == 1:
            a, squeeze = a[:, None], True
        if a.ndim != 2 or fi.ndim != 2 or fi.shape[1] != 3:
            raise InputError(
                None,
                f"interpolate: attr must be [V, C] and faces [F, 3], got {list(a.shape)}, {list(fi.shape)}",
            )
        if fi.size and (fi.min() < 0 or fi.max() >= a.shape[0]):
            raise InputError(None, f"interpolate: faces index past the {a.shape[0]} attribute rows")
        nf = fi.shape[0]
    tid = frame.tri_id
    if tid.max(initial=-1) >= nf:
        raise InputError(None, f"interpolate: the frame has triangle ids past the {nf} faces given")
    ys, xs = np.nonzero(tid >= 0)
    t = tid[ys, xs]
    b = frame.bary[ys, xs]
    h, w = tid.shape
    c = a.shape[-1]
    if is_t:
        dt = a.dtype if a.is_floating_point() else torch.float32
        bt = torch.from_numpy(b).to(device=a.device, dtype=dt)
        idx = t if faces is None else fi[t]
        corner = a[torch.from_numpy(idx.astype(np.int64)).to(a.device)]
        vals = (corner * bt[..., None]).sum(1)
        pix = torch.from_numpy((ys * w + xs).astype(np.int64)).to(a.device)
        out = vals.new_zeros(h * w, c).index_copy(0, pix, vals).reshape(h, w, c)
    else:
        corner = a[t] if faces is None else a[fi[t]]
        vals = np.einsum("nkc,nk->nc", corner, b.astype(np.result_type(a.dtype, np.float32)))
        out = np.zeros((h, w, c), dtype=vals.dtype)
        out[ys, xs] = vals
    return out[..., 0] if squeeze else out
