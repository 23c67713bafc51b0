"""gausslift.render.rasterize: cpu backend vs the torch oracle, analytic cases, meta, input errors."""

import math

import numpy as np
import pytest
import torch

from gausslift import cameras
from gausslift.errors import InputError
from gausslift.render import ALPHA_MAX, rasterize


def look_at(eye, target=(0.0, 0.0, 0.0)):
    """OpenCV world-to-camera matrix looking from eye at target, image-up along world -y."""
    return cameras.look_at(np.asarray(eye, float), target, up=(0.0, -1.0, 0.0))


def scene(seed=0, N=400, C=2, W=72, H=56, sh_degree=None):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * 0.5
    quats = torch.randn(N, 4, generator=g)
    scales = torch.exp(torch.randn(N, 3, generator=g) * 0.4 - 3.0)
    opacities = torch.rand(N, generator=g)
    opacities[:10] = 0.002  # transparent: culled
    if sh_degree is None:
        colors = torch.rand(N, 3, generator=g)
    else:
        colors = torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g) * 0.4
    eyes = [(0.2, 0.3, -2.7), (2.0, -0.4, -1.6), (-1.2, 1.0, 2.2)]
    viewmats = torch.tensor(np.stack([look_at(eyes[i % 3]) for i in range(C)]), dtype=torch.float32)
    Ks = torch.tensor(
        [[[70.0 + 5 * i, 0, W / 2 + 4 * i], [0, 66.0, H / 2 - 3 * i], [0, 0, 1]] for i in range(C)],
        dtype=torch.float32,
    )
    return [means, quats, scales, opacities, colors, viewmats, Ks, W, H]


