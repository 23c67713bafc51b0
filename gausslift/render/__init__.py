"""Differentiable Gaussian-splat rasteriser: numba on CPU, gsplat on CUDA, a PyTorch reference."""

from gausslift.render.api import ALPHA_MAX, BACKENDS, RENDER_MODES, rasterize

__all__ = ["ALPHA_MAX", "BACKENDS", "RENDER_MODES", "rasterize"]
