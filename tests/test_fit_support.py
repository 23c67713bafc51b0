"""Small synthetic scenes for the fit tests, and a dense differentiable rasteriser used only when
``gausslift.render.rasterize`` is not available (checked against it when it is)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gausslift.cameras import ring
from gausslift.scene import Scene, View

SH_C0 = 0.28209479177387814


def dense_rasterize(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, sh_degree=None,
    backgrounds=None, render_mode="RGB", near_plane=0.01, far_plane=1e10, eps2d=0.3, backend="auto",
):  # fmt: skip
    """gsplat classic semantics on every pixel (SH degree 0 only): fine for tiny images."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1,
    ).reshape(-1, 3, 3)  # fmt: skip
    M = R * scales[:, None, :]
    cov = M @ M.transpose(1, 2)
    rgb = colors[:, 0] * SH_C0 + 0.5 if colors.dim() == 3 else colors
    rgb = rgb.clamp_min(0)
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pix = torch.stack([xx, yy], -1).reshape(-1, 2)
    proj = []
    for c in range(viewmats.shape[0]):
        V, K = viewmats[c], Ks[c]
        pc = means @ V[:3, :3].T + V[:3, 3]
        tz = pc[:, 2].clamp_min(1e-4)
        fx, fy = K[0, 0], K[1, 1]
        J = torch.zeros(len(means), 2, 3)
        J[:, 0, 0], J[:, 0, 2] = fx / tz, -fx * pc[:, 0] / tz**2
        J[:, 1, 1], J[:, 1, 2] = fy / tz, -fy * pc[:, 1] / tz**2
        T = J @ V[:3, :3]
        c2 = T @ cov @ T.transpose(1, 2) + eps2d * torch.eye(2)
        mu = torch.stack([fx * pc[:, 0] / tz + K[0, 2], fy * pc[:, 1] / tz + K[1, 2]], -1)
        proj.append((pc, c2, mu))
    means2d = torch.stack([p[2] for p in proj])
    outs, alphas, radii_all = [], [], []
    for c, (pc, c2, _) in enumerate(proj):
        valid = (pc[:, 2] > near_plane) & (pc[:, 2] < far_plane)
        det = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
        lam = 0.5 * (c2[:, 0, 0] + c2[:, 1, 1]) + torch.sqrt(
            (0.25 * (c2[:, 0, 0] - c2[:, 1, 1]) ** 2 + c2[:, 0, 1] ** 2).clamp_min(0.01)
        )
        radii = torch.where(valid, torch.ceil(3 * torch.sqrt(lam)), 0).detach().int()
        conic = torch.stack([c2[:, 1, 1], -c2[:, 0, 1], c2[:, 0, 0]], -1) / det[:, None]
        order = torch.argsort(pc[:, 2].detach())
        d = pix[:, None, :] - means2d[c][None, order]
        cn = conic[order]
        sig = 0.5 * (cn[:, 0] * d[..., 0] ** 2 + cn[:, 2] * d[..., 1] ** 2) + cn[:, 1] * d[..., 0] * d[..., 1]
        a = (opacities[order] * torch.exp(-sig)).clamp_max(0.99)
        a = torch.where((a >= 1 / 255) & (sig >= 0) & valid[order], a, 0)
        trans = torch.cumprod(torch.cat([torch.ones(len(pix), 1), 1 - a[:, :-1]], 1), 1)
        wts = a * trans
        img = wts @ rgb[order]
        acc = wts.sum(1, keepdim=True)
        if backgrounds is not None:
            img = img + (1 - acc) * backgrounds[c]
        outs.append(img.reshape(height, width, 3))
        alphas.append(acc.reshape(height, width, 1))
        radii_all.append(radii)
    meta = {"means2d": means2d, "radii": torch.stack(radii_all), "width": width, "height": height}
    return torch.stack(outs), torch.stack(alphas), meta


@pytest.fixture
def rasterizer(monkeypatch):
    """The real rasteriser, torch backend (the dense one above is its independent reference)."""
    import gausslift.fit.model as model
    from gausslift.render import rasterize

    def real(*a, **kw):
        kw["backend"] = "torch" if kw.get("backend", "auto") == "auto" else kw["backend"]
        return rasterize(*a, **kw)

    monkeypatch.setattr(model, "_rasterize", real, raising=False)
    return model._rasterize


