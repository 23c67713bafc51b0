"""gausslift.meshrender: exact ids/depth/barycentrics, fill rule, near plane, AA alpha, bad input."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gausslift import cameras as C
from gausslift.errors import InputError
from gausslift.meshrender import interpolate, render_cameras, render_mask, render_mesh, vertex_normals


def _sphere(sub=3):
    """Unit icosphere, outward-wound (subdivided icosahedron, vertices pushed to the sphere)."""
    g = (1 + 5**0.5) / 2
    v = [[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0], [0, -1, g], [0, 1, g]]
    v += [[0, -1, -g], [0, 1, -g], [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2]]
    f += [[10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5]]
    f += [[2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    v = [np.array(p, float) / np.linalg.norm(p) for p in v]
    mid = {}

    def m(a, b):
        key = (min(a, b), max(a, b))
        if key not in mid:
            p = v[a] + v[b]
            v.append(p / np.linalg.norm(p))
            mid[key] = len(v) - 1
        return mid[key]

    for _ in range(sub):
        nf = []
        for a, b, c in f:
            ab, bc, ca = m(a, b), m(b, c), m(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    return np.array(v), np.array(f, np.int32)


def _box():
    """The cube [-1, 1]^3 as 12 outward-wound triangles."""
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    f = [[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads]
    return v, np.array(f, np.int32)


def _cam(eye, size=128, fov=50.0, target=(0, 0, 0)):
    return C.K_from_fov(fov, size, size), C.look_at(np.asarray(eye, float), np.asarray(target, float))


def _oracle(v, f, K, M, w, h, near):
    """Brute force: nearest ray-triangle hit (z >= near) of every pixel-centre ray, Cramer's rule."""
    P = v @ M[:3, :3].T + M[:3, 3]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    d = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(K).T  # d_z = 1
    T = P[f]  # [F, 3, 3]
    # b_i = det(P_j, P_k, d) / det-sum, z = w / (n . d)
    c = np.stack([np.cross(T[:, 1], T[:, 2]), np.cross(T[:, 2], T[:, 0]), np.cross(T[:, 0], T[:, 1])], 1)
    e = np.einsum("fic,pc->pfi", c, d)
    nd = e.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = e / nd[..., None]
        z = np.einsum("fc,fc->f", c.sum(1), T[:, 0])[None] / nd
    ok = (b >= 0).all(-1) & (z >= near) & np.isfinite(z)
    zz = np.where(ok, z, np.inf)
    tid = np.argmin(zz, 1)
    hit = np.isfinite(zz[np.arange(len(d)), tid])
    tid = np.where(hit, tid, -1)
    depth = np.where(hit, zz[np.arange(len(d)), tid], 0.0)
    bb = np.where(hit[:, None], b[np.arange(len(d)), np.maximum(tid, 0)], 0.0)
    return tid.reshape(h, w), depth.reshape(h, w), bb.reshape(h, w, 3)


def test_matches_brute_force_oracle_with_near_plane_crossings():
    rng = np.random.default_rng(1)
    # random triangles in front of a camera at the origin, some crossing the near plane z = 0.5
    cen = rng.uniform([-1, -1, 0.3], [1, 1, 3], (40, 1, 3))
    v = (cen + rng.normal(0, 0.4, (40, 3, 3))).reshape(-1, 3)
    f = np.arange(len(v)).reshape(-1, 3)
    K, M = C.make_K(40, 44, 31.7, 30.2), np.eye(4)
    near = 0.5
    assert ((v[f][..., 2] < near).any(1) & (v[f][..., 2] >= near).any(1)).sum() >= 3
    fr = render_mesh(v, f, K, M, 64, 60, near=near)
    tid, depth, bary = _oracle(v, f, K, M, 64, 60, near)
    assert (fr.tri_id >= 0).sum() > 1000
    np.testing.assert_array_equal(fr.tri_id, tid)
    np.testing.assert_allclose(fr.depth, depth, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fr.bary, bary, atol=1e-5)
    assert (fr.depth[fr.mask] >= near * (1 - 1e-6)).all() and (fr.depth[~fr.mask] == 0).all()


