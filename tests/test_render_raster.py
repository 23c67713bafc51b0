"""Numba tile rasteriser (forward + analytic backward) vs the dense-tile torch oracle and a per-pixel loop."""

import math

import numpy as np
import pytest
import torch

from gausslift.render._torch_raster import rasterize_to_pixels_torch, tile_intersections
from gausslift.render.raster import (
    ALPHA_MAX,
    ALPHA_MIN,
    T_MIN,
    rasterize_to_pixels_fwd,
)
from gausslift.render.raster_bwd import rasterize_to_pixels_bwd
from gausslift.render.tiles import bin_gaussians

GRADS = ("means2d", "conics", "colors", "opacities")


def random_scene(rng, C=1, N=200, W=40, H=30, D=3, scale=(0.5, 6.0), margin=10, opacity=(0.05, 1.0)):
    """Projected Gaussians: means over the image (+ margin), random anisotropic covariances + 0.3 blur."""
    means = np.stack([rng.uniform(-margin, W + margin, (C, N)), rng.uniform(-margin, H + margin, (C, N))], -1)
    s = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), (C, N, 2)))
    th = rng.uniform(0, np.pi, (C, N))
    R = np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], -2)
    cov = R @ (s[..., :, None] ** 2 * np.eye(2)) @ np.swapaxes(R, -1, -2) + 0.3 * np.eye(2)
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    conics = np.stack([cov[..., 1, 1] / det, -cov[..., 0, 1] / det, cov[..., 0, 0] / det], -1)
    radii = np.ceil(3 * np.sqrt(np.stack([cov[..., 0, 0], cov[..., 1, 1]], -1))).astype(np.int32)
    return dict(
        means2d=means.astype(np.float32),
        conics=conics.astype(np.float32),
        colors=rng.uniform(0, 1, (C, N, D)).astype(np.float32),
        opacities=rng.uniform(*opacity, (C, N)).astype(np.float32),
        radii=radii,
        depths=rng.uniform(1, 5, (C, N)).astype(np.float32),
    )


def oracle(scene, bg, W, H, v_render, v_alpha):
    t = {k: torch.tensor(v) for k, v in scene.items()}
    for k in GRADS:
        t[k].requires_grad_(True)
    render, alpha = rasterize_to_pixels_torch(
        **t, backgrounds=None if bg is None else torch.tensor(bg), width=W, height=H
    )
    if render.requires_grad:  # not when no Gaussian touches the image
        ((render * torch.tensor(v_render)).sum() + (alpha * torch.tensor(v_alpha)).sum()).backward()
    grads = [np.zeros_like(scene[k]) if t[k].grad is None else t[k].grad.numpy() for k in GRADS]
    return render.detach().numpy(), alpha.detach().numpy(), grads


def run_both(scene, W, H, bg=None, seed=1):
    render, alpha, ctx = rasterize_to_pixels_fwd(**scene, backgrounds=bg, width=W, height=H)
    g = np.random.default_rng(seed)
    v_render = g.normal(size=render.shape).astype(np.float32)
    v_alpha = g.normal(size=alpha.shape).astype(np.float32)
    grads = rasterize_to_pixels_bwd(ctx, v_render, v_alpha)
    ref = oracle(scene, bg, W, H, v_render, v_alpha)
    return (render, alpha, grads, ctx), ref


def assert_match(ours, ref):
    render, alpha, grads, _ = ours
    r_render, r_alpha, r_grads = ref
    assert render.shape == r_render.shape and alpha.shape == r_alpha.shape
    for a, b in ((render, r_render), (alpha, r_alpha)):
        d = np.abs(a - b)
        assert d.mean() <= 1e-3 and d.max() <= 2e-2, (d.mean(), d.max())
    for name, a, b in zip(GRADS, grads, r_grads):
        assert a.shape == b.shape, name
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if nb < 1e-6:
            assert na < 1e-4, (name, na)
            continue
        cos = float((a.ravel() @ b.ravel()) / (na * nb))
        assert cos >= 0.999, (name, cos)


@pytest.mark.parametrize(
    "C,N,W,H,D,use_bg",
    [
        (1, 300, 40, 30, 3, False),
        (2, 400, 37, 53, 4, True),
        (1, 500, 50, 17, 1, True),
        (3, 150, 16, 16, 3, False),
    ],
)
def test_matches_torch_oracle(rng, C, N, W, H, D, use_bg):
    scene = random_scene(rng, C, N, W, H, D)
    bg = rng.uniform(0, 1, (C, D)).astype(np.float32) if use_bg else None
    assert_match(*run_both(scene, W, H, bg))


