"""Numba kernels: EWA projection of 3D Gaussians (forward and analytic backward).

Same semantics as `_torch_project.project_torch` (gsplat classic mode). The kernels run in parallel over
Gaussians (prange) and loop over cameras inside; arithmetic is done in float64 registers and stored as
float32. The backward recomputes the forward quantities instead of storing them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from gausslift.render._torch_project import CLAMP_MARGIN, FOOTPRINT_SIGMAS

_N_CHUNKS = 64  # parallel work units (the backward keeps per-unit partial sums of the viewmat gradient)
_FAST = {"contract", "arcp", "nsz", "reassoc"}  # no nnan/ninf: culling must still see NaN/inf


@numba.njit(cache=True, inline="always")
def _world_cov(quats, scales, n):
    """Rotation R (row-major 9-tuple), normalised quaternion, 1/|q|, M = R diag(s), Sigma (6 unique)."""
    qw, qx, qy, qz = (
        np.float64(quats[n, 0]),
        np.float64(quats[n, 1]),
        np.float64(quats[n, 2]),
        np.float64(quats[n, 3]),
    )
    inv = 1.0 / math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    w, x, y, z = qw * inv, qx * inv, qy * inv, qz * inv
    R = (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )  # fmt: skip
    sx, sy, sz = np.float64(scales[n, 0]), np.float64(scales[n, 1]), np.float64(scales[n, 2])
    M = (R[0] * sx, R[1] * sy, R[2] * sz, R[3] * sx, R[4] * sy, R[5] * sz, R[6] * sx, R[7] * sy, R[8] * sz)
    S = (
        M[0] * M[0] + M[1] * M[1] + M[2] * M[2],
        M[0] * M[3] + M[1] * M[4] + M[2] * M[5],
        M[0] * M[6] + M[1] * M[7] + M[2] * M[8],
        M[3] * M[3] + M[4] * M[4] + M[5] * M[5],
        M[3] * M[6] + M[4] * M[7] + M[5] * M[8],
        M[6] * M[6] + M[7] * M[7] + M[8] * M[8],
    )  # S00, S01, S02, S11, S12, S22
    return R, M, S, (w, x, y, z), inv


def camera_table(viewmats, Ks, width, height):
    """Per-camera constants [C, 20] float64: R (9), t (3), fx, fy, cx, cy, clamp limits lo/hi x, lo/hi y."""
    V = viewmats.astype(np.float64)
    K = Ks.astype(np.float64)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lims = [
        -(cx / fx + CLAMP_MARGIN * tan_x),
        (width - cx) / fx + CLAMP_MARGIN * tan_x,
        -(cy / fy + CLAMP_MARGIN * tan_y),
        (height - cy) / fy + CLAMP_MARGIN * tan_y,
    ]
    cols = [V[:, :3, :3].reshape(-1, 9), V[:, :3, 3], np.stack([fx, fy, cx, cy] + lims, axis=1)]
    return np.ascontiguousarray(np.concatenate(cols, axis=1))


@numba.njit(cache=True, inline="always")
def _camera(cams, ci, mx, my, mz):
    """Rotation (9-tuple), camera-space mean and (fx, fy, cx, cy, lo_x, hi_x, lo_y, hi_y) of camera ci."""
    cm = cams[ci]
    W = (cm[0], cm[1], cm[2], cm[3], cm[4], cm[5], cm[6], cm[7], cm[8])
    px = W[0] * mx + W[1] * my + W[2] * mz + cm[9]
    py = W[3] * mx + W[4] * my + W[5] * mz + cm[10]
    pz = W[6] * mx + W[7] * my + W[8] * mz + cm[11]
    K = (cm[12], cm[13], cm[14], cm[15], cm[16], cm[17], cm[18], cm[19])
    return W, px, py, pz, K


@numba.njit(cache=True, inline="always")
def _jacobian(px, py, z, K):
    """Clamped EWA Jacobian entries J00, J02, J11, J12, the clamped x/z, y/z and whether they were clamped."""
    fx, fy, _, _, lo_x, hi_x, lo_y, hi_y = K
    iz = 1.0 / z
    u = px * iz
    v = py * iz
    clamp_x = u < lo_x or u > hi_x
    clamp_y = v < lo_y or v > hi_y
    u = min(max(u, lo_x), hi_x)
    v = min(max(v, lo_y), hi_y)
    return fx * iz, -fx * u * iz, fy * iz, -fy * v * iz, u, v, clamp_x, clamp_y


@numba.njit(cache=True, inline="always")
def _cov2d(J00, J02, J11, J12, W, S, eps2d):
    """T = J W (rows T0, T1), TS = T Sigma (rows), and the 2D covariance [[a, b], [b, c]] + eps2d I."""
    T0 = (J00 * W[0] + J02 * W[6], J00 * W[1] + J02 * W[7], J00 * W[2] + J02 * W[8])
    T1 = (J11 * W[3] + J12 * W[6], J11 * W[4] + J12 * W[7], J11 * W[5] + J12 * W[8])
    S00, S01, S02, S11, S12, S22 = S
    TS0 = (
        T0[0] * S00 + T0[1] * S01 + T0[2] * S02,
        T0[0] * S01 + T0[1] * S11 + T0[2] * S12,
        T0[0] * S02 + T0[1] * S12 + T0[2] * S22,
    )
    TS1 = (
        T1[0] * S00 + T1[1] * S01 + T1[2] * S02,
        T1[0] * S01 + T1[1] * S11 + T1[2] * S12,
        T1[0] * S02 + T1[1] * S12 + T1[2] * S22,
    )
    a = TS0[0] * T0[0] + TS0[1] * T0[1] + TS0[2] * T0[2] + eps2d
    b = TS0[0] * T1[0] + TS0[1] * T1[1] + TS0[2] * T1[2]
    c = TS1[0] * T1[0] + TS1[1] * T1[1] + TS1[2] * T1[2] + eps2d
    return T0, T1, TS0, TS1, a, b, c


@numba.njit(parallel=True, cache=True)
def project_fwd_kernel(
    means, quats, scales, cams, width, height, eps2d, near, far, means2d, conics, depths, radii
):
    N = means.shape[0]
    per = (N + _N_CHUNKS - 1) // _N_CHUNKS
    for chunk in numba.prange(_N_CHUNKS):
        _fwd_range(chunk * per, min(N, (chunk + 1) * per), means, quats, scales, cams, width, height, eps2d,
                   near, far, means2d, conics, depths, radii)  # fmt: skip


@numba.njit(cache=True, inline="always")
def _invisible(conics, radii, ci, n):
    """Mark Gaussian n invisible in camera ci (zero conic, zero radii)."""
    conics[ci, n, 0] = 0.0
    conics[ci, n, 1] = 0.0
    conics[ci, n, 2] = 0.0
    radii[ci, n, 0] = 0
    radii[ci, n, 1] = 0


# The per-range bodies are serial functions so that the small helpers can be inlined into them (inlining
# them into the prange loop itself trips numba's parfor array analysis).
@numba.njit(cache=True, fastmath=_FAST)
def _fwd_range(n0, n1, means, quats, scales, cams, width, height, eps2d, near, far, means2d, conics, depths,
               radii):  # fmt: skip
    C = cams.shape[0]
    for n in range(n0, n1):
        _, _, S, _, _ = _world_cov(quats, scales, n)
        mx, my, mz = np.float64(means[n, 0]), np.float64(means[n, 1]), np.float64(means[n, 2])
        for ci in range(C):
            W, px, py, z, K = _camera(cams, ci, mx, my, mz)
            depths[ci, n] = z
            if not (z > near and z < far):
                means2d[ci, n, 0] = 0.0
                means2d[ci, n, 1] = 0.0
                _invisible(conics, radii, ci, n)
                continue
            J00, J02, J11, J12, _, _, _, _ = _jacobian(px, py, z, K)
            _, _, _, _, a, b, c = _cov2d(J00, J02, J11, J12, W, S, eps2d)
            mu = K[0] * px / z + K[2]
            mv = K[1] * py / z + K[3]
            means2d[ci, n, 0] = mu
            means2d[ci, n, 1] = mv
            det = a * c - b * b
            if not det > 0.0:
                _invisible(conics, radii, ci, n)
                continue
            conics[ci, n, 0] = c / det
            conics[ci, n, 1] = -b / det
            conics[ci, n, 2] = a / det
            # radius from the float32-rounded 2D covariance, as the torch reference computes it
            rx = math.ceil(FOOTPRINT_SIGMAS * math.sqrt(np.float32(a)))
            ry = math.ceil(FOOTPRINT_SIGMAS * math.sqrt(np.float32(c)))
            if mu + rx <= 0.0 or mu - rx >= width or mv + ry <= 0.0 or mv - ry >= height:
                rx = 0
                ry = 0
            radii[ci, n, 0] = rx
            radii[ci, n, 1] = ry


@numba.njit(parallel=True, cache=True)
def project_bwd_kernel(
    means, quats, scales, cams, eps2d, radii,
    v_means2d, v_conics, v_depths, v_means, v_quats, v_scales, v_view_parts, want_view,
):  # fmt: skip
    N = means.shape[0]
    n_chunks = v_view_parts.shape[0]
    per = (N + n_chunks - 1) // n_chunks
    for chunk in numba.prange(n_chunks):
        v_view_parts[chunk] = 0.0
        _bwd_range(
            chunk * per, min(N, (chunk + 1) * per), means, quats, scales, cams, eps2d, radii,
            v_means2d, v_conics, v_depths, v_means, v_quats, v_scales, v_view_parts[chunk], want_view,
        )  # fmt: skip


@numba.njit(cache=True, fastmath=_FAST)
def _bwd_range(n0, n1, means, quats, scales, cams, eps2d, radii, v_means2d, v_conics, v_depths, v_means,
               v_quats, v_scales, vview, want_view):  # fmt: skip
    C = cams.shape[0]
    GR = np.empty(9)
    for n in range(n0, n1):
        R, M, S, q, qinv = _world_cov(quats, scales, n)
        mx, my, mz = np.float64(means[n, 0]), np.float64(means[n, 1]), np.float64(means[n, 2])
        gs00 = gs01 = gs02 = gs11 = gs12 = gs22 = 0.0  # dL/dSigma (world), summed over cameras
        vmx = vmy = vmz = 0.0
        any_visible = False
        for ci in range(C):
            if radii[ci, n, 0] <= 0 or radii[ci, n, 1] <= 0:
                continue
            any_visible = True
            W, px, py, z, K = _camera(cams, ci, mx, my, mz)
            fx, fy = K[0], K[1]
            J00, J02, J11, J12, u, v, clx, cly = _jacobian(px, py, z, K)
            T0, T1, TS0, TS1, a, b, c = _cov2d(J00, J02, J11, J12, W, S, eps2d)
            det = a * c - b * b
            qa, qb, qc = c / det, -b / det, a / det  # Q = inverse 2D covariance
            ga, gb, gc = v_conics[ci, n, 0], 0.5 * v_conics[ci, n, 1], v_conics[ci, n, 2]
            # G2 = -Q G Q (symmetric 2x2)
            t00 = qa * ga + qb * gb
            t01 = qa * gb + qb * gc
            t10 = qb * ga + qc * gb
            t11 = qb * gb + qc * gc
            g00 = -(t00 * qa + t01 * qb)
            g01 = -(t00 * qb + t01 * qc)
            g11 = -(t10 * qb + t11 * qc)
            # dL/dSigma += T^T G2 T
            h0 = (g00 * T0[0] + g01 * T1[0], g00 * T0[1] + g01 * T1[1], g00 * T0[2] + g01 * T1[2])
            h1 = (g01 * T0[0] + g11 * T1[0], g01 * T0[1] + g11 * T1[1], g01 * T0[2] + g11 * T1[2])
            gs00 += T0[0] * h0[0] + T1[0] * h1[0]
            gs01 += T0[0] * h0[1] + T1[0] * h1[1]
            gs02 += T0[0] * h0[2] + T1[0] * h1[2]
            gs11 += T0[1] * h0[1] + T1[1] * h1[1]
            gs12 += T0[1] * h0[2] + T1[1] * h1[2]
            gs22 += T0[2] * h0[2] + T1[2] * h1[2]
            # dL/dT = 2 G2 T Sigma
            GT0 = (
                2.0 * (g00 * TS0[0] + g01 * TS1[0]),
                2.0 * (g00 * TS0[1] + g01 * TS1[1]),
                2.0 * (g00 * TS0[2] + g01 * TS1[2]),
            )
            GT1 = (
                2.0 * (g01 * TS0[0] + g11 * TS1[0]),
                2.0 * (g01 * TS0[1] + g11 * TS1[1]),
                2.0 * (g01 * TS0[2] + g11 * TS1[2]),
            )
            # T = J W: dL/dJ = GT W^T (entries J00, J02, J11, J12 only)
            gJ00 = GT0[0] * W[0] + GT0[1] * W[1] + GT0[2] * W[2]
            gJ02 = GT0[0] * W[6] + GT0[1] * W[7] + GT0[2] * W[8]
            gJ11 = GT1[0] * W[3] + GT1[1] * W[4] + GT1[2] * W[5]
            gJ12 = GT1[0] * W[6] + GT1[1] * W[7] + GT1[2] * W[8]
            iz = 1.0 / z
            iz2 = iz * iz
            vmu, vmv = v_means2d[ci, n, 0], v_means2d[ci, n, 1]
            vpx = vmu * fx * iz
            vpy = vmv * fy * iz
            vz = -(vmu * fx * px + vmv * fy * py) * iz2 + v_depths[ci, n]
            vz += -(gJ00 * fx + gJ11 * fy) * iz2
            if clx:
                vz += gJ02 * fx * u * iz2
            else:
                vpx += -gJ02 * fx * iz2
                vz += 2.0 * gJ02 * fx * px * iz2 * iz
            if cly:
                vz += gJ12 * fy * v * iz2
            else:
                vpy += -gJ12 * fy * iz2
                vz += 2.0 * gJ12 * fy * py * iz2 * iz
            vmx += W[0] * vpx + W[3] * vpy + W[6] * vz
            vmy += W[1] * vpx + W[4] * vpy + W[7] * vz
            vmz += W[2] * vpx + W[5] * vpy + W[8] * vz
            if not want_view:
                continue
            # viewmat gradient: outer(v_p, mean) + J^T GT ; translation: v_p
            vp = (vpx, vpy, vz)
            for i in range(3):
                vview[ci, i, 0] += vp[i] * mx
                vview[ci, i, 1] += vp[i] * my
                vview[ci, i, 2] += vp[i] * mz
                vview[ci, i, 3] += vp[i]
            for j in range(3):
                vview[ci, 0, j] += J00 * GT0[j]
                vview[ci, 1, j] += J11 * GT1[j]
                vview[ci, 2, j] += J02 * GT0[j] + J12 * GT1[j]
        if not any_visible:
            for k in range(3):
                v_means[n, k] = 0.0
                v_scales[n, k] = 0.0
            for k in range(4):
                v_quats[n, k] = 0.0
            continue
        v_means[n, 0] = vmx
        v_means[n, 1] = vmy
        v_means[n, 2] = vmz
        # Sigma = M M^T: dL/dM = 2 GS M ; M = R diag(s) -> dL/ds_j, dL/dR = dL/dM diag(s)
        GS = (gs00, gs01, gs02, gs01, gs11, gs12, gs02, gs12, gs22)
        for j in range(3):
            vs = 0.0
            for i in range(3):
                gm = 2.0 * (GS[3 * i] * M[j] + GS[3 * i + 1] * M[3 + j] + GS[3 * i + 2] * M[6 + j])
                vs += gm * R[3 * i + j]
                GR[3 * i + j] = gm * scales[n, j]
            v_scales[n, j] = vs
        qw, qx, qy, qz = q
        vw = 2.0 * (-qz * GR[1] + qy * GR[2] + qz * GR[3] - qx * GR[5] - qy * GR[6] + qx * GR[7])
        vx = 2.0 * (
            qy * GR[1] + qz * GR[2] + qy * GR[3] - 2.0 * qx * GR[4] - qw * GR[5]
            + qz * GR[6] + qw * GR[7] - 2.0 * qx * GR[8]
        )  # fmt: skip
        vy = 2.0 * (
            -2.0 * qy * GR[0] + qx * GR[1] + qw * GR[2] + qx * GR[3] + qz * GR[5]
            - qw * GR[6] + qz * GR[7] - 2.0 * qy * GR[8]
        )  # fmt: skip
        vz_ = 2.0 * (
            -2.0 * qz * GR[0] - qw * GR[1] + qx * GR[2] + qw * GR[3] - 2.0 * qz * GR[4]
            + qy * GR[5] + qx * GR[6] + qy * GR[7]
        )  # fmt: skip
        dot = qw * vw + qx * vx + qy * vy + qz * vz_
        v_quats[n, 0] = (vw - qw * dot) * qinv
        v_quats[n, 1] = (vx - qx * dot) * qinv
        v_quats[n, 2] = (vy - qy * dot) * qinv
        v_quats[n, 3] = (vz_ - qz * dot) * qinv


def project_fwd(
    means, quats, scales, viewmats, Ks, width, height, eps2d=0.3, near_plane=0.01, far_plane=1e10
):
    """numpy float32 in -> (means2d [C,N,2], conics [C,N,3], depths [C,N], radii [C,N,2] int32)."""
    C, N = viewmats.shape[0], means.shape[0]
    means2d = np.empty((C, N, 2), np.float32)
    conics = np.empty((C, N, 3), np.float32)
    depths = np.empty((C, N), np.float32)
    radii = np.empty((C, N, 2), np.int32)
    cams = camera_table(viewmats, Ks, width, height)
    project_fwd_kernel(
        means, quats, scales, cams, float(width), float(height), float(eps2d),
        float(near_plane), float(far_plane), means2d, conics, depths, radii,
    )  # fmt: skip
    return means2d, conics, depths, radii


def project_bwd(
    means, quats, scales, viewmats, Ks, width, height, eps2d, radii, v_means2d, v_conics, v_depths,
    want_view=True,
):  # fmt: skip
    """Vector-Jacobian product of `project_fwd` -> (v_means, v_quats, v_scales, v_viewmats [C,4,4] or None).

    Gaussians culled in every camera get zero gradients; Ks get none.
    """
    C, N = viewmats.shape[0], means.shape[0]
    v_means = np.empty((N, 3), np.float32)
    v_quats = np.empty((N, 4), np.float32)
    v_scales = np.empty((N, 3), np.float32)
    parts = np.empty((max(1, min(_N_CHUNKS, N)), C, 3, 4), np.float64)
    cams = camera_table(viewmats, Ks, width, height)
    project_bwd_kernel(
        means, quats, scales, cams, float(eps2d), radii,
        v_means2d, v_conics, v_depths, v_means, v_quats, v_scales, parts, bool(want_view),
    )  # fmt: skip
    if not want_view:
        return v_means, v_quats, v_scales, None
    v_view = np.zeros((C, 4, 4), np.float32)
    v_view[:, :3, :] = parts.sum(0)
    return v_means, v_quats, v_scales, v_view
