"""Numba projection and SH kernels (forward and analytic backward) against the PyTorch oracle."""

import math

import numpy as np
import pytest
import torch

from gausslift import cameras
from gausslift.render import _torch_project as TP
from gausslift.render import project as P
from gausslift.render import sh as SH
from gausslift.render.autograd import Project, ShColors


def look_at(eye, target=(0.0, 0.0, 0.0)):
    """OpenCV world-to-camera matrix looking from eye at target, image-up along world -y."""
    return cameras.look_at(np.asarray(eye, float), target, up=(0.0, -1.0, 0.0))


def random_scene(rng, N, C=2, W=96, H=64):
    means = rng.normal(size=(N, 3)) * 0.6
    quats = rng.normal(size=(N, 4))
    scales = np.exp(rng.normal(size=(N, 3)) * 0.5 - 3.0)
    eyes = [(0.3, 0.2, -2.7), (2.2, -0.5, -1.2), (-1.0, 1.5, 2.0)]
    viewmats = np.stack([look_at(eyes[i % 3]) for i in range(C)])
    Ks = np.stack(
        [[[80.0 + 7 * i, 0, W / 2 + 9 * i], [0, 75.0 - 5 * i, H / 2 - 6 * i], [0, 0, 1]] for i in range(C)]
    )
    return [np.ascontiguousarray(a, dtype=np.float32) for a in (means, quats, scales, viewmats, Ks)] + [W, H]


def edge_scene(W=80, H=60):
    """Hand-placed Gaussians in the camera frame of a camera at the world origin looking along +z."""
    f = 70.0
    pts = [
        ((0.0, 0.0, -1.0), 0.05),  # behind the camera
        ((0.0, 0.0, 0.005), 0.5),  # centre in front of the camera but before the near plane
        ((0.01, 0.0, 0.05), 0.3),  # just past the near plane, huge on screen
        ((0.1, 0.1, 2.0), 5.0),  # huge
        ((-0.2, 0.1, 2.0), 1e-5),  # tiny (eps2d dominates)
        ((6.0, 0.0, 2.0), 0.01),  # far off-screen, small
        ((1.6, 0.2, 2.0), 0.4),  # centre off-screen (clamped Jacobian), footprint reaches the image
        ((0.0, -1.4, 2.0), 0.3),  # off the top, clamped in y
        ((0.2, 0.0, 20.0), 0.2),  # beyond far_plane=10 below
        ((0.0, 0.0, 3.0), 0.05),  # plain
    ]
    means = np.array([p for p, _ in pts], np.float32)
    scales = np.array([[s, 0.7 * s, 1.3 * s] for _, s in pts], np.float32)
    quats = np.random.default_rng(3).normal(size=(len(pts), 4)).astype(np.float32)
    viewmats = np.eye(4, dtype=np.float32)[None].copy()
    Ks = np.array([[[f, 0, 0.4 * W], [0, f * 1.1, 0.6 * H], [0, 0, 1]]], np.float32)
    return [means, quats, scales, viewmats, Ks, W, H]


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / (na * nb))


def oracle_project(scene, far=1e10, dtype=torch.float64, grad=False):
    means, quats, scales, viewmats, Ks, W, H = scene
    ts = [torch.tensor(a, dtype=dtype, requires_grad=grad) for a in (means, quats, scales, viewmats)]
    out = TP.project_torch(*ts, torch.tensor(Ks, dtype=dtype), W, H, 0.3, 0.01, far)
    return ts, out


SCENES = {
    "random": lambda: random_scene(np.random.default_rng(0), 500, C=3),
    "one_camera_non_square": lambda: random_scene(np.random.default_rng(1), 300, C=1, W=50, H=120),
    "edge_cases": edge_scene,
    "single": lambda: random_scene(np.random.default_rng(2), 1, C=2),
}


