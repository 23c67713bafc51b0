"""Dense-tile Gaussian compositing in plain PyTorch: the correctness oracle and the speed baseline.

Same rule as ``gausslift.render.raster`` (gsplat classic mode): the Gaussians of each tile (rectangle
``mean2d +- radii``, depth-sorted, ties by index) are evaluated densely at the tile's pixels as a
[tiles, P, pixels] block; transmittance by ``cumprod``; alpha clamp, 1/255 skip and the 1e-4 stop as masks.
Tiles are processed in batches of similar list length (sorted by length, padded to the batch's longest list)
so each batch is a few large tensor ops. Differentiable by autograd w.r.t. means2d, conics, colors,
opacities (and backgrounds).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
BATCH_ELEMENTS = 1 << 22  # tiles * padded list length * pixels per batch


def tile_intersections(means2d, radii, depths, width, height, tile_size=16):
    """(tile ids, flat Gaussian ids) of every Gaussian-tile overlap, sorted by tile then depth (stable).

    Tile id is ``c * tiles_y * tiles_x + ty * tiles_x + tx``; flat Gaussian id is ``c * N + n``.
    """
    C, N = depths.shape
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    inv = 1.0 / tile_size
    m = means2d.detach().reshape(C * N, 2).float() * inv
    r = radii.reshape(C * N, 2).float() * inv
    lo = torch.floor(m - r)
    hi = torch.ceil(m + r)
    x0 = lo[:, 0].clamp(0, tiles_x).long()
    x1 = hi[:, 0].clamp(0, tiles_x).long()
    y0 = lo[:, 1].clamp(0, tiles_y).long()
    y1 = hi[:, 1].clamp(0, tiles_y).long()
    visible = (radii.reshape(C * N, 2) > 0).all(dim=1)
    nx = (x1 - x0).clamp(min=0)
    cnt = nx * (y1 - y0).clamp(min=0) * visible
    dev = means2d.device  # every new tensor follows the inputs' device (the oracle runs on CUDA too)
    gid = torch.repeat_interleave(torch.arange(C * N, device=dev), cnt)
    first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
    j = torch.arange(gid.numel(), device=dev) - first
    tx = x0[gid] + j % nx[gid]
    ty = y0[gid] + torch.div(j, nx[gid], rounding_mode="floor")
    tile = torch.div(gid, N, rounding_mode="floor") * (tiles_x * tiles_y) + ty * tiles_x + tx
    order = torch.sort(depths.detach().reshape(-1)[gid], stable=True).indices
    order = order[torch.sort(tile[order], stable=True).indices]
    return tile[order], gid[order]


def _composite_batch(px, py, mean, conic, opac, color, valid):
    """Dense compositing of B tiles: pixel centres px, py [B, S]; Gaussians [B, P, ...] (valid [B, P]).
    Returns (colour [B, S, D], final transmittance [B, S], list length actually used per tile [B])."""
    dx = mean[..., 0:1] - px[:, None, :]  # [B, P, S]
    dy = mean[..., 1:2] - py[:, None, :]
    a, b, c = conic[..., 0:1], conic[..., 1:2], conic[..., 2:3]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy  # exp of the clamped sigma: no inf * 0 grads
    alpha = torch.clamp(opac[..., None] * torch.exp(-sigma.clamp(min=0)), max=ALPHA_MAX)
    keep = (sigma >= 0) & (alpha >= ALPHA_MIN) & valid[..., None]
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    with torch.no_grad():  # stop before the Gaussian that takes T to <= T_MIN (T is non-increasing)
        alive = torch.cumprod(1.0 - alpha, dim=1) > T_MIN
        used = (alive.any(dim=2) & valid).sum(dim=1)  # alive is a prefix along P: Gaussians that matter
    alpha = torch.where(alive, alpha, torch.zeros_like(alpha))
    T = torch.cumprod(1.0 - alpha, dim=1)
    T_before = torch.cat([torch.ones_like(T[:, :1]), T[:, :-1]], dim=1)
    rgb = torch.einsum("bps,bpd->bsd", alpha * T_before, color)
    return rgb, T[:, -1], used


def _batches(tiles, counts, S):
    """Tiles (with counts > 0) grouped by similar list length, about BATCH_ELEMENTS elements each."""
    tiles = tiles[counts[tiles] > 0]
    tiles = tiles[torch.argsort(counts[tiles], descending=True, stable=True)]  # batch max = its first
    i = 0
    while i < tiles.numel():
        nb = max(1, BATCH_ELEMENTS // (int(counts[tiles[i]]) * S))
        yield tiles[i : i + nb]
        i += nb


def rasterize_to_pixels_torch(
    means2d, conics, colors, opacities, radii, depths, backgrounds, width, height, tile_size=16
):
    """Returns (render [C, H, W, D], alpha [C, H, W]), differentiable by autograd.

    With gradients, a first no-grad pass trims every tile list after the last Gaussian that reaches a live
    pixel (exact: later ones are masked anyway), then each batch runs under activation checkpointing so
    memory stays bounded by the batch size instead of growing with all tiles' [P, pixels] blocks.
    """
    C, N, D = colors.shape
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    n_tiles = C * tiles_x * tiles_y
    S = tile_size * tile_size
    dt = means2d.dtype
    tile, gid = tile_intersections(means2d, radii, depths, width, height, tile_size)
    counts = torch.bincount(tile, minlength=n_tiles)
    starts = torch.cumsum(counts, 0) - counts
    flat = [
        means2d.reshape(C * N, 2),
        conics.reshape(C * N, 3),
        opacities.reshape(C * N),
        colors.reshape(C * N, D),
    ]
    dev = means2d.device
    u = torch.arange(tile_size, dtype=dt, device=dev) + 0.5
    off_x = u.repeat(tile_size)  # pixel s = v * tile_size + u
    off_y = u.repeat_interleave(tile_size)

    def run(ids, cnt, *tensors):
        pmax = int(cnt.max())
        ar = torch.arange(pmax, device=dev)
        valid = ar[None, :] < cnt[:, None]
        g = gid[(starts[ids][:, None] + ar[None, :]).clamp(max=gid.numel() - 1)]
        r = ids % (tiles_x * tiles_y)
        px = (r % tiles_x * tile_size).to(dt)[:, None] + off_x[None, :]
        py = (torch.div(r, tiles_x, rounding_mode="floor") * tile_size).to(dt)[:, None] + off_y[None, :]
        mean, conic, opac, color = (t[g] for t in tensors)
        return _composite_batch(px, py, mean, conic, opac, color, valid)

    grad = torch.is_grad_enabled() and any(t.requires_grad for t in flat)
    if grad:  # no-grad pass: list length actually used per tile
        with torch.no_grad():
            for ids in _batches(torch.arange(n_tiles, device=dev), counts, S):
                counts[ids] = run(ids, counts[ids], *flat)[2]
    done_ids, done_rgb, done_T = [], [], []
    for ids in _batches(torch.arange(n_tiles, device=dev), counts, S):
        if grad:
            rgb, T, _ = checkpoint(run, ids, counts[ids], *flat, use_reentrant=False)
        else:
            rgb, T, _ = run(ids, counts[ids], *flat)
        done_ids.append(ids)
        done_rgb.append(rgb)
        done_T.append(T)

    rgb_all = colors.new_zeros(n_tiles, S, D)
    T_all = colors.new_ones(n_tiles, S)
    if done_ids:
        ids = torch.cat(done_ids)
        rgb_all = rgb_all.index_copy(0, ids, torch.cat(done_rgb))
        T_all = T_all.index_copy(0, ids, torch.cat(done_T))

    def to_image(x):  # [C * tiles, S, K] -> [C, H, W, K]
        k = x.shape[-1]
        x = x.reshape(C, tiles_y, tiles_x, tile_size, tile_size, k).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, tiles_y * tile_size, tiles_x * tile_size, k)[:, :height, :width]

    render = to_image(rgb_all)
    T_img = to_image(T_all[..., None])
    if backgrounds is not None:
        render = render + T_img * backgrounds.reshape(C, 1, 1, D)
    return render, 1.0 - T_img[..., 0]