def cosine(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def run(sc, backend, **kw):
    params = [t.clone().requires_grad_(True) for t in sc[:5]]
    renders, alphas, meta = rasterize(*params, *sc[5:], backend=backend, **kw)
    meta["means2d"].retain_grad()
    g = torch.Generator().manual_seed(11)
    w_r = torch.randn(renders.shape, generator=g)
    w_a = torch.randn(alphas.shape, generator=g)
    ((renders * w_r).sum() + (alphas * w_a).sum()).backward()
    grads = {n: p.grad for n, p in zip(("means", "quats", "scales", "opacities", "colors"), params)}
    grads["means2d"] = meta["means2d"].grad
    return renders.detach(), alphas.detach(), meta, grads


CASES = {
    "rgb": dict(),
    "sh3_rgbed_bg": dict(sh_degree=3, render_mode="RGB+ED", backgrounds=torch.tensor([[0.2, 0.5, 1.0]] * 2)),
    "sh1_rgbd_one_cam": dict(sh_degree=1, render_mode="RGB+D", C=1, W=40, H=90),
    "depth_three_cams": dict(render_mode="D", C=3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_matches_torch_oracle(case):
    kw = dict(CASES[case])
    sc = scene(C=kw.pop("C", 2), W=kw.pop("W", 72), H=kw.pop("H", 56), sh_degree=kw.get("sh_degree"))
    r_cpu, a_cpu, meta_cpu, g_cpu = run(sc, "cpu", **kw)
    r_ref, a_ref, meta_ref, g_ref = run(sc, "torch", **kw)
    assert r_cpu.shape == r_ref.shape and a_cpu.shape == a_ref.shape
    assert a_ref.max() > 0.5  # something was rendered
    assert (a_cpu - a_ref).abs().mean() <= 1e-3
    if kw.get("render_mode", "RGB").endswith("D"):
        # depth channels are in scene units (~2.7): compare relative to that
        assert (r_cpu - r_ref).abs().mean() <= 1e-3 * 3
    else:
        assert (r_cpu - r_ref).abs().mean() <= 1e-3
    assert torch.equal(meta_cpu["visible"], meta_ref["visible"])
    for name in ("means", "quats", "scales", "opacities", "colors", "means2d"):
        if kw.get("render_mode") == "D" and name == "colors":
            assert g_cpu[name] is None or g_cpu[name].abs().max() == 0
            continue
        assert cosine(g_cpu[name], g_ref[name]) >= 0.999, name


def _one_gaussian(xyz, scale, opacity, W, H, K, color=(1.0, 0.5, 0.25)):
    return [
        torch.tensor([xyz], dtype=torch.float32),
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.full((1, 3), scale),
        torch.tensor([opacity]),
        torch.tensor([color]),
        torch.eye(4)[None],
        torch.tensor([K], dtype=torch.float32),
        W,
        H,
    ]


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_isotropic_gaussian_at_image_centre(backend):
    W = H = 33
    f, z, s, op = 50.0, 2.0, 0.04, 0.8
    sc = _one_gaussian((0, 0, z), s, op, W, H, [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    renders, alphas, meta = rasterize(*sc, backend=backend)
    a = alphas[0, ..., 0]
    assert divmod(int(a.argmax()), W) == (16, 16)  # centre pixel
    var = (f * s / z) ** 2 + 0.3  # EWA + eps2d low-pass
    assert float(a[16, 16]) == pytest.approx(op, abs=1e-5)
    assert float(a[16, 17]) == pytest.approx(op * math.exp(-0.5 / var), abs=1e-5)
    assert float(a[18, 16]) == pytest.approx(op * math.exp(-0.5 * 4 / var), abs=1e-5)
    np.testing.assert_allclose(renders[0, 16, 16].numpy(), op * np.array([1.0, 0.5, 0.25]), atol=1e-5)
    assert meta["radii"][0, 0].tolist() == [math.ceil(3 * math.sqrt(var))] * 2
    # a nearly opaque Gaussian is clamped at ALPHA_MAX = 0.99
    sc[3] = torch.tensor([1.0])
    _, alphas, _ = rasterize(*sc, backend=backend)
    assert float(alphas.max()) == pytest.approx(ALPHA_MAX, abs=1e-6)


@pytest.mark.parametrize("pixel", [(3, 5), (30, 2), (17, 40)])
def test_gaussian_at_pixel_centre_lands_on_that_pixel(pixel):
    i, j = pixel  # column, row
    W, H = 37, 45
    K = [[40.0, 0, 15.3], [0, 44.0, 26.8], [0, 0, 1]]  # off-centre principal point, non-square pixels
    z = 1.7
    x = (i + 0.5 - K[0][2]) / K[0][0] * z
    y = (j + 0.5 - K[1][2]) / K[1][1] * z
    sc = _one_gaussian((x, y, z), 0.02, 0.7, W, H, K)
    _, alphas, meta = rasterize(*sc, backend="cpu")
    a = alphas[0, ..., 0]
    assert divmod(int(a.argmax()), W) == (j, i)
    np.testing.assert_allclose(meta["means2d"][0, 0].detach().numpy(), [i + 0.5, j + 0.5], atol=1e-4)
    if 0 < i < W - 1:
        assert float(a[j, i - 1]) == pytest.approx(float(a[j, i + 1]), abs=1e-6)


def test_depth_modes_single_gaussian():
    W = H = 21
    sc = _one_gaussian((0, 0, 2.5), 0.05, 0.9, W, H, [[40.0, 0, 10.5], [0, 40.0, 10.5], [0, 0, 1]])
    r_d, a, _ = rasterize(*sc, render_mode="D", backend="cpu")
    r_ed, _, _ = rasterize(*sc, render_mode="ED", backend="cpu")
    r_rgbed, _, _ = rasterize(*sc, render_mode="RGB+ED", backend="cpu")
    assert r_d.shape == (1, H, W, 1) and r_rgbed.shape == (1, H, W, 4)
    assert float(r_d[0, 10, 10, 0]) == pytest.approx(0.9 * 2.5, rel=1e-5)
    assert float(r_ed[0, 10, 10, 0]) == pytest.approx(2.5, rel=1e-5)
    lit = a[0, ..., 0] > 0.01
    np.testing.assert_allclose(r_ed[0][lit].numpy(), 2.5, rtol=1e-5)
    np.testing.assert_allclose(r_rgbed[0, ..., 3][lit].numpy(), 2.5, rtol=1e-5)


def test_meta_and_means2d_gradient():
    sc = scene(N=200, C=2)
    renders, alphas, meta = rasterize(*[t.requires_grad_(True) if i < 5 else t for i, t in enumerate(sc)])
    assert meta["backend"] == "cpu"
    assert renders.shape == (2, 56, 72, 3) and alphas.shape == (2, 56, 72, 1)
    assert meta["width"] == 72 and meta["height"] == 56 and meta["n_cameras"] == 2
    assert meta["gaussian_ids"] is None
    assert meta["radii"].shape == (2, 200, 2) and meta["radii"].dtype == torch.int32
    assert meta["depths"].shape == (2, 200) and meta["visible"].dtype == torch.bool
    assert not meta["visible"][:, :10].any()  # opacity < 1/255
    m2d = meta["means2d"]
    assert m2d.shape == (2, 200, 2) and not m2d.is_leaf and m2d.requires_grad
    m2d.retain_grad()
    renders.sum().backward()
    assert m2d.grad is not None and m2d.grad[meta["visible"]].abs().sum() > 0
    assert m2d.grad[~meta["visible"]].abs().max() == 0


def test_empty_scene_and_backgrounds():
    sc = scene(N=0, C=2)
    bg = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, 0.5]])
    renders, alphas, meta = rasterize(*sc, backgrounds=bg, backend="cpu")
    assert torch.all(alphas == 0)
    np.testing.assert_allclose(renders.numpy(), bg[:, None, None, :].expand(2, 56, 72, 3).numpy())
    # a background colour shows through where the scene is transparent
    sc = scene(N=50, C=2)
    r0, a0, _ = rasterize(*sc, backend="cpu")
    r1, _, _ = rasterize(*sc, backgrounds=bg, backend="cpu")
    np.testing.assert_allclose((r1 - r0).numpy(), ((1 - a0) * bg[:, None, None, :]).numpy(), atol=1e-5)


def test_per_camera_colors_and_inputs_untouched():
    sc = scene(N=100, C=2)
    sc[4] = torch.rand(2, 100, 3)
    before = [t.clone() for t in sc[:7]]
    r_cpu, _, _ = rasterize(*sc, backend="cpu")
    r_ref, _, _ = rasterize(*sc, backend="torch")
    assert (r_cpu - r_ref).abs().mean() <= 1e-4
    assert all(torch.equal(a, b) for a, b in zip(before, sc[:7]))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(render_mode="RGBD"), "render_mode"),
        (dict(backend="cuda"), "backend"),
        (dict(sh_degree=4), "sh_degree"),
        (dict(sh_degree=2), "SH coefficients"),
        (dict(backgrounds=torch.zeros(3, 3)), "backgrounds"),
    ],
)
def test_input_errors(change, match):
    sc = scene(N=10, C=2)
    with pytest.raises(InputError, match=match):
        rasterize(*sc, **change)