@pytest.mark.parametrize("name", sorted(SCENES))
def test_projection_forward_matches_oracle(name):
    scene = SCENES[name]()
    far = 10.0 if name == "edge_cases" else 1e10
    means2d, conics, depths, radii = P.project_fwd(*scene, far_plane=far)
    _, (m_ref, c_ref, d_ref, r_ref) = oracle_project(scene, far=far, dtype=torch.float32)
    vis = (radii > 0).all(-1)
    vis_ref = (r_ref > 0).all(-1).numpy()
    assert vis.any()
    assert np.array_equal(vis, vis_ref)
    assert np.abs(radii - r_ref.numpy()).max() <= 1  # ceil() may flip where 3 sigma is an integer
    assert (radii != r_ref.numpy()).mean() < 0.01
    np.testing.assert_allclose(depths, d_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(means2d[vis], m_ref.numpy()[vis], rtol=1e-5, atol=2e-3)
    np.testing.assert_allclose(conics[vis], c_ref.numpy()[vis], rtol=2e-3, atol=1e-6)


def test_edge_case_culling():
    scene = edge_scene()
    _, _, depths, radii = P.project_fwd(*scene, far_plane=10.0)
    vis = (radii[0] > 0).all(-1)
    # behind, before near, far off-screen, beyond far are culled; the others are kept
    assert vis.tolist() == [False, False, True, True, True, False, True, True, False, True]
    assert radii[0, 4].tolist() == [2, 2]  # tiny: sqrt(0.3) * 3 -> 2 px
    assert depths[0, 0] == pytest.approx(-1.0)


def test_projection_empty():
    scene = random_scene(np.random.default_rng(0), 0, C=2)
    means2d, conics, depths, radii = P.project_fwd(*scene)
    assert means2d.shape == (2, 0, 2) and radii.shape == (2, 0, 2)
    grads = P.project_bwd(*scene, 0.3, radii, means2d, conics, depths)
    assert grads[0].shape == (0, 3) and np.all(grads[3] == 0)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_projection_backward_matches_oracle(name):
    scene = SCENES[name]()
    far = 10.0 if name == "edge_cases" else 1e10
    means2d, conics, depths, radii = P.project_fwd(*scene, far_plane=far)
    vis = (radii > 0).all(-1)
    rng = np.random.default_rng(7)
    g_m = (rng.normal(size=means2d.shape) * vis[..., None]).astype(np.float32)
    g_c = (rng.normal(size=conics.shape) * vis[..., None] * 30).astype(np.float32)
    g_d = (rng.normal(size=depths.shape) * vis).astype(np.float32)
    got = P.project_bwd(*scene, 0.3, radii, g_m, g_c, g_d)

    ts, (m_ref, c_ref, d_ref, _) = oracle_project(scene, far=far, grad=True)
    loss = (
        (m_ref * torch.tensor(g_m)).sum()
        + (c_ref * torch.tensor(g_c)).sum()
        + (d_ref * torch.tensor(g_d)).sum()
    )
    loss.backward()
    for name_g, g, t in zip(("means", "quats", "scales", "viewmats"), got, ts):
        ref = t.grad.numpy()
        assert cosine(g, ref) >= 0.9999, name_g
        scale = np.abs(ref).max() + 1e-12
        assert np.abs(g - ref).max() <= 2e-3 * scale, name_g
    assert np.all(got[0][~vis.any(0)] == 0)  # culled everywhere -> no gradient


def test_project_function_viewmat_grad_optional():
    scene = random_scene(np.random.default_rng(4), 50, C=2)
    ts = [torch.tensor(a, requires_grad=i < 3) for i, a in enumerate(scene[:5])]
    m2d, con, dep, radii = Project.apply(*ts, scene[5], scene[6], 0.3, 0.01, 1e10)
    assert radii.dtype == torch.int32 and not radii.requires_grad
    (m2d.sum() + dep.sum()).backward()
    assert ts[3].grad is None and ts[0].grad is not None and ts[0].grad.abs().sum() > 0


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("per_camera", [False, True])
def test_sh_matches_oracle(degree, per_camera):
    rng = np.random.default_rng(degree)
    scene = random_scene(rng, 400, C=2)
    means, viewmats = scene[0], scene[3]
    _, _, _, radii = P.project_fwd(*scene)
    K = (degree + 1) ** 2 + 3  # more coefficients than the degree uses: the extras are ignored
    shape = (2, 400, K, 3) if per_camera else (400, K, 3)
    coeffs = (rng.normal(size=shape) * 0.4).astype(np.float32)
    coeffs[..., :5, 0, :] -= 1.5  # some colours clamp at 0
    campos = np.linalg.inv(viewmats.astype(np.float64))[:, :3, 3].astype(np.float32)

    ct = torch.tensor(coeffs, dtype=torch.float64, requires_grad=True)
    mt = torch.tensor(means, dtype=torch.float64, requires_grad=True)
    pt = torch.tensor(campos, dtype=torch.float64, requires_grad=True)
    ref = TP.sh_colors_torch(ct, degree, mt, pt, torch.tensor(radii))
    g = rng.normal(size=ref.shape)
    (ref * torch.tensor(g)).sum().backward()

    colors = SH.sh_fwd(coeffs, degree, means, campos, radii)
    np.testing.assert_allclose(colors, ref.detach().numpy(), atol=2e-6)
    assert (colors == 0).any() and (colors > 0).any()
    ct2, mt2, pt2 = (torch.tensor(a, requires_grad=True) for a in (coeffs, means, campos))
    out = ShColors.apply(ct2, mt2, pt2, torch.from_numpy(radii), degree)
    (out * torch.tensor(g, dtype=torch.float32)).sum().backward()
    assert cosine(ct2.grad, ct.grad) >= 0.9999
    if degree > 0:
        assert cosine(mt2.grad, mt.grad) >= 0.999
        assert cosine(pt2.grad, pt.grad) >= 0.999
    else:
        assert mt2.grad.abs().max() == 0  # degree 0 does not depend on the view direction
    nb = (degree + 1) ** 2
    assert ct2.grad[..., nb:, :].abs().max() == 0


@pytest.mark.parametrize("u_true, clamped", [(0.6, False), (2.0, True)])
def test_jacobian_clamp_closed_form(u_true, clamped):
    """Isotropic Gaussian at (u z, 0, z): cov2d = s^2 J J^T + 0.3 I with x/z clamped to 1.3 tan(half fov)."""
    W, H, fx, fy, z, s = 100, 80, 50.0, 40.0, 2.0, 0.5
    scene = [
        np.array([[u_true * z, 0.0, z]], np.float32),
        np.array([[1.0, 0.0, 0.0, 0.0]], np.float32),
        np.full((1, 3), s, np.float32),
        np.eye(4, dtype=np.float32)[None].copy(),
        np.array([[[fx, 0, W / 2], [0, fy, H / 2], [0, 0, 1]]], np.float32),
        W,
        H,
    ]
    means2d, conics, _, radii = P.project_fwd(*scene)
    u = min(u_true, 1.3 * 0.5 * W / fx)  # centred principal point: limit = 1.3 tan(half fov)
    assert (u < u_true) == clamped
    a = s * s * fx * fx / (z * z) * (1 + u * u) + 0.3
    c = s * s * fy * fy / (z * z) + 0.3
    np.testing.assert_allclose(conics[0, 0], [1 / a, 0.0, 1 / c], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(means2d[0, 0], [fx * u_true + W / 2, H / 2], rtol=1e-6)
    assert radii[0, 0].tolist() == [math.ceil(3 * math.sqrt(a)), math.ceil(3 * math.sqrt(c))]
    _, (_, c_ref, _, _) = oracle_project(scene, dtype=torch.float64)
    np.testing.assert_allclose(conics[0, 0], c_ref[0, 0].numpy(), rtol=1e-5, atol=1e-9)