def test_dense_overlap_hits_transmittance_stop(rng):
    scene = random_scene(rng, 1, 800, 33, 21, 3, scale=(2.0, 8.0), margin=0, opacity=(0.5, 1.0))
    ours, ref = run_both(scene, 33, 21, np.array([[0.2, 0.5, 0.9]], np.float32))
    T = ours[3].T_final
    assert T.min() > T_MIN and np.mean(T < 2 * T_MIN) > 0.3  # most pixels stopped by the 1e-4 rule
    assert_match(ours, ref)


def test_huge_tiny_offscreen_and_transparent(rng):
    W, H = 45, 28
    s = random_scene(rng, 1, 120, W, H, 3)
    s["conics"][0, :3] = [[1e-4, 0.0, 1e-4], [2e-4, 1e-5, 5e-5], [1e-3, 0.0, 1e-3]]  # cover the whole image
    s["radii"][0, :3] = 500
    s["opacities"][0, :3] = [0.3, 0.5, 0.995]  # the last one is clamped at ALPHA_MAX
    s["conics"][0, 3:20] = [50.0, 0.0, 50.0]  # tiny
    s["radii"][0, 3:20] = 1
    s["radii"][0, 20:40, rng.integers(0, 2)] = 0  # off-screen / culled: invisible
    s["opacities"][0, 40:60] = 0.5 * ALPHA_MIN  # can never reach 1/255
    ours, ref = run_both(s, W, H)
    assert_match(ours, ref)
    for grad in ours[2]:
        assert np.all(grad[0, 20:60] == 0)
    ghost = {k: v.copy() for k, v in s.items()}
    ghost["colors"][0, 20:60] = 5.0
    ghost["means2d"][0, 20:60] = [W / 2, H / 2]
    assert np.array_equal(rasterize_to_pixels_fwd(**ghost, backgrounds=None, width=W, height=H)[0], ours[0])


@pytest.mark.parametrize("N", [0, 1])
def test_empty_and_single(rng, N):
    W, H = 20, 19
    s = random_scene(rng, 2, N, W, H, 3, margin=0)
    bg = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, 0.5]], np.float32)
    ours, ref = run_both(s, W, H, bg)
    assert_match(ours, ref)
    if N == 0:
        assert np.allclose(ours[0], bg[:, None, None, :]) and np.all(ours[1] == 0)
        assert all(g.shape[1] == 0 for g in ours[2])


def _pixel_loop(s, bg, W, H):
    """gsplat's classic per-pixel loop, written out naively (tiny scenes only)."""
    C, N, D = s["colors"].shape
    render = np.zeros((C, H, W, D))
    alpha = np.zeros((C, H, W))
    for c in range(C):
        vis = [n for n in range(N) if (s["radii"][c, n] > 0).all()]
        vis.sort(key=lambda n: s["depths"][c, n])
        for y in range(H):
            for x in range(W):
                T, acc = 1.0, np.zeros(D)
                for n in vis:
                    m, r = s["means2d"][c, n], s["radii"][c, n]
                    tx, ty = x // 16, y // 16  # tile rectangle test
                    if not (math.floor((m[0] - r[0]) / 16) <= tx < math.ceil((m[0] + r[0]) / 16)):
                        continue
                    if not (math.floor((m[1] - r[1]) / 16) <= ty < math.ceil((m[1] + r[1]) / 16)):
                        continue
                    a, b, cc = s["conics"][c, n]
                    dx, dy = m[0] - (x + 0.5), m[1] - (y + 0.5)
                    sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    if sigma < 0:
                        continue
                    al = min(float(ALPHA_MAX), s["opacities"][c, n] * math.exp(-sigma))
                    if al < 1 / 255:
                        continue
                    if T * (1 - al) <= 1e-4:
                        break
                    acc += s["colors"][c, n] * al * T
                    T *= 1 - al
                render[c, y, x] = acc + T * bg[c]
                alpha[c, y, x] = 1 - T
    return render, alpha


def test_forward_matches_naive_pixel_loop(rng):
    W, H = 21, 18
    s = random_scene(rng, 1, 40, W, H, 2, scale=(1.0, 5.0), margin=4, opacity=(0.3, 1.0))
    bg = np.array([[0.3, 0.7]], np.float32)
    render, alpha, _ = rasterize_to_pixels_fwd(**s, backgrounds=bg, width=W, height=H)
    r_render, r_alpha = _pixel_loop(s, bg, W, H)
    assert np.abs(render - r_render).max() < 1e-4 and np.abs(alpha - r_alpha).max() < 1e-4