def test_numba_matches_embree():
    pytest.importorskip("trimesh")
    pytest.importorskip("embreex")
    v, f = _sphere(3)
    v = v * [1.0, 0.7, 1.2] + [0.1, 0.0, -0.2]
    K, M = _cam([0.4, -2.8, 1.0], size=96)
    a = render_mesh(v, f, K, M, 96, 96)
    b = render_mesh(v, f, K, M, 96, 96, backend="embree")
    both = a.mask & b.mask
    assert both.sum() > 2000 and (a.mask != b.mask).sum() <= 3
    same = a.tri_id == b.tri_id
    assert same[both].mean() > 0.995
    np.testing.assert_allclose(a.depth[both], b.depth[both], rtol=1e-4)
    np.testing.assert_allclose(a.bary[both & same], b.bary[both & same], atol=1e-4)
    np.testing.assert_allclose(a.normals[both & same], b.normals[both & same], atol=1e-5)
    assert np.abs(a.alpha - b.alpha).mean() < 2e-3


def _vertex_checks(v, f, cam, idx):
    """Per vertex in idx: inside the mask at its pixel in the full render, within 1 px of the mask, and
    the relative depth error at the vertex: a 1x1 render whose pixel centre is the projected vertex
    moved by 1e-4 px (exactly on a vertex, rounding may leave the point to no triangle of the fan; the
    move changes the depth by ~1e-7); None where the point is not taken by one of the vertex's own
    triangles (on the silhouette or hidden)."""
    fr = render_mesh(v, f, cam.K, cam.viewmat, cam.width, cam.height)
    uv, z = cam.project(v)
    px = np.floor(uv[idx]).astype(int)
    pad = np.pad(fr.mask, 1)
    near_mask = np.array([pad[y : y + 3, x : x + 3].any() for x, y in px])
    ring = [set() for _ in range(len(v))]
    for t, tri in enumerate(f):
        for i in tri:
            ring[i].add(t)
    rel = []
    for i in idx:
        K = cam.K.copy()
        K[:2, 2] -= uv[i] - 0.5 + np.array([1e-4, 0.7e-4])
        c = render_mesh(v, f, K, cam.viewmat, 1, 1, antialias=False)
        own = c.tri_id[0, 0] in ring[i]
        rel.append(abs(c.depth[0, 0] - z[i]) / np.linalg.norm(v[i] - cam.center) if own else None)
    return fr.mask[px[:, 1], px[:, 0]], near_mask, rel


def test_vertices_land_in_mask_and_depth_matches():
    v, f = _sphere(3)
    eye = np.array([1.0, -3.5, 1.5])
    K, M = _cam(eye, size=256)
    facing = np.einsum("ij,ij->i", v, eye - v)  # unit sphere: the vertex normal is the position
    vis = np.nonzero(facing > 0)[0]
    inside, near_mask, rel = _vertex_checks(v, f, C.Camera(K, M, 256, 256), vis)
    # a vertex on the silhouette may sit just outside its pixel's centre coverage: within 1 px then
    assert near_mask.all() and inside.mean() >= 0.9
    checked = np.array([r for r in rel if r is not None])
    assert len(checked) > 0.9 * len(vis) and checked.max() < 1e-4  # 10x below the 1e-3 asked


def test_normals_unit_and_facing_and_world():
    v, f = _sphere(3)
    f = np.concatenate([f, f[:50, ::-1]])  # some inward-wound duplicates: still oriented to the camera
    K, M = _cam([0.3, -2.5, 0.8], size=64)
    fr = render_mesh(v, f, K, M, 64, 64)
    n = fr.normals[fr.mask]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    pts = fr.points_camera()[fr.mask]
    assert (np.einsum("ij,ij->i", n, pts) < 0).all()
    nw = fr.normals_world()[fr.mask]
    np.testing.assert_allclose(nw, n @ M[:3, :3], atol=1e-6)
    # on a unit sphere the world normal is close to the world hit position
    pw = (pts - M[:3, 3]) @ M[:3, :3]
    assert (np.einsum("ij,ij->i", nw, pw / np.linalg.norm(pw, axis=1, keepdims=True)) > 0.98).all()


