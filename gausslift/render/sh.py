"""Numba kernels: view-dependent colours from real spherical harmonics (degrees 0..3), fwd and bwd.

colour = max(sum_k B_k(d) c_k + 0.5, 0) with d = normalise(mean - camera centre); the basis is gsplat's
(see `_torch_project.sh_basis`). Culled Gaussians (radii == 0) get colour 0 and no gradient.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from gausslift.render._torch_project import SH_C0, SH_C1, SH_C2, SH_C3

_A2, _B2, _C2, _D2 = SH_C2
_A3, _B3, _C3, _D3, _E3, _F3 = SH_C3
_N_CHUNKS = 64  # parallel work units (scratch buffers are allocated once per unit)
_FAST = {"contract", "arcp", "nsz", "reassoc"}  # no nnan/ninf


@numba.njit(cache=True, inline="always")
def _basis(degree, x, y, z, B):
    """B[k] = k-th basis function at the unit direction (x, y, z), k < (degree+1)^2."""
    B[0] = SH_C0
    if degree < 1:
        return
    B[1] = -SH_C1 * y
    B[2] = SH_C1 * z
    B[3] = -SH_C1 * x
    if degree < 2:
        return
    B[4] = _A2 * x * y
    B[5] = -_A2 * y * z
    B[6] = _C2 * z * z - _D2
    B[7] = -_A2 * x * z
    B[8] = _B2 * (x * x - y * y)
    if degree < 3:
        return
    c1 = x * x - y * y
    s1 = 2.0 * x * y
    tc = -_C3 * z * z + _D3
    B[9] = -_A3 * (x * s1 + y * c1)
    B[10] = _B3 * z * s1
    B[11] = tc * y
    B[12] = z * (_E3 * z * z - _F3)
    B[13] = tc * x
    B[14] = _B3 * z * c1
    B[15] = -_A3 * (x * c1 - y * s1)


@numba.njit(cache=True, inline="always")
def _basis_grad(degree, x, y, z, S):
    """sum_k S[k] dB_k/d(x, y, z) (the direction is treated as unconstrained here)."""
    if degree < 1:
        return 0.0, 0.0, 0.0
    gx = -SH_C1 * S[3]
    gy = -SH_C1 * S[1]
    gz = SH_C1 * S[2]
    if degree < 2:
        return gx, gy, gz
    gx += _A2 * (y * S[4] - z * S[7]) + 2.0 * _B2 * x * S[8]
    gy += _A2 * (x * S[4] - z * S[5]) - 2.0 * _B2 * y * S[8]
    gz += -_A2 * (y * S[5] + x * S[7]) + 2.0 * _C2 * z * S[6]
    if degree < 3:
        return gx, gy, gz
    c1 = x * x - y * y
    tc = -_C3 * z * z + _D3
    gx += (
        -_A3 * (6.0 * x * y * S[9] + 3.0 * c1 * S[15]) + 2.0 * _B3 * z * (y * S[10] + x * S[14]) + tc * S[13]
    )
    gy += (
        -_A3 * (3.0 * c1 * S[9] - 6.0 * x * y * S[15]) + 2.0 * _B3 * z * (x * S[10] - y * S[14]) + tc * S[11]
    )
    gz += (
        2.0 * _B3 * x * y * S[10] - 2.0 * _C3 * z * (y * S[11] + x * S[13])
        + (3.0 * _E3 * z * z - _F3) * S[12] + _B3 * c1 * S[14]
    )  # fmt: skip
    return gx, gy, gz


@numba.njit(cache=True, inline="always")
def _unit_dir(means, campos, n, ci):
    dx = np.float64(means[n, 0]) - campos[ci, 0]
    dy = np.float64(means[n, 1]) - campos[ci, 1]
    dz = np.float64(means[n, 2]) - campos[ci, 2]
    norm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
    return dx / norm, dy / norm, dz / norm, norm


@numba.njit(cache=True, inline="always")
def _fwd_one(n, coeffs, degree, means, campos, radii, colors, B):
    nb = (degree + 1) * (degree + 1)
    for ci in range(colors.shape[0]):
        if radii[ci, n, 0] <= 0 or radii[ci, n, 1] <= 0:
            colors[ci, n, :] = 0.0
            continue
        x, y, z, _ = _unit_dir(means, campos, n, ci)
        _basis(degree, x, y, z, B)
        cc = ci if coeffs.shape[0] > 1 else 0
        for ch in range(3):
            acc = 0.5
            for k in range(nb):
                acc += B[k] * coeffs[cc, n, k, ch]
            colors[ci, n, ch] = max(acc, 0.0)


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def sh_fwd_kernel(coeffs, degree, means, campos, radii, colors):
    """coeffs [Cc,N,K,3] with Cc in {1, C}; colors [C,N,3] out."""
    N = colors.shape[1]
    per = (N + _N_CHUNKS - 1) // _N_CHUNKS
    for chunk in numba.prange(_N_CHUNKS):
        B = np.empty(16)
        for n in range(chunk * per, min(N, (chunk + 1) * per)):
            _fwd_one(n, coeffs, degree, means, campos, radii, colors, B)


@numba.njit(cache=True, inline="always")
def _bwd_one(
    n, coeffs, degree, means, campos, radii, colors, v_colors, want_dirs, v_coeffs, v_dirs, B, S, acc
):
    nb = (degree + 1) * (degree + 1)
    C, Cc, K = colors.shape[0], coeffs.shape[0], coeffs.shape[2]
    accumulate = Cc == 1 and C > 1  # shared coefficients seen by several cameras
    if accumulate:
        acc[:nb, :] = 0.0
    for ci in range(C):
        cc = 0 if Cc == 1 else ci
        if radii[ci, n, 0] <= 0 or radii[ci, n, 1] <= 0:
            if want_dirs:
                v_dirs[ci, n, :] = 0.0
            if not accumulate:
                v_coeffs[cc, n, :nb, :] = 0.0
            continue
        x, y, z, norm = _unit_dir(means, campos, n, ci)
        _basis(degree, x, y, z, B)
        g0 = v_colors[ci, n, 0] if colors[ci, n, 0] > 0.0 else 0.0
        g1 = v_colors[ci, n, 1] if colors[ci, n, 1] > 0.0 else 0.0
        g2 = v_colors[ci, n, 2] if colors[ci, n, 2] > 0.0 else 0.0
        for k in range(nb):
            b = B[k]
            if accumulate:
                acc[k, 0] += b * g0
                acc[k, 1] += b * g1
                acc[k, 2] += b * g2
            else:
                v_coeffs[cc, n, k, 0] = b * g0
                v_coeffs[cc, n, k, 1] = b * g1
                v_coeffs[cc, n, k, 2] = b * g2
            if want_dirs:
                S[k] = g0 * coeffs[cc, n, k, 0] + g1 * coeffs[cc, n, k, 1] + g2 * coeffs[cc, n, k, 2]
        if want_dirs:
            vx, vy, vz = _basis_grad(degree, x, y, z, S)
            dot = x * vx + y * vy + z * vz  # through the normalisation d / |d|
            v_dirs[ci, n, 0] = (vx - x * dot) / norm
            v_dirs[ci, n, 1] = (vy - y * dot) / norm
            v_dirs[ci, n, 2] = (vz - z * dot) / norm
    if accumulate:
        for k in range(nb):
            for ch in range(3):
                v_coeffs[0, n, k, ch] = acc[k, ch]
    if nb < K:
        v_coeffs[:, n, nb:, :] = 0.0


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def sh_bwd_kernel(coeffs, degree, means, campos, radii, colors, v_colors, want_dirs, v_coeffs, v_dirs):
    """v_coeffs [Cc,N,K,3] (all written); v_dirs [C,N,3] = dL/d(mean - campos) when want_dirs."""
    N = colors.shape[1]
    per = (N + _N_CHUNKS - 1) // _N_CHUNKS
    for chunk in numba.prange(_N_CHUNKS):
        B = np.empty(16)
        S = np.empty(16)
        acc = np.empty((16, 3))
        for n in range(chunk * per, min(N, (chunk + 1) * per)):
            _bwd_one(
                n,
                coeffs,
                degree,
                means,
                campos,
                radii,
                colors,
                v_colors,
                want_dirs,
                v_coeffs,
                v_dirs,
                B,
                S,
                acc,
            )


def sh_fwd(coeffs, degree, means, campos, radii):
    """coeffs [N,K,3] or [C,N,K,3] float32; campos [C,3] -> colours [C,N,3] float32."""
    C, N = campos.shape[0], means.shape[0]
    colors = np.empty((C, N, 3), np.float32)
    c4 = coeffs if coeffs.ndim == 4 else coeffs[None]
    sh_fwd_kernel(c4, int(degree), means, campos.astype(np.float64), radii, colors)
    return colors


def sh_bwd(coeffs, degree, means, campos, radii, colors, v_colors, want_dirs=True):
    """-> (v_coeffs like coeffs, v_dirs [C,N,3] or None)."""
    C, N = campos.shape[0], means.shape[0]
    c4 = coeffs if coeffs.ndim == 4 else coeffs[None]
    v_coeffs = np.empty(c4.shape, np.float32)
    v_dirs = np.empty((C, N, 3) if want_dirs else (0, 0, 3), np.float32)
    sh_bwd_kernel(
        c4,
        int(degree),
        means,
        campos.astype(np.float64),
        radii,
        colors,
        v_colors,
        want_dirs,
        v_coeffs,
        v_dirs,
    )
    return v_coeffs.reshape(coeffs.shape), (v_dirs if want_dirs else None)
