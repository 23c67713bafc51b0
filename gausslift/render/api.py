"""`rasterize`: the one public entry point of the Gaussian rasteriser (gsplat `rasterization()` classic mode).

Backends: "cpu" (numba kernels wrapped in autograd Functions; tensors on another device are copied to the
CPU and renders/alphas back, differentiably; meta stays on the CPU), "torch" (pure-PyTorch reference,
slow), "gsplat" (gsplat's CUDA rasteriser, packed=False, classic), "auto" (gsplat when it imports and the
tensors are on CUDA, else cpu).

Semantics (all backends): EWA projection with eps2d added to the 2D covariance (no compensation); the
Jacobian's x/z and y/z clamped to the image edge + 0.3 tan(half fov) (= 1.3 tan(half fov) for a centred
principal point, gsplat's limits); Gaussians with camera z outside (near_plane, far_plane), with a footprint
fully off-screen or with opacity < 1/255 get radii 0; radii [C,N,2] are per-axis 3-sigma extents
ceil(3 sqrt(Sigma_xx)), ceil(3 sqrt(Sigma_yy)) of the 2D covariance (the bounding box of the 3-sigma ellipse,
never more than ceil(3 sqrt(largest eigenvalue)); recent gsplat uses the same per-axis form with 3.33);
alpha = min(ALPHA_MAX, opacity exp(-power)) with ALPHA_MAX = 0.99 (recent gsplat: 0.999); alpha < 1/255
skipped; front-to-back compositing stops before the transmittance falls to 1e-4.
"""

from __future__ import annotations

import torch

from gausslift.errors import InputError
from gausslift.render._torch_impl import rasterize_torch
from gausslift.render._torch_project import camera_centres
from gausslift.render.raster import ALPHA_MAX, ALPHA_MIN

ALPHA_MAX = float(ALPHA_MAX)  # 0.99, the alpha clamp (re-exported; gsplat >= 1.x uses 0.999)
ALPHA_MIN = float(ALPHA_MIN)  # 1/255
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "cpu", "torch", "gsplat")
TILE_SIZE = 16


def rasterize(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
    sh_degree=None, backgrounds=None, render_mode="RGB", near_plane=0.01, far_plane=1e10, eps2d=0.3,
    backend="auto",
):  # fmt: skip
    """Render N Gaussians into C cameras.

    means [N,3], quats [N,4] (wxyz, any norm), scales [N,3] and opacities [N] (activated), colors [N,D] or
    [C,N,D], or SH coefficients [N,K,3] / [C,N,K,3] with sh_degree in 0..3 (K >= (sh_degree+1)^2);
    viewmats [C,4,4] world-to-camera (OpenCV), Ks [C,3,3] (pixel centres at +0.5); backgrounds [C,ch].

    Returns (renders [C,H,W,ch], alphas [C,H,W,1], meta). meta: "means2d" [C,N,2] (a non-leaf of the graph:
    call ``meta["means2d"].retain_grad()`` before backward to read its gradient), "radii" [C,N,2] int32,
    "depths" [C,N], "conics" [C,N,3], "opacities" [C,N], "visible" [C,N] bool, "width", "height",
    "n_cameras", "tile_size", "gaussian_ids" / "camera_ids" (None: unpacked), "backend".

    Culled Gaussians (behind the near plane, off-screen, degenerate or below 1/255 opacity) are described
    the same way by every backend: radii 0 (both axes), visible False, depths 0 and conics 0 (gsplat
    does not write them). Their means2d values are unspecified (the graph node is kept as it is) and
    every gradient through them is 0.
    """
    C, N = _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                     backgrounds, render_mode, backend)  # fmt: skip
    backend = _resolve_backend(backend, means)
    kw = dict(sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, near_plane=near_plane,
              far_plane=far_plane, eps2d=eps2d)  # fmt: skip
    args = (means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height))
    if backend == "gsplat":
        from gausslift.render.gsplat_backend import rasterize_gsplat

        renders, alphas, meta = rasterize_gsplat(*args, tile_size=TILE_SIZE, **kw)
    elif backend == "torch":
        renders, alphas, meta = rasterize_torch(*args, tile_size=TILE_SIZE, **kw)
    elif means.device.type == "cpu":
        renders, alphas, meta = _rasterize_cpu(*args, **kw)
    else:  # cpu kernels on tensors from another device: differentiable copies there and back
        to_cpu = lambda t: t.cpu() if isinstance(t, torch.Tensor) else t
        kw["backgrounds"] = to_cpu(backgrounds)
        renders, alphas, meta = _rasterize_cpu(*map(to_cpu, args), **kw)
        # meta stays on the CPU: its means2d must be the tensor the renders were computed from
        renders, alphas = renders.to(means.device), alphas.to(means.device)
    _describe_culled(meta)
    meta.update(width=int(width), height=int(height), n_cameras=C, tile_size=TILE_SIZE, backend=backend)
    meta.setdefault("gaussian_ids", None)
    meta.setdefault("camera_ids", None)
    return renders, alphas, meta


