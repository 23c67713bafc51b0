"""Backend parity, shared by the fast suite (cpu vs the torch oracle, here) and the GPU suite (gsplat vs
cpu vs torch on CUDA, tests/test_render_gpu.py).

Every case mixes visible Gaussians with culled ones (behind the camera, off-screen, below 1/255
opacity). Images and alphas are compared as images; depths and conics on the Gaussians both backends
see (culled ones must be described alike: radii 0, visible False, depth 0, conic 0); every gradient
(means, quats, scales, opacities, SH colours, means2d) at cosine >= 0.99.
"""

import math

import pytest
import torch

from gausslift.render import rasterize

# name: (sh_degree, cameras, width, height, principal point offset from the centre in pixels)
CASES = {
    "sh0_one_cam_square": (0, 1, 64, 64, (0.0, 0.0)),
    "sh1_two_cams_wide": (1, 2, 80, 48, (5.0, -3.0)),
    "sh2_three_cams_tall": (2, 3, 48, 80, (-9.0, 6.0)),
    "sh3_two_cams_offcentre": (3, 2, 96, 64, (13.0, -7.5)),
}
GRADS = ("means", "quats", "scales", "opacities", "colors", "means2d")


def make_scene(sh_degree, C, W, H, offset, N=240, max_opacity=0.9, seed=0):
    """Inputs of `rasterize` (CPU tensors): a cloud in front of C cameras on an arc, plus culled ones."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(N, 3, generator=g) * 2 - 1) * 0.5
    means[:8, 2] = -5.0  # behind every camera (they sit at z = -2.7 .. looking at the origin)
    means[8:16, 0] = 40.0  # far off-screen
    quats = torch.randn(N, 4, generator=g)
    scales = 0.03 * torch.exp(torch.randn(N, 3, generator=g) * 0.3)
    opacities = 0.05 + torch.rand(N, generator=g) * (max_opacity - 0.05)
    opacities[16:24] = 0.002  # below 1/255: culled by every backend
    colors = torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g) * 0.3
    viewmats = torch.eye(4).repeat(C, 1, 1)
    for i in range(C):
        a = 0.35 * i
        viewmats[i, :3, :3] = torch.tensor(
            [[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]]
        )
        viewmats[i, :3, 3] = torch.tensor([0.0, 0.0, 2.7])
    f = 0.5 * W / math.tan(math.radians(25))
    K = [[f, 0, W / 2 + offset[0]], [0, f * 1.02, H / 2 + offset[1]], [0, 0, 1]]
    Ks = torch.tensor(K).repeat(C, 1, 1)
    return dict(tensors=[means, quats, scales, opacities, colors, viewmats, Ks], W=W, H=H, sh=sh_degree)


def run_backend(sc, backend, device="cpu"):
    """(renders, alphas, meta, grads) on the CPU, from a forward + backward on ``device``."""
    params = [t.to(device).clone().requires_grad_(True) for t in sc["tensors"][:5]]
    cams = [t.to(device) for t in sc["tensors"][5:]]
    bg = torch.full((cams[0].shape[0], 3), 0.25, device=device)
    renders, alphas, meta = rasterize(*params, *cams, sc["W"], sc["H"], sh_degree=sc["sh"], backgrounds=bg,
                                      backend=backend)  # fmt: skip
    meta["means2d"].retain_grad()
    g = torch.Generator(device="cpu").manual_seed(3)
    w = torch.randn(renders.shape, generator=g, device="cpu").to(renders.device)
    ((renders * w).sum() + 0.5 * alphas.sum()).backward()
    grads = {n: p.grad.detach().cpu() for n, p in zip(GRADS, params)}
    grads["means2d"] = meta["means2d"].grad.detach().cpu()
    meta = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in meta.items()}
    return renders.detach().cpu(), alphas.detach().cpu(), meta, grads


def cosine(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def assert_parity(x, y, image_tol=2e-3, visible_agree=0.99, min_cos=0.99):
    """x, y: results of `run_backend` for two backends on the same scene."""
    r1, a1, m1, g1 = x
    r2, a2, m2, g2 = y
    assert r1.shape == r2.shape and a1.shape == a2.shape
    assert (r1 - r2).abs().mean() <= image_tol, float((r1 - r2).abs().mean())
    assert (a1 - a2).abs().mean() <= image_tol, float((a1 - a2).abs().mean())
    for m in (m1, m2):  # culled Gaussians are described the same way by every backend
        hidden = ~m["visible"]
        assert hidden.any() and m["visible"].any()
        assert (m["radii"][hidden] == 0).all() and (m["depths"][hidden] == 0).all()
        assert (m["conics"][hidden] == 0).all() and m["radii"].shape == m["means2d"].shape
        assert torch.equal(m["visible"], (m["radii"] > 0).all(-1))
    both = m1["visible"] & m2["visible"]
    assert (m1["visible"] == m2["visible"]).float().mean() >= visible_agree
    torch.testing.assert_close(m1["depths"][both], m2["depths"][both], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m1["means2d"][both], m2["means2d"][both], rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(m1["conics"][both], m2["conics"][both], rtol=2e-3, atol=1e-5)
    for name in GRADS:
        assert g1[name].abs().sum() > 0, name
        assert cosine(g1[name], g2[name]) >= min_cos, (name, cosine(g1[name], g2[name]))


@pytest.mark.parametrize("case", list(CASES))
def test_cpu_matches_torch_oracle(case):
    sc = make_scene(*CASES[case])
    assert_parity(run_backend(sc, "cpu"), run_backend(sc, "torch"), image_tol=1e-4, visible_agree=1.0)


def test_parity_check_can_fail():
    """A shifted camera must break the comparison (the check is not vacuous)."""
    sc = make_scene(*CASES["sh1_two_cams_wide"])
    moved = dict(sc, tensors=list(sc["tensors"]))
    moved["tensors"][6] = moved["tensors"][6].clone()
    moved["tensors"][6][:, 0, 2] += 1.5
    with pytest.raises(AssertionError):
        assert_parity(run_backend(sc, "cpu"), run_backend(moved, "torch"), image_tol=1e-4)


def test_torch_oracle_creates_no_tensor_off_the_input_device():
    """Every tensor the oracle and the cpu glue create follows the inputs' device: with the default device
    set to 'meta', a stray ``torch.arange(n)`` would land on meta and fail against the CPU inputs."""
    sc = make_scene(*CASES["sh3_two_cams_offcentre"], N=120)
    ref = run_backend(sc, "torch")
    for backend in ("torch", "cpu"):
        with torch.device("meta"):
            out = run_backend(sc, backend)
        assert out[0].device.type == "cpu"
        torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=0)