def _grid(n, lo, hi, jitter, rng):
    g = np.linspace(lo, hi, n + 1)
    X, Y = np.meshgrid(g, g)
    inner = (slice(1, -1), slice(1, -1))
    X[inner] += rng.uniform(-jitter, jitter, X[inner].shape)
    Y[inner] += rng.uniform(-jitter, jitter, Y[inner].shape)
    v = np.stack([X.ravel(), Y.ravel(), np.full(X.size, 2.0)], 1)
    i = np.arange(n * n).reshape(n, n) + np.arange(n)[:, None]
    a, b, c, d = i, i + 1, i + n + 1, i + n + 2
    f = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return v, f


def test_fill_rule_no_cracks_no_double_coverage():
    # a flat grid whose vertices sit exactly on pixel centres, so many edges pass through pixel centres
    rng = np.random.default_rng(0)
    K = C.make_K(8.0, 8.0, 16.0, 16.0)  # x_pix = 8 * X / 2 + 16 at z = 2
    v, f = _grid(6, -3.0, 3.0, 0.0, rng)
    v[:, :2] = np.round(v[:, :2] * 4) / 4 + 0.125  # pixel centres land on k/4 + 0.125 -> (x+0.5) px
    for vv in (v, _grid(6, -3.0, 3.0, 0.3, rng)[0]):
        count = np.zeros((32, 32), int)
        for i in range(len(f)):
            count += render_mesh(vv, f[i : i + 1], K, np.eye(4), 32, 32, antialias=False).mask
        full = render_mesh(vv, f, K, np.eye(4), 32, 32)
        inner = slice(6, 26)
        assert (count[inner, inner] == 1).all()  # every centre inside the grid: exactly one triangle
        assert full.mask[inner, inner].all() and (full.alpha[inner, inner] == 1).all()
        flipped = render_mesh(vv, f[:, ::-1], K, np.eye(4), 32, 32)  # the other orientation too
        assert flipped.mask[inner, inner].all()


def test_half_plane_alpha_matches_covered_fraction():
    # a big square whose right edge is a slanted line across the image
    K, w = C.make_K(100.0, 100.0, 32.0, 32.0), 64
    x0, slope = 0.137, 0.31  # edge: X = x0 + slope * Y at z = 1
    v = np.array([[-5, -1, 1], [x0 - slope, -1, 1], [x0 + slope, 1, 1], [-5, 1, 1]], float)
    v[:, :2] *= 1.0
    f = np.array([[0, 1, 2], [0, 2, 3]])
    fr = render_mesh(v, f, K, np.eye(4), w, w, aa_samples=4)
    # analytic: per pixel, the fraction of the square with u < u_edge(v) (fine numerical integration)
    s = (np.arange(64) + 0.5) / 64
    ys, xs = np.mgrid[0:w, 0:w]
    vv = ys[..., None] + s  # [H, W, 64] sub-rows
    u_edge = 100 * (x0 + slope * (vv - 32) / 100) + 32
    frac = np.clip(u_edge - xs[..., None], 0, 1).mean(-1)
    edge = (frac > 0) & (frac < 1)
    assert edge.sum() > 50
    err = np.abs(fr.alpha - frac)
    assert err[edge].max() <= 0.25 + 1e-6 and err[edge].mean() < 0.06
    assert (err[~edge] == 0).all()
    assert abs(fr.alpha.sum() - frac.sum()) < 0.01 * frac.sum()
    np.testing.assert_array_equal(render_mesh(v, f, K, np.eye(4), w, w, antialias=False).alpha, fr.mask)


