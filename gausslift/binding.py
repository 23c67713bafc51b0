"""Gaussians bound to the triangles of a posed mesh (GaussianAvatars, Qian et al. CVPR 2024).

Every Gaussian has a parent triangle ``binding[i]`` (an index into the *bound* faces, see
:func:`face_frames`). Its parameters are stored in the triangle's local frame:

* origin: the triangle's centroid ``c``;
* orientation ``R = [a0 | a1 | a2]`` (columns): ``a0`` along the edge v0->v1, ``a1`` the unit normal
  ``(v1-v0) x (v2-v0)``, ``a2 = a0 x a1`` (right-handed), exactly GaussianAvatars'
  ``compute_face_orientation``;
* a scale factor ``k = (|v1-v0| + |a2 . (v2-v0)|) / 2`` (mean of the edge length and the height).

World parameters of a frame::

    mean  = k R mu_local + c          quat = q(R) * q_local (wxyz, normalised)
    scale = k exp(log_s_local)

so a Gaussian follows its triangle exactly under any rigid motion, uniform scaling or non-rigid
deformation. Everything is differentiable: gradients flow to the local parameters and through the
vertices to whatever posed them (the subject's per-frame parameters when they are fine-tuned).

Densification keeps the parent (children inherit ``binding``). A split draws its offsets in the
*local* frame (local scales, local rotation) and adds them to the local mean, so in the world the
children are ``k R R_l diag(s_l) n`` away from the parent: the same Mahalanobis distance ``|n|``
inside the parent's world ellipsoid for large and small triangles. (GaussianAvatars draws them with
the *world* scales and adds them to the *local* mean, which multiplies the spread by ``k`` a second
time.) The regularisers are GaussianAvatars' ``lambda_xyz`` / ``lambda_scale`` terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------- rotations
def quat_to_rotmat(q: Tensor) -> Tensor:
    """wxyz (any norm) -> rotation [...,3,3]."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))  # fmt: skip


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Rotation [...,3,3] -> unit quaternion wxyz with w >= 0. Of the four candidate formulas the
    best-conditioned one (largest denominator) is used per element, so values and gradients are
    accurate everywhere."""
    m = R.reshape(R.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    tr = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22,
                      1 - m00 - m11 + m22], -1)
    r = torch.sqrt(tr.clamp_min(1e-12))  # 2 |q_i| for candidate i
    cands = torch.stack([
        torch.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1) / (2 * r[..., :1]),
        torch.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], -1) / (2 * r[..., 1:2]),
        torch.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m12 + m21], -1) / (2 * r[..., 2:3]),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, r[..., 3] ** 2], -1) / (2 * r[..., 3:4]),
    ], -2)  # [...,4,4]
    best = tr.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a*b of wxyz quaternions (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_conj(q: Tensor) -> Tensor:
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


# ---------------------------------------------------------------------------------- frames
def _safe_normalize(x: Tensor, eps: float = 1e-20) -> Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True).clamp_min(eps))


def face_frames(verts: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-face local frames of a (batched) mesh: ``verts`` [...,V,3], ``faces`` [F,3] ->
    centroids [...,F,3], rotations [...,F,3,3] (columns a0, a1 = normal, a2), scale k [...,F]."""
    v0, v1, v2 = (verts[..., faces[:, i], :] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    a0 = _safe_normalize(e1)
    a1 = _safe_normalize(torch.cross(a0, e2, dim=-1))
    a2 = torch.cross(a0, a1, dim=-1)  # = -normalize(a1 x a0), as GaussianAvatars
    R = torch.stack([a0, a1, a2], -1)
    s0 = torch.sqrt((e1 * e1).sum(-1).clamp_min(1e-20))
    s1 = (a2 * e2).sum(-1).abs()
    return (v0 + v1 + v2) / 3.0, R, (s0 + s1) / 2.0


def local_to_world(local: dict[str, Tensor], binding: Tensor, frames: tuple[Tensor, Tensor, Tensor],
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """World (means [N,3], quats wxyz [N,4] unit, scales [N,3] linear) of Gaussians with local
    ``means`` [N,3] (in units of k), ``quats`` [N,4] (raw wxyz) and ``scales`` [N,3] (log, units of
    k) bound to faces ``binding`` [N] of ``frames`` (from :func:`face_frames`, unbatched)."""
    c, R, k = frames
    Rb, kb = R[binding], k[binding][:, None]
    means = kb * (Rb @ local["means"][:, :, None])[..., 0] + c[binding]
    quats = quat_mul(rotmat_to_quat(Rb), F.normalize(local["quats"], dim=-1))
    return means, quats, local["scales"].exp() * kb


def world_to_local(means: Tensor, quats: Tensor, scales: Tensor, binding: Tensor,
                   frames: tuple[Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`local_to_world` (``scales`` linear in, log out)."""
    c, R, k = frames
    Rb, kb = R[binding], k[binding][:, None]
    mu = (Rb.transpose(-1, -2) @ (means - c[binding])[:, :, None])[..., 0] / kb
    q = quat_mul(quat_conj(rotmat_to_quat(Rb)), F.normalize(quats, dim=-1))
    return {"means": mu, "quats": q, "scales": torch.log(scales / kb)}


def init_local(binding: Tensor, scale: float = 0.5, dtype=torch.float32) -> dict[str, Tensor]:
    """Gaussians at their triangles' centroids, identity local rotation, isotropic local scale
    ``scale`` (in units of k), as GaussianAvatars initialises one Gaussian per face."""
    n = len(binding)
    quats = torch.zeros(n, 4, dtype=dtype)
    quats[:, 0] = 1
    return {"means": torch.zeros(n, 3, dtype=dtype), "quats": quats,
            "scales": torch.full((n, 3), float(torch.log(torch.tensor(scale))), dtype=dtype)}


# ---------------------------------------------------------------------------------- densification
def split_local(local: dict[str, Tensor], sel: Tensor, noise: Tensor, shrink: float = 1.6,
                ) -> dict[str, Tensor]:
    """Children of the selected Gaussians ``sel`` [M] for standard-normal ``noise`` [S,M,3] (S
    children each): offsets ``R_l diag(s_l) n`` drawn and added in the local frame; children's local
    log-scales ``log(s_l / shrink)``. Returns the children's ``means``/``quats``/``scales`` [S*M,...]
    (other per-Gaussian tensors are repeated by the caller; the binding stays the parent's)."""
    s = local["scales"][sel].exp()
    Rl = quat_to_rotmat(local["quats"][sel])
    offs = torch.einsum("mij,mj,smj->smi", Rl, s, noise)
    S = noise.shape[0]
    return {"means": (local["means"][sel][None] + offs).reshape(-1, 3),
            "quats": local["quats"][sel].repeat(S, 1),
            "scales": torch.log(s / shrink).repeat(S, 1)}


# ---------------------------------------------------------------------------------- regularisers
def position_reg(local_means: Tensor, threshold: float = 1.0) -> Tensor:
    """GaussianAvatars' ``lambda_xyz`` term (non-metric): mean of relu(|mu_local| - threshold), i.e.
    Gaussians may drift up to ``threshold`` k from their triangle's centroid for free."""
    return F.relu(local_means.norm(dim=-1) - threshold).mean()


def scale_reg(local_log_scales: Tensor, threshold: float = 0.6) -> Tensor:
    """GaussianAvatars' ``lambda_scale`` term (non-metric): mean over Gaussians of
    |relu(s_local - threshold)| (local scales in units of k)."""
    return F.relu(local_log_scales.exp() - threshold).norm(dim=-1).mean()