def _describe_culled(meta: dict) -> None:
    """One description of culled Gaussians for all backends (see `rasterize`): per-axis radii, visible,
    zero depths and conics where not visible (meta values only; renders are unaffected)."""
    radii = meta["radii"]
    if radii.dim() == 2:  # gsplat < 1.5: one radius per Gaussian
        radii = torch.stack([radii, radii], dim=-1)
    radii = radii.to(torch.int32)
    visible = (radii > 0).all(-1)
    radii = radii * visible[..., None].to(radii.dtype)
    meta["radii"], meta["visible"] = radii, visible
    meta["depths"] = torch.where(visible, meta["depths"], torch.zeros_like(meta["depths"]))
    meta["conics"] = torch.where(visible[..., None], meta["conics"], torch.zeros_like(meta["conics"]))


def _gsplat_importable() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def _resolve_backend(backend, means) -> str:
    if backend == "auto":
        return "gsplat" if means.is_cuda and _gsplat_importable() else "cpu"
    if backend == "gsplat" and not (means.is_cuda and _gsplat_importable()):
        raise InputError(None, "backend='gsplat' needs the gsplat package and CUDA tensors")
    return backend


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
              render_mode, backend):  # fmt: skip
    def bad(problem):
        raise InputError(None, f"rasterize: {problem}")

    if backend not in BACKENDS:
        bad(f"backend must be one of {BACKENDS}, got {backend!r}")
    if render_mode not in RENDER_MODES:
        bad(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if means.dim() != 2 or means.shape[-1] != 3:
        bad(f"means must be [N,3], got {tuple(means.shape)}")
    N = means.shape[0]
    for name, t, shape in (
        ("quats", quats, (N, 4)),
        ("scales", scales, (N, 3)),
        ("opacities", opacities, (N,)),
    ):
        if tuple(t.shape) != shape:
            bad(f"{name} must be {list(shape)}, got {list(t.shape)}")
    if viewmats.dim() != 3 or tuple(viewmats.shape[1:]) != (4, 4):
        bad(f"viewmats must be [C,4,4], got {list(viewmats.shape)}")
    C = viewmats.shape[0]
    if tuple(Ks.shape) != (C, 3, 3):
        bad(f"Ks must be [{C},3,3] (one per viewmat), got {list(Ks.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        bad(f"width and height must be positive, got {width}x{height}")
    if sh_degree is None:
        if not (
            colors.dim() == 2 and colors.shape[0] == N or colors.dim() == 3 and colors.shape[:2] == (C, N)
        ):
            bad(f"colors must be [N,D] or [C,N,D] with N={N}, C={C}, got {list(colors.shape)}")
        ch = colors.shape[-1]
    else:
        if sh_degree not in (0, 1, 2, 3):
            bad(f"sh_degree must be None or 0..3, got {sh_degree!r}")
        lead = colors.shape[:-2]
        if colors.dim() not in (3, 4) or colors.shape[-1] != 3 or lead not in ((N,), (C, N)):
            bad(f"SH coefficients must be [N,K,3] or [C,N,K,3] with N={N}, C={C}, got {list(colors.shape)}")
        if colors.shape[-2] < (sh_degree + 1) ** 2:
            bad(
                f"sh_degree={sh_degree} needs K >= {(sh_degree + 1) ** 2} coefficients, "
                f"got {colors.shape[-2]}"
            )
        ch = 3
    if backgrounds is not None and render_mode not in ("D", "ED"):
        extra = 1 if "+" in render_mode else 0
        if (
            backgrounds.dim() != 2
            or backgrounds.shape[0] != C
            or backgrounds.shape[1] not in (ch, ch + extra)
        ):
            bad(f"backgrounds must be [C,{ch}], got {list(backgrounds.shape)}")
    return C, N


def _rasterize_cpu(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, sh_degree,
                   backgrounds, render_mode, near_plane, far_plane, eps2d):  # fmt: skip
    from gausslift.render.autograd import Project, Rasterize, ShColors

    C, N = viewmats.shape[0], means.shape[0]
    f32 = lambda t: None if t is None else t.float()
    means, quats, scales, opacities, colors, viewmats, Ks = map(
        f32, (means, quats, scales, opacities, colors, viewmats, Ks)
    )
    means2d, conics, depths, radii = Project.apply(
        means, quats, scales, viewmats, Ks, width, height, float(eps2d), float(near_plane), float(far_plane)
    )
    radii = radii * (opacities.detach() >= ALPHA_MIN).to(radii.dtype)[None, :, None]
    if render_mode in ("D", "ED"):
        feats = depths[..., None]
    else:
        if sh_degree is not None:
            feats = ShColors.apply(colors, means, camera_centres(viewmats), radii, int(sh_degree))
        else:
            feats = colors.expand(C, N, colors.shape[-1]) if colors.dim() == 2 else colors
        if "+" in render_mode:
            feats = torch.cat([feats, depths[..., None]], dim=-1)
    bg = None
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = f32(backgrounds)
        if bg.shape[-1] < feats.shape[-1]:
            bg = torch.cat([bg, bg.new_zeros(C, feats.shape[-1] - bg.shape[-1])], dim=-1)
    opac = opacities[None, :].expand(C, N)
    render, alpha = Rasterize.apply(means2d, conics, feats, opac, bg, radii, depths, width, height, TILE_SIZE)
    alpha = alpha[..., None]
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
