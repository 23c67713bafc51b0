"""GS-LRM network: shapes, rays, pixel alignment, activations, rendering and export."""

import numpy as np
import pytest
import torch

from gausslift.cameras import ring
from gausslift.models.gslrm import (
    GSLRM,
    PRESETS,
    GSLRMConfig,
    facelift_pixel_order,
    gslrm_config,
    patchify,
    pixel_rays,
    posed_pixels,
    render_gaussians,
    to_splats,
    unpatchify,
)
from gausslift.splats import Splats


def _rig(n=3, size=16, radius=2.7, seed=0):
    rng = np.random.default_rng(seed)
    az0 = float(rng.uniform(0, 90))
    cams = ring(n, radius=radius, elevation_deg=20, fov_deg=50, size=size, azimuth0_deg=az0)
    K = torch.tensor(cams.K, dtype=torch.float32)
    K[..., 0, 2] += 0.7  # an off-centre principal point and fx != fy catch index mix-ups
    K[..., 1, 1] *= 1.1
    return cams, K, torch.tensor(cams.viewmat, dtype=torch.float32)


def _tiny(**kw):
    torch.manual_seed(0)
    return GSLRM(gslrm_config("tiny", d=64, n_layers=2, **kw)).eval()


def test_presets_match_issue():
    size = {k: (c.image_size, c.d, c.n_layers) for k, c in PRESETS.items()}
    assert size == {"facelift": (512, 1024, 24), "base": (256, 512, 12), "tiny": (128, 256, 6)}
    assert all(c.patch_size == 8 and c.d_head == 64 and c.sh_degree == 0 for c in PRESETS.values())
    with pytest.raises(ValueError):
        gslrm_config("huge")
    from gausslift.config import from_dict, to_dict  # configs are written next to every run

    cfg = gslrm_config("base", sh_degree=1)
    assert from_dict(GSLRMConfig, to_dict(cfg)) == cfg


def test_shapes_and_activations():
    m = _tiny(sh_degree=1)
    _, K, vm = _rig(3, 16)
    B, V, H, W = 2, 3, 16, 16
    g = m(torch.rand(B, V, H, W, 3), K.expand(B, -1, -1, -1), vm.expand(B, -1, -1, -1))
    N = 2 + V * H * W
    assert g.means.shape == (B, N, 3) and g.quats.shape == (B, N, 4) and g.scales.shape == (B, N, 3)
    assert g.opacities.shape == (B, N) and g.sh.shape == (B, N, 4, 3) and g.depths.shape == (B, V, H, W)
    assert g.sh_degree == 1 and g.n_free == 2 and g.pixel(g.means).shape == (B, V, H, W, 3)
    torch.testing.assert_close(g.quats.norm(dim=-1), torch.ones(B, N))
    torch.testing.assert_close(g.quats, torch.nn.functional.normalize(g.raw_quats, dim=-1))
    torch.testing.assert_close(g.scales, g.log_scales.exp())
    assert g.log_scales.max() <= -1.2 + 1e-6
    torch.testing.assert_close(g.opacities, torch.sigmoid(g.opacity_logits))
    with pytest.raises(ValueError, match="patch size"):
        m(torch.rand(1, V, 12, 16, 3), K[None], vm[None])


def test_batch_elements_are_independent():
    m = _tiny()
    _, K, vm = _rig(3, 16)
    imgs = torch.rand(2, 3, 16, 16, 3)
    Ks = torch.stack([K, K.flip(0)])
    vms = torch.stack([vm, vm.flip(0)])
    with torch.no_grad():
        both = m(imgs, Ks, vms)
        for b in range(2):
            one = m(imgs[b : b + 1], Ks[b : b + 1], vms[b : b + 1])
            for f in ("means", "sh", "log_scales", "raw_quats", "opacity_logits", "depths"):
                torch.testing.assert_close(getattr(both, f)[b], getattr(one, f)[0], atol=1e-5, rtol=1e-5)


def test_rays_match_camera_unproject():
    cams, K, vm = _rig(4, 24)
    cams = cams.with_(K=K.double().numpy(), width=32)
    o, d = pixel_rays(torch.from_numpy(cams.K), torch.from_numpy(cams.viewmat), 24, 32)
    ys, xs = np.meshgrid(np.arange(24), np.arange(32), indexing="ij")
    pix = np.stack([xs + 0.5, ys + 0.5], -1).reshape(-1, 2)
    o_ref, d_ref = cams.rays(np.broadcast_to(pix, (4, *pix.shape)))
    np.testing.assert_allclose(o.numpy().reshape(4, -1, 3), o_ref, atol=1e-10)
    np.testing.assert_allclose(d.numpy().reshape(4, -1, 3), d_ref, atol=1e-10)
    # a point along a ray projects back to the pixel centre it came from
    uv, _ = cams.project((o + 2.0 * d).numpy().reshape(4, -1, 3))
    np.testing.assert_allclose(uv, np.broadcast_to(pix, uv.shape), atol=1e-8)


