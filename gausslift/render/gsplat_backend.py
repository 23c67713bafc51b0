"""backend="gsplat": gsplat's CUDA `rasterization()` in classic, unpacked mode, meta mapped to ours.

gsplat is optional (``pip install gausslift[gsplat]``); this module imports it lazily. Differences from the
cpu/torch backends that remain: gsplat >= 1.x clamps alpha at 0.999 (ours: 0.99) and computes per-axis radii
with 3.33 sigma (ours: 3 sigma); both only matter where a Gaussian is nearly opaque or at its faint rim.
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
    meta = dict(info)  # keeps everything gsplat's strategies read (means2d, radii, gaussian_ids, ...)
    radii = meta["radii"]
    meta["visible"] = (radii > 0).all(-1) if radii.dim() == 3 else radii > 0
    return renders, alphas, meta
