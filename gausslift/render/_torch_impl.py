"""The whole rasteriser in plain PyTorch (backend="torch"): slow, readable, differentiable by autograd.

Projection and SH colours from `_torch_project`, dense-tile compositing from `_torch_raster`. This is the
reference the numba ("cpu") backend is tested against; it is written independently of `api.py`'s glue.
"""

from __future__ import annotations

import torch

from gausslift.render._torch_project import camera_centres, project_torch, sh_colors_torch
from gausslift.render._torch_raster import ALPHA_MIN, rasterize_to_pixels_torch


def rasterize_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    sh_degree=None, backgrounds=None, render_mode="RGB", near_plane=0.01, far_plane=1e10, eps2d=0.3,
    tile_size=16,
):  # fmt: skip
    """Same contract as `gausslift.render.rasterize` (inputs already validated)."""
    C, N = viewmats.shape[0], means.shape[0]
    means2d, conics, depths, radii = project_torch(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane
    )
    # Gaussians that can never reach alpha >= 1/255 are culled (as gsplat does with its opacities)
    radii = torch.where((opacities < ALPHA_MIN)[None, :, None], torch.zeros_like(radii), radii)

    if render_mode in ("D", "ED"):
        feats = depths[..., None]
    else:
        if sh_degree is not None:
            feats = sh_colors_torch(colors, sh_degree, means, camera_centres(viewmats), radii)
        else:
            feats = colors.expand(C, N, colors.shape[-1]) if colors.dim() == 2 else colors
        if render_mode in ("RGB+D", "RGB+ED"):
            feats = torch.cat([feats, depths[..., None]], dim=-1)
    bg = None
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = backgrounds
        pad = feats.shape[-1] - bg.shape[-1]
        if pad > 0:  # depth channels get a zero background
            bg = torch.cat([bg, bg.new_zeros(C, pad)], dim=-1)

    opac = opacities[None, :].expand(C, N)
    render, alpha = rasterize_to_pixels_torch(
        means2d, conics, feats, opac, radii, depths.detach(), bg, width, height, tile_size
    )
    alpha = alpha.reshape(C, height, width, 1)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp_min(1e-10)], dim=-1)
    meta = {
        "means2d": means2d,
        "conics": conics,
        "depths": depths,
        "radii": radii,
        "visible": (radii > 0).all(-1),
        "opacities": opac,
    }
    return render, alpha, meta