def test_posed_pixels_are_custom_plucker():
    _, K, vm = _rig(2, 8)
    o, d = pixel_rays(K, vm, 8, 8)
    rgb = torch.rand(2, 8, 8, 3)
    x = posed_pixels(rgb, o, d)
    torch.testing.assert_close(x[..., :3], rgb * 2 - 1)
    torch.testing.assert_close(x[..., 3:6], d)
    q = x[..., 6:]  # nearest point to the origin: on the ray and orthogonal to it
    assert (q * d).sum(-1).abs().max() < 1e-5
    assert torch.linalg.cross(q - o, d).norm(dim=-1).max() < 1e-5


def test_patchify_order_and_inverse():
    x = torch.randn(2, 3, 16, 24, 5)
    t = patchify(x, 8)
    assert t.shape == (2, 3 * 2 * 3, 64 * 5)
    # token (view 1, patch row 1, patch col 2), feature (row 3, col 4, channel 2)
    assert t[0, 1 * 6 + 1 * 3 + 2, (3 * 8 + 4) * 5 + 2] == x[0, 1, 8 + 3, 16 + 4, 2]
    torch.testing.assert_close(unpatchify(t, 3, 16, 24, 8), x)
    idx = facelift_pixel_order(3, 16, 24, 8)
    assert sorted(idx.tolist()) == list(range(3 * 16 * 24))


@pytest.mark.parametrize("train", [False, True])
def test_pixel_alignment(train):
    m = _tiny()
    m.train(train)
    with torch.no_grad():  # spread the depths over their whole range, so clipping to [-1,1]^3 happens
        m.pixel_head.linear.weight.mul_(100.0)
    _, K, vm = _rig(3, 16)
    g = m(torch.rand(1, 3, 16, 16, 3), K[None], vm[None])
    o, d = pixel_rays(K[None], vm[None], 16, 16)
    means = g.pixel(g.means)
    if not train:  # centres on their pixel rays, at depth t
        torch.testing.assert_close(means, o + g.depths[..., None] * d, atol=1e-5, rtol=0)
        off = means - o
        assert torch.linalg.cross(off, d).norm(dim=-1).max() < 1e-5
        od = (-o * d).sum(-1)
        assert ((g.depths - od).abs() <= 1.8 + 1e-5).all()
    else:
        raw = o + g.depths[..., None] * d
        assert (raw.abs() > 1).any() and means.abs().max() <= 1.0
        torch.testing.assert_close(means, raw.clamp(-1, 1))


