"""Triangle binding: round trips, following the mesh, gradients, splits, regularisers."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gausslift import binding as B

D = torch.float64


def tiny_mesh(rng, n=12):
    """A bumpy open grid: (n*n) vertices, 2(n-1)^2 triangles of various shapes."""
    g = np.stack(np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij"), -1).reshape(-1, 2)
    z = 0.2 * np.sin(3 * g[:, :1]) * np.cos(2 * g[:, 1:]) + rng.normal(0, 0.01, (n * n, 1))
    v = np.concatenate([g + rng.normal(0, 0.01, g.shape), z], 1)
    f = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            f += [[a, b, c], [b, d, c]]
    return torch.as_tensor(v, dtype=D), torch.as_tensor(np.array(f), dtype=torch.long)


def random_local(rng, n):
    return {"means": torch.as_tensor(rng.normal(0, 0.5, (n, 3)), dtype=D),
            "quats": torch.as_tensor(rng.normal(0, 1, (n, 4)), dtype=D),
            "scales": torch.as_tensor(rng.normal(-1, 0.3, (n, 3)), dtype=D)}


def same_rotation(q1, q2):
    return torch.minimum((q1 - q2).abs().amax(-1), (q1 + q2).abs().amax(-1))


def test_face_frames_are_orthonormal_right_handed_and_gaussianavatars_like(rng):
    v, f = tiny_mesh(rng)
    c, R, k = B.face_frames(v, f)
    eye = torch.eye(3, dtype=D)
    assert (R.transpose(-1, -2) @ R - eye).abs().max() < 1e-12
    assert (torch.linalg.det(R) - 1).abs().max() < 1e-12
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    assert (R[..., 1] - n / n.norm(dim=-1, keepdim=True)).abs().max() < 1e-12  # column 1 = normal
    assert (R[..., 0] - (v1 - v0) / (v1 - v0).norm(dim=-1, keepdim=True)).abs().max() < 1e-12
    height = n.norm(dim=-1) / (v1 - v0).norm(dim=-1)
    assert torch.allclose(k, ((v1 - v0).norm(dim=-1) + height) / 2)
    assert torch.allclose(c, (v0 + v1 + v2) / 3)


def test_rotmat_to_quat_matches_scipy_everywhere(rng):
    rots = Rotation.random(500, random_state=1)
    extra = Rotation.from_rotvec(np.array([[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi], [0, 0, 0],
                                           [np.pi - 1e-7, 0, 0]]))
    R = np.concatenate([rots.as_matrix(), extra.as_matrix()])
    q = B.rotmat_to_quat(torch.as_tensor(R)).numpy()
    ref = Rotation.from_matrix(R).as_quat()[:, [3, 0, 1, 2]]
    assert same_rotation(torch.as_tensor(q), torch.as_tensor(ref)).max() < 1e-7
    assert np.allclose(B.quat_to_rotmat(torch.as_tensor(q)).numpy(), R, atol=1e-7)


def test_local_world_local_round_trip(rng):
    v, f = tiny_mesh(rng)
    frames = B.face_frames(v, f)
    binding = torch.as_tensor(rng.integers(0, len(f), 300))
    loc = random_local(rng, 300)
    means, quats, scales = B.local_to_world(loc, binding, frames)
    back = B.world_to_local(means, quats, scales, binding, frames)
    assert (back["means"] - loc["means"]).abs().max() < 1e-6
    assert (back["scales"] - loc["scales"]).abs().max() < 1e-6
    q0 = torch.nn.functional.normalize(loc["quats"], dim=-1)
    assert same_rotation(back["quats"], q0).max() < 1e-6
    # and world -> local -> world
    w2 = B.local_to_world(back, binding, frames)
    assert (w2[0] - means).abs().max() < 1e-6 and (w2[2] - scales).abs().max() < 1e-6
    assert same_rotation(w2[1], quats).max() < 1e-6


def world_cov(means, quats, scales):
    R = B.quat_to_rotmat(quats)
    return R @ torch.diag_embed(scales**2) @ R.transpose(-1, -2)


@pytest.mark.parametrize("motion", ["rigid", "scaling", "nonrigid"])
def test_gaussians_follow_their_triangle(rng, motion):
    v, f = tiny_mesh(rng)
    binding = torch.as_tensor(rng.integers(0, len(f), 200))
    loc = random_local(rng, 200)
    # barycentric-plus-normal coordinates of each mean on the rest mesh: the 'material point'
    m0, q0, s0 = B.local_to_world(loc, binding, B.face_frames(v, f))
    tri = v[f[binding]]  # [N,3,3]
    if motion == "rigid":
        R = torch.as_tensor(Rotation.from_rotvec([0.4, -1.1, 0.7]).as_matrix())
        v2 = v @ R.T + torch.tensor([0.3, -2.0, 5.0], dtype=D)
        m_ref = m0 @ R.T + torch.tensor([0.3, -2.0, 5.0], dtype=D)
        cov_ref = R @ world_cov(m0, q0, s0) @ R.T
    elif motion == "scaling":
        v2 = 3.7 * v + 1.0
        m_ref = 3.7 * m0 + 1.0
        cov_ref = 3.7**2 * world_cov(m0, q0, s0)
    else:  # each triangle moves by its own similarity: check against that triangle's transform
        v2 = v + 0.15 * torch.as_tensor(rng.normal(0, 1, v.shape), dtype=D)
        m_ref = cov_ref = None
    m2, q2, s2 = B.local_to_world(loc, binding, B.face_frames(v2, f))
    if m_ref is not None:
        assert (m2 - m_ref).abs().max() < 1e-9
        assert (world_cov(m2, q2, s2) - cov_ref).abs().max() < 1e-9
    else:
        # the mean keeps its coordinates in the triangle's (edge, normal, k) frame: recompute them
        # from the deformed vertices with plain numpy-free formulas
        t2 = v2[f[binding]]
        e1, e2 = t2[:, 1] - t2[:, 0], t2[:, 2] - t2[:, 0]
        a0 = e1 / e1.norm(dim=-1, keepdim=True)
        a1 = torch.cross(e1, e2, dim=-1)
        a1 = a1 / a1.norm(dim=-1, keepdim=True)
        a2 = torch.cross(a0, a1, dim=-1)
        k = (e1.norm(dim=-1) + (a2 * e2).sum(-1).abs()) / 2
        rel = (m2 - t2.mean(1)) / k[:, None]
        coords = torch.stack([(rel * a).sum(-1) for a in (a0, a1, a2)], -1)
        assert (coords - loc["means"]).abs().max() < 1e-9
        assert (s2 / k[:, None] - loc["scales"].exp()).abs().max() < 1e-9
    assert tri.shape == (200, 3, 3)


def test_gradients_match_finite_differences(rng):
    v, f = tiny_mesh(rng, n=4)
    binding = torch.as_tensor([0, 3, 3, 7, 11, 17])
    loc = random_local(rng, 6)

    def fn(verts, means, quats, scales):
        m, q, s = B.local_to_world({"means": means, "quats": quats, "scales": scales}, binding,
                                   B.face_frames(verts, f))
        return m, q, s

    names = ("means", "quats", "scales")
    args = [v.clone().requires_grad_(), *(loc[k].clone().requires_grad_() for k in names)]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


def test_gradients_reach_subject_parameters():
    """Through a tiny ICT-like linear model: d(world means)/d(expression) by finite differences."""
    rng = np.random.default_rng(3)
    v, f = tiny_mesh(rng, n=4)
    basis = torch.as_tensor(rng.normal(0, 0.05, (2, *v.shape)), dtype=D)
    loc = random_local(rng, 5)
    binding = torch.as_tensor([0, 2, 5, 9, 13])

    def fn(expr):
        verts = v + torch.einsum("e,evk->vk", expr, basis)
        return B.local_to_world(loc, binding, B.face_frames(verts, f))[0]

    assert torch.autograd.gradcheck(fn, (torch.tensor([0.3, -0.2], dtype=D, requires_grad=True),))


def mahalanobis(children, parent_mean, parent_quat, parent_scale):
    R = B.quat_to_rotmat(parent_quat)
    d = (children - parent_mean) @ R  # in the parent's principal axes
    return (d / parent_scale).norm(dim=-1)


@pytest.mark.parametrize("k", [0.01, 1.0, 30.0])
def test_split_children_stay_inside_parent_footprint(k):
    """Children of a split lie at Mahalanobis distance |n| from the parent in its world ellipsoid,
    whatever the triangle's size; GaussianAvatars' mixed-frame offsets scale that distance by k."""
    g = torch.Generator().manual_seed(0)
    tri = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.2, 0.9, 0.1]], dtype=D) * k
    faces = torch.tensor([[0, 1, 2]])
    frames = B.face_frames(tri, faces)
    loc = {"means": torch.tensor([[0.1, 0.05, -0.2]], dtype=D),
           "quats": torch.tensor([[0.9, 0.1, -0.3, 0.2]], dtype=D),
           "scales": torch.log(torch.tensor([[0.4, 0.1, 0.2]], dtype=D))}
    binding = torch.zeros(1, dtype=torch.long)
    pm, pq, ps = B.local_to_world(loc, binding, frames)
    noise = torch.randn(64, 1, 3, generator=g, dtype=D)
    kids = B.split_local(loc, torch.tensor([0]), noise)
    cm, _, cs = B.local_to_world(kids, binding.repeat(64), frames)
    dist = mahalanobis(cm, pm, pq, ps)
    assert torch.allclose(dist, noise[:, 0].norm(dim=-1), atol=1e-9)  # exactly |n|
    assert (cs - ps / 1.6).abs().max() < 1e-12 * max(k, 1)
    # GaussianAvatars' version (world-unit offsets added to the local mean) fails the same check
    # unless the triangle's scale factor is 1: the children land k_face times too far (or too near)
    world_offs = (B.quat_to_rotmat(loc["quats"]) @ (ps[0] * noise[:, 0])[:, :, None])[..., 0]
    ga = {"means": loc["means"] + world_offs,
          "quats": kids["quats"], "scales": kids["scales"]}
    ga_dist = mahalanobis(B.local_to_world(ga, binding.repeat(64), frames)[0], pm, pq, ps)
    k_face = frames[2][0]
    assert torch.allclose(ga_dist, k_face * noise[:, 0].norm(dim=-1), rtol=1e-9)
    assert abs(float(k_face) / k - 0.95) < 0.01  # (|e1| + height) / 2 of the unit triangle


def test_regularisers_have_thresholds():
    m = torch.tensor([[0.5, 0, 0], [0, 2.0, 0]])
    assert torch.isclose(B.position_reg(m, 1.0), torch.tensor(0.5))  # (0 + 1) / 2
    s = torch.log(torch.tensor([[0.5, 0.5, 0.5], [1.6, 0.5, 0.5]]))
    assert torch.isclose(B.scale_reg(s, 0.6), torch.tensor(0.5))  # (0 + |1.0|) / 2
    assert B.position_reg(torch.zeros(4, 3)) == 0 and B.scale_reg(torch.log(torch.full((4, 3), 0.3))) == 0


@pytest.mark.parametrize("kind", ["ict", "flame", "mouse"])
def test_binding_on_every_subject_kind(tmp_path, kind):
    """Gaussians bound to a posed ICT / FLAME / mouse mesh keep their local coordinates in any pose,
    and region weights come from the subject's own region map."""
    from _subjects_fixtures import write_tiny_flame, write_tiny_ict, write_tiny_mouse

    from gausslift.avatar import model as M
    from gausslift.avatar.strategy import face_weights
    from gausslift.subjects import FlameHead, ICTHead, MammalMouse

    if kind == "ict":
        subj = ICTHead(write_tiny_ict(tmp_path))
    elif kind == "flame":
        subj = FlameHead(write_tiny_flame(tmp_path), n_shape=4, n_expression=3, shape_block=4)
    else:
        subj = MammalMouse(write_tiny_mouse(tmp_path))
    subj = subj.double()
    rng = np.random.default_rng(1)
    fidx = torch.as_tensor(M.bound_faces(subj))
    faces = subj.faces[fidx]
    binding = torch.as_tensor(rng.integers(0, len(faces), 50))
    loc = random_local(rng, 50)
    for _ in range(3):
        p = subj.sample_params(rng, 1)
        p = {k: v.double() for k, v in p.items()}
        verts = M.pose_vertices(subj, p, torch.eye(4, dtype=D)[None])[0]
        frames = B.face_frames(verts, faces)
        back = B.world_to_local(*B.local_to_world(loc, binding, frames), binding, frames)
        assert (back["means"] - loc["means"]).abs().max() < 1e-6
    regions = {k: np.asarray(m[fidx.numpy()], bool) for k, m in subj.face_regions().items()}
    w = face_weights(regions, 0.5)
    named = [r for r in ("eyes", "mouth", "nose") if r in regions] or ["head"]  # the mouse: its head
    important = np.any([regions[r] for r in named], axis=0)
    assert w.shape == (len(faces),) and np.array_equal(w, np.where(important, 1.5, 1.0))
    assert important.any() or kind == "flame"  # the tiny FLAME has no eye / mouth / nose triangles
