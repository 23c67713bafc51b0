"""backend="gsplat": gsplat's CUDA `rasterization()` in classic, unpacked mode, meta mapped to ours.

gsplat is optional (``pip install gausslift[gsplat]``); this module imports it lazily. Differences from the
cpu/torch backends that remain: gsplat >= 1.x clamps alpha at 0.999 (ours: 0.99) and computes per-axis radii
with 3.33 sigma, tightened by opacity (ours: 3 sigma); both only matter where a Gaussian is nearly opaque or
at its faint rim. Inputs must be CUDA tensors; the caller (`rasterize`) checks that.
"""

from __future__ import annotations


def rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    sh_degree=None, backgrounds=None, render_mode="RGB", near_plane=0.01, far_plane=1e10, eps2d=0.3,
    tile_size=16,
):  # fmt: skip
    import gsplat

    renders, alphas, info = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, packed=False,
        tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode, rasterize_mode="classic",
    )  # fmt: skip
    # keeps everything gsplat's strategies read (means2d, radii, gaussian_ids, ...); `rasterize` then
    # describes culled Gaussians as the other backends do (gsplat leaves their depths/conics unwritten)
    return renders, alphas, dict(info)