def test_bf16_autocast_keeps_alignment_in_float32():
    m = _tiny()
    _, K, vm = _rig(2, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        g = m(torch.rand(1, 2, 16, 16, 3), K[None], vm[None])
    assert g.means.dtype == g.sh.dtype == g.scales.dtype == torch.float32
    o, d = pixel_rays(K[None], vm[None], 16, 16)
    torch.testing.assert_close(g.pixel(g.means), o + g.depths[..., None] * d, atol=1e-5, rtol=0)


def test_grad_checkpoint_same_gradients():
    _, K, vm = _rig(2, 16)
    img = torch.rand(1, 2, 16, 16, 3)
    grads = []
    for ck in (False, True):
        m = _tiny(grad_checkpoint=ck).train()
        g = m(img, K[None], vm[None])
        (g.means.square().sum() + g.sh.sum() + g.opacities.sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_render_and_splats():
    m = _tiny()
    cams, K, vm = _rig(2, 16)
    with torch.no_grad():
        g = m(torch.rand(1, 2, 16, 16, 3), K[None], vm[None])
    img, alpha = render_gaussians(g, K[None], vm[None], 16, 16, background=(1.0, 1.0, 1.0), backend="cpu")
    assert img.shape == (1, 2, 16, 16, 3) and alpha.shape == (1, 2, 16, 16)
    assert alpha.max() > 0.1 and torch.isfinite(img).all()
    # background reaches the pixels where alpha is small
    img0, _ = render_gaussians(g, K[None], vm[None], 16, 16, background=None, backend="cpu")
    torch.testing.assert_close(img - img0, (1 - alpha[..., None]).expand_as(img), atol=1e-5, rtol=0)
    s = to_splats(g, 0)
    assert isinstance(s, Splats) and len(s) == g.means.shape[1]
    torch.testing.assert_close(s.scales_act, g.scales[0])
    torch.testing.assert_close(s.opacities_act, g.opacities[0])
    torch.testing.assert_close(s.colors, g.sh[0])
    kept = to_splats(g, 0, min_opacity=float(g.opacities.median()), box=0.5)
    assert 0 < len(kept) < len(s) and kept.means.abs().max() <= 0.5


@pytest.mark.slow
def test_overfits_one_sample_through_the_renderer():
    """Gradients reach the network through rasterize: 30 AdamW steps on one head sample raise the PSNR."""
    from pathlib import Path

    import gausslift
    from gausslift.lrm.predict import load_sample
    from gausslift.metrics import psnr

    sample = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
    inp = load_sample(sample, ["cam_000", "cam_008", "cam_016", "cam_024"], size=32)
    tgt = load_sample(sample, ["cam_000", "cam_004", "cam_012", "cam_020", "cam_028"], size=32)
    torch.manual_seed(0)
    m = GSLRM(gslrm_config("tiny", d=128, n_layers=2)).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05)
    scores = []
    for _ in range(31):
        g = m(inp.images[None], inp.Ks[None], inp.viewmats[None])
        img, _ = render_gaussians(
            g, tgt.Ks[None], tgt.viewmats[None], 32, 32, background=(1, 1, 1), backend="cpu"
        )
        loss = (img[0] - tgt.images).square().mean()
        scores.append(float(psnr(img[0].detach().clamp(0, 1), tgt.images).mean()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert scores[-1] > scores[0] + 4.0, scores


def test_pixel_mlp_starts_as_facelift_and_sees_each_pixel():
    """``pixel_mlp`` (not FaceLift's): zero-initialised, so the first forward pass equals the model
    without it (same pixel-head rows for the Gaussians' parameters); once trained, with the tokens'
    output silenced, a change of one input pixel changes that pixel's Gaussian and no other."""
    P = GSLRMConfig().n_params_per_gaussian
    _, K, vm = _rig(2, 16)
    img = torch.rand(1, 2, 16, 16, 3)
    plain, skip = _tiny(), _tiny(pixel_mlp=16)
    assert skip.pixel_head.linear.weight.shape[0] == 8 * 8 * (P + 8)
    with torch.no_grad():
        rows = skip.pixel_head.linear.weight.reshape(64, P + 8, -1)[:, :P].reshape(64 * P, -1)
        for name, p in plain.state_dict().items():
            if name != "pixel_head.linear.weight":
                p.copy_(skip.state_dict()[name])
        plain.pixel_head.linear.weight.copy_(rows)
    a, b = plain(img, K[None], vm[None]), skip(img, K[None], vm[None])
    for f in ("means", "sh", "scales", "opacities", "quats"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f))
    # one optimiser step on the MLP alone; then a one-pixel change moves that pixel's opacity
    skip.train()
    opt = torch.optim.SGD(skip.pixel_mlp.parameters(), lr=0.1)
    g = skip(img, K[None], vm[None])
    (g.opacities.sum() + g.sh.square().sum()).backward()
    assert skip.pixel_mlp[0].weight.grad.abs().sum() == 0  # zero last layer: no gradient through it yet
    assert skip.pixel_mlp[-1].weight.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    g = skip(img, K[None], vm[None])
    g.opacity_logits.sum().backward()
    opt.step()
    skip.eval()
    with torch.no_grad():  # tokens silenced: what is left is each pixel's own path
        skip.pixel_head.linear.weight.zero_()
    img2 = img.clone()
    img2[0, 1, 5, 6] = 1.0 - img2[0, 1, 5, 6]
    with torch.no_grad():
        g1, g2 = skip(img, K[None], vm[None]), skip(img2, K[None], vm[None])
    change = (g1.pixel(g1.opacity_logits) - g2.pixel(g2.opacity_logits)).abs()
    assert change[0, 1, 5, 6] > 1e-4
    change[0, 1, 5, 6] = 0
    assert change.max() == 0
    o, d = pixel_rays(K[None], vm[None], 16, 16)
    g = skip(img2, K[None], vm[None])
    torch.testing.assert_close(g.pixel(g.means), o + g.depths[..., None] * d, atol=1e-5, rtol=0)
