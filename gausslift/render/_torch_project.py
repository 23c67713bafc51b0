"""Pure-PyTorch reference for Gaussian projection and SH colours (gsplat classic semantics).

Slow but readable; gradients come from torch autograd. The numba kernels in `project.py` and `sh.py`
are tested against these functions.

Conventions (see docs/architecture.md): OpenCV cameras, world-to-camera viewmats, K with pixel centres
at +0.5, quaternions wxyz (need not be unit), scales and opacities already activated.
"""

from __future__ import annotations

import torch

# gsplat's real spherical-harmonics constants (same basis order and signs as gsplat's CUDA kernels)
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, 0.5462742152960396, 0.9461746957575601, 0.3153915652525201)
SH_C3 = (
    0.5900435899266435,  # fC2/fS2 terms
    1.445305721320277,  # z * fC1/fS1 terms
    2.285228997322329,  # (.. z^2 - ..) * x/y terms
    0.4570457994644658,
    1.865881662950577,  # zonal term z * (a z^2 - b)
    1.119528997770346,
)
FOOTPRINT_SIGMAS = 3.0  # radius = ceil(3 sigma) per image axis
CLAMP_MARGIN = 0.3  # the Jacobian's x/z, y/z are clamped to the image edge + 0.3 tan(half fov)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[..., 4] wxyz (any norm) -> [..., 3, 3] rotation matrices."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space 3D covariances R S S^T R^T, [N, 3, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_torch(
    means, quats, scales, viewmats, Ks, width, height, eps2d=0.3, near_plane=0.01, far_plane=1e10
):
    """EWA projection of N Gaussians into C cameras.

    Returns means2d [C,N,2], conics [C,N,3] (inverse of the 2D covariance incl. eps2d, as (a, b, c) of
    [[a, b], [b, c]]), depths [C,N] (camera z) and radii [C,N,2] int32 (0 = culled).
    """
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # camera-space means
    cov_c = torch.einsum("cij,njk,clk->cnil", R, covariances(quats, scales), R)
    px, py, z = p.unbind(-1)
    valid = (z > near_plane) & (z < far_plane)
    zs = torch.where(valid, z, torch.ones_like(z))  # keeps culled Gaussians finite (zero gradient)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    u = torch.minimum(
        torch.maximum(px / zs, -(cx / fx + CLAMP_MARGIN * tan_x)), (width - cx) / fx + CLAMP_MARGIN * tan_x
    )
    v = torch.minimum(
        torch.maximum(py / zs, -(cy / fy + CLAMP_MARGIN * tan_y)), (height - cy) / fy + CLAMP_MARGIN * tan_y
    )
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * u / zs, zero, fy / zs, -fy * v / zs], dim=-1).reshape(
        p.shape[:2] + (2, 3)
    )
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    means2d = torch.stack([fx * px / zs + cx, fy * py / zs + cy], dim=-1)

    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)

    with torch.no_grad():
        rad = torch.ceil(FOOTPRINT_SIGMAS * torch.sqrt(torch.stack([a, c], dim=-1).clamp_min(0)))
        m = means2d.detach()
        inside = (
            (m[..., 0] + rad[..., 0] > 0)
            & (m[..., 0] - rad[..., 0] < width)
            & (m[..., 1] + rad[..., 1] > 0)
            & (m[..., 1] - rad[..., 1] < height)
        )
        keep = valid & inside & (rad > 0).all(-1)
        radii = torch.where(keep[..., None], rad, torch.zeros_like(rad)).to(torch.int32)
    return means2d, conics, z, radii


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis at unit directions [..., 3] -> [..., (degree+1)^2], gsplat's order and signs."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        a, b, c, d = SH_C2
        out += [a * x * y, -a * y * z, c * z * z - d, -a * x * z, b * (x * x - y * y)]
    if degree >= 3:
        a, b, c, d, e, f = SH_C3
        c1, s1 = x * x - y * y, 2 * x * y
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        tc = -c * z * z + d
        out += [-a * s2, b * z * s1, tc * y, z * (e * z * z - f), tc * x, b * z * c1, -a * c2]
    return torch.stack(out, dim=-1)


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """World-space camera centres [C, 3] from world-to-camera matrices (differentiable)."""
    return torch.linalg.inv(viewmats)[:, :3, 3]


def sh_colors_torch(coeffs, degree, means, campos, radii=None):
    """Colours [C,N,3] = max(SH(dir) + 0.5, 0) with dir = mean - camera centre.

    coeffs [N,K,3] or [C,N,K,3] with K >= (degree+1)^2 (extra coefficients are ignored);
    Gaussians with radii == 0 (culled) get colour 0, as gsplat.
    """
    dirs = means[None, :, :] - campos[:, None, :]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nb = (degree + 1) ** 2
    basis = sh_basis(degree, dirs)  # [C,N,nb]
    if coeffs.dim() == 3:
        coeffs = coeffs[None]
    colors = (basis[..., None] * coeffs[..., :nb, :]).sum(-2)
    colors = torch.clamp_min(colors + 0.5, 0.0)
    if radii is not None:
        colors = torch.where((radii > 0).all(-1)[..., None], colors, torch.zeros_like(colors))
    return colors
