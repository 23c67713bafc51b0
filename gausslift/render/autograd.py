"""torch.autograd.Function wrappers around the numba kernels (the "cpu" backend).

Three Functions, so that the projected 2D means are a real intermediate of the graph (gsplat's densification
reads ``meta["means2d"].grad``):

* `Project`: (means, quats, scales, viewmats, Ks) -> (means2d, conics, depths, radii)
* `ShColors`: (sh coefficients, means, camera centres) -> colours [C,N,3]
* `Rasterize`: (means2d, conics, colours, opacities, backgrounds) -> (render, alpha)

Tensors cross into numpy without copies where they are contiguous float32 CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.render import project as _project
from gausslift.render import raster as _raster
from gausslift.render import raster_bwd as _raster_bwd
from gausslift.render import sh as _sh


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy float32 numpy view of a CPU tensor (copies only if needed)."""
    t = t.detach()
    if t.dtype != torch.float32:
        t = t.float()
    return t.contiguous().numpy()


def _np_or_zeros(t, shape) -> np.ndarray:
    return np.zeros(shape, np.float32) if t is None else _np(t)


class Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
        inputs = [x.detach().float().contiguous() for x in (means, quats, scales, viewmats, Ks)]
        means2d, conics, depths, radii = _project.project_fwd(
            *[x.numpy() for x in inputs],
            width,
            height,
            eps2d=eps2d,
            near_plane=near_plane,
            far_plane=far_plane,
        )
        ctx.save_for_backward(*inputs)  # autograd then notices in-place edits between forward and backward
        ctx.settings = (width, height, eps2d)
        ctx.radii = radii
        radii_t = torch.from_numpy(radii)
        ctx.mark_non_differentiable(radii_t)
        return torch.from_numpy(means2d), torch.from_numpy(conics), torch.from_numpy(depths), radii_t

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii):
        C, N = ctx.radii.shape[:2]
        width, height, eps2d = ctx.settings
        want_view = ctx.needs_input_grad[3]
        v_means, v_quats, v_scales, v_view = _project.project_bwd(
            *[x.numpy() for x in ctx.saved_tensors], width, height, eps2d, ctx.radii,
            _np_or_zeros(v_means2d, (C, N, 2)), _np_or_zeros(v_conics, (C, N, 3)),
            _np_or_zeros(v_depths, (C, N)), want_view=want_view,
        )  # fmt: skip
        return (
            torch.from_numpy(v_means),
            torch.from_numpy(v_quats),
            torch.from_numpy(v_scales),
            torch.from_numpy(v_view) if want_view else None,
        ) + (None,) * 6


class ShColors(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coeffs, means, campos, radii, degree):
        inputs = [x.detach().float().contiguous() for x in (coeffs, means, campos)]
        radii_np = radii.contiguous().numpy()
        coeffs_np, means_np, campos_np = (x.numpy() for x in inputs)
        colors = _sh.sh_fwd(coeffs_np, degree, means_np, campos_np, radii_np)
        ctx.save_for_backward(*inputs)
        ctx.radii, ctx.degree, ctx.colors = radii_np, degree, colors
        return torch.from_numpy(colors)

    @staticmethod
    def backward(ctx, v_colors):
        coeffs, means, campos = (x.numpy() for x in ctx.saved_tensors)
        want_dirs = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        v_coeffs, v_dirs = _sh.sh_bwd(
            coeffs, ctx.degree, means, campos, ctx.radii, ctx.colors, _np(v_colors), want_dirs=want_dirs
        )
        v_means = v_campos = None
        if want_dirs:
            v_dirs = torch.from_numpy(v_dirs)
            v_means = v_dirs.sum(0) if ctx.needs_input_grad[1] else None
            v_campos = -v_dirs.sum(1) if ctx.needs_input_grad[2] else None
        return torch.from_numpy(v_coeffs), v_means, v_campos, None, None


class Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, means2d, conics, colors, opacities, backgrounds, radii, depths, width, height, tile_size
    ):
        bg = None if backgrounds is None else _np(backgrounds)
        render, alpha, rctx = _raster.rasterize_to_pixels_fwd(
            _np(means2d), _np(conics), _np(colors), _np(opacities), radii.contiguous().numpy(), _np(depths),
            bg, width, height, tile_size,
        )  # fmt: skip
        ctx.rctx = rctx
        ctx.alpha = alpha
        ctx.has_bg = backgrounds is not None
        return torch.from_numpy(render), torch.from_numpy(alpha)

    @staticmethod
    def backward(ctx, v_render, v_alpha):
        C, H, W = ctx.alpha.shape
        D = ctx.rctx.shape[2]
        v_render_np = _np_or_zeros(v_render, (C, H, W, D))
        grads = _raster_bwd.rasterize_to_pixels_bwd(ctx.rctx, v_render_np, _np_or_zeros(v_alpha, (C, H, W)))
        v_means2d, v_conics, v_colors, v_opacities = (torch.from_numpy(g) for g in grads)
        v_bg = None
        if ctx.has_bg and ctx.needs_input_grad[4]:
            # render += T * background with T = 1 - alpha
            T = torch.from_numpy(1.0 - ctx.alpha)
            v_bg = (torch.from_numpy(v_render_np) * T[..., None]).sum((1, 2))
        return v_means2d, v_conics, v_colors, v_opacities, v_bg, None, None, None, None, None
