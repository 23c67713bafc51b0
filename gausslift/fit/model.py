"""Rendering raw Gaussian parameters (the activations live here and nowhere else)."""

from __future__ import annotations

import torch

_rasterize = None  # tests may substitute a reference rasteriser


def rasterizer():
    if _rasterize is not None:
        return _rasterize
    from gausslift.render import rasterize

    return rasterize


def render_params(
    params: dict[str, torch.Tensor],
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    sh_degree: int,
    background: torch.Tensor,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Render C cameras ([C,4,4], [C,3,3]) on ``background`` [3]; returns ([C,H,W,3], [C,H,W,1], meta)."""
    geometry = (params["means"], params["quats"], params["scales"].exp())
    return render_geometry(geometry, params, viewmats, Ks, width, height, sh_degree, background, backend)


def render_geometry(
    geometry: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    params: dict[str, torch.Tensor],
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    sh_degree: int,
    background: torch.Tensor,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """As :func:`render_params` with the world (means, quats, linear scales) given (rigged Gaussians);
    opacities and SH colours still come from the raw ``params``."""
    means, quats, scales = geometry
    colors = torch.cat([params["sh0"], params["shN"]], dim=1)
    C = viewmats.shape[0]
    return rasterizer()(
        means,
        quats,
        scales,
        torch.sigmoid(params["opacities"]),
        colors,
        viewmats,
        Ks,
        width,
        height,
        sh_degree=sh_degree,
        backgrounds=background.reshape(1, 3).expand(C, 3).contiguous(),
        backend=backend,
    )