def test_cube_silhouette_area_and_culling():
    v, f = _box()
    R = Rotation.random(random_state=3).as_matrix()
    v = v @ R.T
    eye = np.array([0.5, -5.0, 1.0])
    K, M = _cam(eye, size=128, fov=40)
    fr = render_mesh(v, f, K, M, 128, 128, aa_samples=8)
    # exact projected area of a convex mesh: the sum of its front faces' projected triangle areas
    uv, _ = C.Camera(K, M, 128, 128).project(v)
    T = uv[f]
    cross = (T[:, 1, 0] - T[:, 0, 0]) * (T[:, 2, 1] - T[:, 0, 1]) - (T[:, 1, 1] - T[:, 0, 1]) * (
        T[:, 2, 0] - T[:, 0, 0]
    )
    area = 0.5 * np.abs(cross[cross < 0]).sum()  # front faces of an outward-wound mesh: cross < 0 (y down)
    assert area > 1500
    assert abs(fr.alpha.sum() - area) < 0.003 * area
    assert abs(fr.mask.sum() - area) < 0.03 * area
    culled = render_mesh(v, f, K, M, 128, 128, cull_backfaces=True)
    np.testing.assert_array_equal(culled.tri_id, fr.tri_id)
    assert set(np.unique(fr.tri_id[fr.mask])) <= set(np.nonzero(cross < 0)[0])
    inv = render_mesh(v, f[:, ::-1], K, M, 128, 128, cull_backfaces=True)  # inside-out: only the back
    assert inv.mask.sum() > 0.5 * fr.mask.sum() and (inv.depth[inv.mask] >= fr.depth[inv.mask]).all()


def test_interpolate_positions_is_perspective_correct():
    v, f = _sphere(2)
    K, M = _cam([0.2, -2.2, 0.9], size=48)
    fr = render_mesh(v, f, K, M, 48, 48)
    P = v @ M[:3, :3].T + M[:3, 3]
    got = interpolate(fr, P, f)
    np.testing.assert_allclose(got, fr.points_camera(), atol=2e-5)
    assert (got[~fr.mask] == 0).all()
    np.testing.assert_allclose(interpolate(fr, P[f]), got, atol=1e-6)  # per-corner form
    np.testing.assert_allclose(interpolate(fr, P[:, 2], f), fr.depth, rtol=1e-5)  # 1-D attribute
    torch = pytest.importorskip("torch")
    a = torch.tensor(P, requires_grad=True)
    out = interpolate(fr, a, f)
    np.testing.assert_allclose(out.detach().numpy(), got, atol=1e-6)
    out.sum().backward()
    assert a.grad.abs().sum() > 0
    np.testing.assert_allclose(interpolate(fr, torch.tensor(P[f])).numpy(), got, atol=1e-6)
    vn = vertex_normals(v, f)
    np.testing.assert_allclose(np.linalg.norm(vn, axis=1), 1, atol=1e-9)
    assert (np.einsum("ij,ij->i", vn, v) > 0.99).all()


def test_render_cameras_and_torch_input():
    torch = pytest.importorskip("torch")
    v, f = _sphere(1)
    cams = C.ring(3, radius=3.0, size=32)
    frames = render_cameras(torch.tensor(v), torch.tensor(f), cams, antialias=False)
    assert len(frames) == 3
    for fr, c in zip(frames, cams):
        ref = render_mesh(v, f, c.K, c.viewmat, 32, 32, antialias=False)
        np.testing.assert_array_equal(fr.tri_id, ref.tri_id)
        assert fr.mask.sum() > 50
    empty = render_mesh(np.zeros((0, 3)), np.zeros((0, 3), int), cams.K[0], cams.viewmat[0], 16, 8)
    assert empty.tri_id.shape == (8, 16) and not empty.mask.any() and (empty.alpha == 0).all()


@pytest.mark.parametrize(
    "bad",
    [
        dict(vertices=np.array([[0, 0, np.nan], [1, 0, 1], [0, 1, 1]])),
        dict(faces=np.array([[0, 1, 3]])),
        dict(faces=np.array([[0, 1, -1]])),
        dict(faces=np.array([[0.0, 1.0, 2.0]])),
        dict(vertices=np.zeros((3, 2))),
        dict(faces=np.array([0, 1, 2])),
        dict(K=np.eye(4)),
        dict(viewmat=np.full((4, 4), np.inf)),
        dict(width=0),
        dict(near=0.0),
        dict(backend="opengl"),
    ],
)
def test_bad_input_is_one_clear_error(bad):
    args = dict(
        vertices=np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1]], float),
        faces=np.array([[0, 1, 2]]),
        K=C.make_K(10, 10, 8, 8),
        viewmat=np.eye(4),
        width=16,
        height=16,
    )
    args.update(bad)
    kw = {k: args.pop(k) for k in ("near", "backend") if k in args}
    with pytest.raises(InputError, match="render_mesh"):
        render_mesh(*args.values(), **kw)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["ict_facekit.npz", "mammal_mouse.npz"])