def test_bins_match_oracle_and_sort_by_depth_with_stable_ties(rng):
    W, H = 70, 50
    s = random_scene(rng, 2, 300, W, H, 3)
    s["depths"][:, ::3] = 2.0  # many ties
    s["radii"][0, 5] = 0
    off, ids = bin_gaussians(s["means2d"], s["radii"], s["depths"], W, H, 16)
    tile, gid = tile_intersections(*(torch.tensor(s[k]) for k in ("means2d", "radii", "depths")), W, H, 16)
    assert off[-1] == ids.size == gid.numel()
    assert np.array_equal(np.repeat(np.arange(off.size - 1), np.diff(off)), tile.numpy())
    assert np.array_equal(ids, gid.numpy().astype(np.int32))
    d = s["depths"].ravel()
    for t in range(off.size - 1):
        seg = ids[off[t] : off[t + 1]]
        assert np.all((d[seg][1:] > d[seg][:-1]) | ((d[seg][1:] == d[seg][:-1]) & (seg[1:] > seg[:-1])))
    assert 5 not in ids


def test_inputs_untouched_and_memory_is_o_n_plus_intersections(rng):
    W, H = 64, 48
    s = random_scene(rng, 1, 300, W, H, 3)
    before = {k: v.copy() for k, v in s.items()}
    render, alpha, ctx = rasterize_to_pixels_fwd(**s, backgrounds=None, width=W, height=H)
    rasterize_to_pixels_bwd(ctx, np.ones_like(render), np.ones_like(alpha))
    assert all(np.array_equal(before[k], s[k]) for k in s)
    n_isect, n_gauss, n_pix = ctx.flat_ids.size, 300, W * H
    stored = sum(a.size for a in vars(ctx).values() if isinstance(a, np.ndarray))
    assert stored <= 20 * (n_gauss + n_isect + n_pix)


def test_chunked_fill_matches_single_chunk(rng):
    from gausslift.render import tiles

    s = random_scene(rng, 2, 500, 64, 40, 3)
    keys = tiles.sortable_keys(s["depths"]).reshape(2, 500)
    ext = tiles.no_extents(2, 500)  # the radii
    order, nvis = tiles._depth_order(keys, s["radii"], ext)
    one = tiles._bin(s["means2d"], s["radii"], ext, order, nvis, 16, 4, 3, 1)
    three = tiles._bin(s["means2d"], s["radii"], ext, order, nvis, 16, 4, 3, 3)
    assert one[1].size > 0
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])


def _fwd_bwd(s, W, H, bg, seed=3):
    render, alpha, ctx = rasterize_to_pixels_fwd(**s, backgrounds=bg, width=W, height=H)
    g = np.random.default_rng(seed)
    grads = rasterize_to_pixels_bwd(
        ctx, g.normal(size=render.shape).astype(np.float32), g.normal(size=alpha.shape).astype(np.float32)
    )
    return render, alpha, grads, ctx.flat_ids.size


def test_opacity_tight_tiles_give_the_same_image_and_gradients(rng, monkeypatch):
    """Binning by the alpha >= 1/255 ellipse (TIGHT_TILES) drops only list entries the rasteriser would skip:
    the same render and alpha bit for bit, the same gradients (summed in another tile order), fewer
    intersections. Halving the extents must change the image, so the comparison can fail."""
    from gausslift.render import raster

    W, H = 96, 64
    s = random_scene(rng, 2, 600, W, H, 3, scale=(2.0, 12.0), opacity=(0.002, 0.3))
    s["opacities"][:, :50] = rng.uniform(0.9, 0.999, (2, 50)).astype(np.float32)  # extents beyond 3 sigma
    bg = np.array([[0.1, 0.4, 0.8]], np.float32)
    monkeypatch.setattr(raster, "TIGHT_TILES", False)
    box = _fwd_bwd(s, W, H, bg)
    monkeypatch.setattr(raster, "TIGHT_TILES", True)
    tight = _fwd_bwd(s, W, H, bg)
    assert np.array_equal(tight[0], box[0]) and np.array_equal(tight[1], box[1])
    for name, a, b in zip(GRADS, tight[2], box[2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=name)
    assert tight[3] < 0.9 * box[3], (tight[3], box[3])

    real_bin = raster.bin_gaussians

    def halved(means2d, radii, depths, width, height, tile_size, extents):
        ext = extents.copy()
        ext[..., 1:] *= 0.5
        return real_bin(means2d, radii, depths, width, height, tile_size, ext)

    monkeypatch.setattr(raster, "bin_gaussians", halved)
    too_tight = _fwd_bwd(s, W, H, bg)
    assert np.abs(too_tight[0] - box[0]).max() > 1e-3