def blob_scene(root: Path, n_views: int = 8, size: int = 24, masks: bool = True) -> Scene:
    """A coloured ellipsoid rendered analytically (by ray casting) from a ring of cameras, as PNGs."""
    import cv2

    cams = ring(n_views, radius=2.7, elevation_deg=20, fov_deg=50, size=size)
    root.mkdir(parents=True, exist_ok=True)
    axes = np.array([0.5, 0.35, 0.6])
    views = []
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    pix = np.stack([xx, yy], -1).reshape(-1, 2)
    for i, cam in enumerate(cams):
        o, d = cam.rays(pix)
        od, dd = o / axes, d / axes
        a, b, c = (dd * dd).sum(1), 2 * (od * dd).sum(1), (od * od).sum(1) - 1
        disc = b * b - 4 * a * c
        hit = disc > 0
        t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        p = o + t[:, None] * d
        col = np.stack([0.5 + 0.4 * np.tanh(2 * p[:, 0]), 0.5 + 0.4 * np.tanh(2 * p[:, 2]), 0.3 + 0 * t], 1)
        rgba = np.zeros((size * size, 4))
        rgba[hit, :3] = col[hit]
        rgba[hit, 3] = 1.0
        img = (rgba.reshape(size, size, 4) * 255).round().astype(np.uint8)
        path = root / f"view_{i:02d}.png"
        if masks:
            cv2.imwrite(str(path), img[..., [2, 1, 0, 3]])
        else:
            cv2.imwrite(str(path), img[..., [2, 1, 0]])
        views.append(View(f"view_{i:02d}", cam, image=path))
    (root / "scene.json").write_text(json.dumps({"n": n_views}))
    return Scene(views, format="test", root=root)


def test_dense_rasterizer_matches_the_real_one():
    from gausslift.render import rasterize

    g = torch.Generator().manual_seed(0)
    n = 40
    means = torch.randn(n, 3, generator=g) * 0.3
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.1 + 0.02
    opac = torch.rand(n, generator=g)
    colors = torch.randn(n, 1, 3, generator=g)
    cams = ring(2, size=16)
    vm = torch.as_tensor(cams.viewmat, dtype=torch.float32)
    K = torch.as_tensor(cams.K, dtype=torch.float32)
    bg = torch.ones(2, 3)
    a, aa, _ = dense_rasterize(means, quats, scales, opac, colors, vm, K, 16, 16, sh_degree=0, backgrounds=bg)
    b, bb, _ = rasterize(means, quats, scales, opac, colors, vm, K, 16, 16, sh_degree=0, backgrounds=bg,
                         backend="torch")  # fmt: skip
    assert torch.allclose(a, b, atol=2e-2)
    assert torch.allclose(aa, bb, atol=2e-2)


def test_optimizer_state_keeps_the_target_fused_setting():
    """A checkpoint's Adam state from a fused (GPU-style) optimizer loads into an unfused one and back."""
    from gausslift.fit.optim import load_optimizer_state, make_optimizers, optimizer_state

    src = {"means": torch.nn.Parameter(torch.randn(5, 3))}
    fused = {"means": torch.optim.Adam([src["means"]], lr=0.1, fused=True)}
    src["means"].grad = torch.ones(5, 3)
    fused["means"].step()
    dst = {"means": torch.nn.Parameter(src["means"].detach().clone())}
    plain = make_optimizers(dst, {"means": 0.1})
    load_optimizer_state(plain, optimizer_state(fused))
    g = plain["means"].param_groups[0]
    m = plain["means"].state[dst["means"]]["exp_avg"]
    assert not g["fused"] and torch.allclose(m, torch.full((5, 3), 0.1))
    dst["means"].grad = torch.ones(5, 3)
    plain["means"].step()  # runs unfused with the loaded step counter
    assert float(plain["means"].state[dst["means"]]["step"]) == 2
    back = {"means": torch.optim.Adam([src["means"]], lr=0.1, fused=True)}
    load_optimizer_state(back, optimizer_state(plain))
    assert back["means"].param_groups[0]["fused"] is True