def test_real_meshes_numba_matches_embree(shared_data, name):
    pytest.importorskip("embreex")
    path = shared_data / "meshes" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    d = np.load(path)
    v = np.asarray(d["neutral"] if "neutral" in d else d["vertices"], float)
    v = (v - 0.5 * (v.min(0) + v.max(0))) / np.abs(v).max()
    up = (0.0, 1.0, 0.0) if "neutral" in d else (0.0, 0.0, 1.0)
    for cam in C.ring(3, radius=2.7, elevation_deg=20.0, size=256, up=up):
        a = render_mesh(v, d["faces"], cam.K, cam.viewmat, 256, 256)
        b = render_mesh(v, d["faces"], cam.K, cam.viewmat, 256, 256, backend="embree")
        both = a.mask & b.mask
        assert both.sum() > 500 and (a.mask != b.mask).sum() <= 0.001 * both.sum() + 2
        assert (a.tri_id == b.tri_id)[both].mean() > 0.999
        np.testing.assert_allclose(a.depth[both], b.depth[both], rtol=1e-4)
        assert np.abs(a.alpha - b.alpha).mean() < 1e-3
    # visible vertices (embree: nothing nearer along the ray) land in the mask; depth at the vertex
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("embreex")
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    rmi = RayMeshIntersector(trimesh.Trimesh(v, d["faces"], process=False))
    o = np.broadcast_to(cam.center, v.shape)
    dist = np.linalg.norm(v - o, axis=1)
    loc, ray, _ = rmi.intersects_location(o, (v - o) / dist[:, None], multiple_hits=False)
    hit = np.full(len(v), np.inf)
    hit[ray] = np.linalg.norm(loc - o[ray], axis=1)
    used = np.zeros(len(v), bool)
    used[d["faces"].ravel()] = True
    vis = np.nonzero(used & (hit >= dist - 1e-4 * dist))[0]
    sel = np.random.default_rng(0).choice(vis, 200, replace=False)
    inside, near_mask, rel = _vertex_checks(v, d["faces"], cam, sel)
    assert near_mask.mean() >= 0.995 and inside.mean() >= 0.8
    checked = np.array([r for r in rel if r is not None])
    assert len(checked) > 0.8 * len(sel) and checked.max() < 1e-4


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (37, 29)])
def test_border_pixels_and_tiny_images(size):
    # triangles starting inside the last column/row must still be drawn there
    w, h = size
    K = C.make_K(10.0, 10.0, w / 2, h / 2)
    rng = np.random.default_rng(w)
    v, f = _grid(8, -4.0, 4.0, 0.2, rng)
    v[:, :2] *= (np.array([w, h]) / 10.0 + 0.06) / 4  # at z = 2: 0.3 px past each image border
    fr = render_mesh(v, f, K, np.eye(4), w, h)
    assert fr.mask.all() and (fr.alpha == 1).all()
    tid, _, _ = _oracle(v, f, K, np.eye(4), w, h, 1e-3)
    np.testing.assert_array_equal(fr.tri_id, tid)


@pytest.mark.parametrize("cull", [False, True])
def test_render_mask_is_render_mesh_mask_and_tiny_triangles_are_exact(cull):
    """The mask-only fast path covers exactly ``render_mesh``'s pixels; a dense mesh seen small (most
    triangles hold no pixel centre, the rasteriser skips them by their centre box) matches the oracle."""
    v, f = _sphere(4)  # 5120 triangles, mostly sub-pixel at 48^2
    K, M = _cam([0.3, -3.5, 0.8], size=48)
    fr = render_mesh(v, f, K, M, 48, 48, cull_backfaces=cull)
    mask = render_mask(v, f, K, M, 48, 48, cull_backfaces=cull)
    assert mask.dtype == np.bool_ and 200 < mask.sum() < 48 * 48
    np.testing.assert_array_equal(mask, fr.mask)
    tid, _, _ = _oracle(v, f, K, M, 48, 48, 1e-3)
    np.testing.assert_array_equal(fr.mask, tid >= 0)
    if not cull:
        np.testing.assert_array_equal(fr.tri_id, tid)