def test_shape_errors():
    sc = scene(N=10, C=2)
    bad_quats = list(sc)
    bad_quats[1] = torch.zeros(10, 3)
    with pytest.raises(InputError, match="quats"):
        rasterize(*bad_quats)
    bad_K = list(sc)
    bad_K[6] = torch.eye(3)[None]
    with pytest.raises(InputError, match="Ks"):
        rasterize(*bad_K)


def test_background_gradient_matches_oracle():
    sc = scene(N=150, C=2)
    grads = []
    for backend in ("cpu", "torch"):
        bg = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, 0.5]], requires_grad=True)
        renders, _, _ = rasterize(*sc, backgrounds=bg, backend=backend)
        w = torch.randn(renders.shape, generator=torch.Generator().manual_seed(2))
        (renders * w).sum().backward()
        grads.append(bg.grad)
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=1e-3, atol=1e-3)


def test_viewmat_gradient_matches_oracle():
    sc = scene(N=200, C=2, sh_degree=2)
    grads = []
    for backend in ("cpu", "torch"):
        vm = sc[5].clone().requires_grad_(True)
        renders, alphas, _ = rasterize(
            *sc[:5], vm, *sc[6:], sh_degree=2, render_mode="RGB+D", backend=backend
        )
        w = torch.randn(renders.shape, generator=torch.Generator().manual_seed(4))
        ((renders * w).sum() + alphas.sum()).backward()
        grads.append(vm.grad)
    assert grads[0][:, :3].abs().sum() > 0
    assert cosine(grads[0], grads[1]) >= 0.999


def test_no_grad_inference_matches():
    sc = scene(N=120, C=1, sh_degree=2)
    with torch.no_grad():
        r0, a0, meta = rasterize(*sc, sh_degree=2, backend="cpu")
    assert not r0.requires_grad and not meta["means2d"].requires_grad
    params = [t.clone().requires_grad_(True) for t in sc[:5]]
    r1, a1, _ = rasterize(*params, *sc[5:], sh_degree=2, backend="cpu")
    assert r1.requires_grad
    assert torch.equal(r0, r1.detach()) and torch.equal(a0, a1.detach())
