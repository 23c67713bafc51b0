"""Numba z-buffer rasteriser for triangle meshes: exact ids, depth and barycentrics at pixel centres.

Homogeneous edge functions (no clipping into sub-triangles, no screen-space division): for camera-space
vertices P0, P1, P2 and the ray direction d(u, v) = K^-1 [u, v, 1] of the pixel centre (u, v), the ray
hits the triangle's plane at ``b_i = e_i / (n . d)`` with ``e_0 = (P1 x P2) . d``, ``e_1 = (P2 x P0) . d``,
``e_2 = (P0 x P1) . d`` and ``n = (P1 - P0) x (P2 - P0)``; the hit's camera z is ``w / (n . d)`` with
``w = n . P0``. Every e_i and ``1/z = (n . d) / w`` is affine in (u, v), so:

* the pixel centre is covered iff ``sign(w) e_i >= 0`` for all i (this also implies z > 0), and its
  ``b_i`` are the exact perspective-correct barycentrics of the ray-triangle hit;
* the z-buffer compares ``1/z`` (largest wins; exact ties keep the lower triangle index);
* near plane: a hit counts only if ``z >= near``, i.e. ``1/z <= 1/near``: triangles crossing the near
  plane are cut exactly there (their screen bounding box comes from the part with z >= near); triangles
  wholly in front of the near plane are unaffected, triangles wholly behind it are dropped.
* fill rule: a centre exactly on an edge (``e_i == 0``) belongs to the triangle for which the edge's
  oriented coefficient pair ``(a, b)`` of ``a u + b v + c`` is lexicographically positive. The shared
  edge of two triangles facing the same way gets exactly negated coefficients (the cross product and the
  K^-1 product are computed in the same order; IEEE rounding is symmetric), so exactly one of them takes
  the pixel: no cracks, no double coverage (a top-left rule for any orientation).

Speed: a first pass computes every triangle's pixel box (validity, culling and near-plane clipping
included) and the box of the pixel centres inside its bounding box (ICT at 512^2: a quarter of the
triangles hold no centre, more than half at 256^2; the z-buffer pass skips them before any edge
set-up); a counting sort bins the triangles into tiles of TILE_H x TILE_W pixels; tile rows are the
parallel unit (``prange``; each owns its pixels: no races) and visit their tiles left to right, so the
depth buffer stays in cache whatever the mesh order. Edge functions are recomputed in registers where
needed (only the box is stored per triangle). Per row of a triangle the pixel span is narrowed
analytically (with a margin) and every pixel of it gets the exact test. Exact depth ties go to the lower
triangle index, so the result does not depend on the visiting order.

Anti-aliasing (the candidate pixels and their k x k subsamples) is in ``gausslift.meshrender.aa``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_EPS_BOX = 1e-4  # pixel-box margin against rounding between projection and edge functions


@njit(cache=True)
def _corners(P, F, t):
    i0, i1, i2 = F[t, 0], F[t, 1], F[t, 2]
    return (P[i0, 0], P[i0, 1], P[i0, 2], P[i1, 0], P[i1, 1], P[i1, 2], P[i2, 0], P[i2, 1], P[i2, 2])


@njit(cache=True)
def _cross(ax, ay, az, bx, by, bz):
    return ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx


@njit(cache=True)
def _w(x0, y0, z0, x1, y1, z1, x2, y2, z2):
    """w = n . P0 with n = (P1 - P0) x (P2 - P0): sign(w) < 0 means front-facing."""
    nx, ny, nz = _cross(x1 - x0, y1 - y0, z1 - z0, x2 - x0, y2 - y0, z2 - z0)
    return nx * x0 + ny * y0 + nz * z0


@njit(cache=True)
def _lin(Kinv, g, cx, cy, cz):
    """Affine coefficients (a, b, c) in (u, v) of g * (cx, cy, cz) . K^-1 [u, v, 1]."""
    return (
        g * (Kinv[0, 0] * cx + Kinv[1, 0] * cy + Kinv[2, 0] * cz),
        g * (Kinv[0, 1] * cx + Kinv[1, 1] * cy + Kinv[2, 1] * cz),
        g * (Kinv[0, 2] * cx + Kinv[1, 2] * cy + Kinv[2, 2] * cz),
    )


@njit(cache=True)
def _coef(P, F, t, Kinv):
    """Oriented edge functions e_i = a_i u + b_i v + c_i (>= 0 inside) and 1/z = aq u + bq v + cq."""
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = _corners(P, F, t)
    w = _w(x0, y0, z0, x1, y1, z1, x2, y2, z2)
    s = 1.0 if w > 0.0 else -1.0
    c0 = _cross(x1, y1, z1, x2, y2, z2)
    c1 = _cross(x2, y2, z2, x0, y0, z0)
    c2 = _cross(x0, y0, z0, x1, y1, z1)
    e0 = _lin(Kinv, s, c0[0], c0[1], c0[2])
    e1 = _lin(Kinv, s, c1[0], c1[1], c1[2])
    e2 = _lin(Kinv, s, c2[0], c2[1], c2[2])
    q = _lin(Kinv, 1.0 / w, c0[0] + c1[0] + c2[0], c0[1] + c1[1] + c2[1], c0[2] + c1[2] + c2[2])
    return e0, e1, e2, q


@njit(cache=True)
def _tie(e):
    """Fill rule for a centre exactly on the edge: keep it iff (a, b) is lexicographically positive."""
    return e[0] > 0.0 or (e[0] == 0.0 and e[1] > 0.0)


@njit(cache=True)
def _rad(e):
    return 0.5 * (abs(e[0]) + abs(e[1]))


@njit(cache=True, error_model="numpy")
def project(P, K, near):
    """Pixel coordinates [V, 2] of the camera-space vertices with z >= near (others: NaN)."""
    uv = np.empty((P.shape[0], 2))
    for i in range(P.shape[0]):
        x, y, z = P[i, 0], P[i, 1], P[i, 2]
        if z >= near:
            uv[i, 0] = (K[0, 0] * x + K[0, 1] * y) / z + K[0, 2]
            uv[i, 1] = K[1, 1] * y / z + K[1, 2]
        else:
            uv[i, 0] = uv[i, 1] = np.nan
    return uv


@njit(cache=True, parallel=True, error_model="numpy")
def boxes(P, F, K, uv, near, width, height, cull):
    """Inclusive pixel boxes [F, 8] of the triangles' parts with z >= near, clipped to the image: columns
    0-3 (x0, x1, y0, y1), the pixels whose squares meet the projected bounding box (anti-aliasing);
    columns 4-7, the pixels whose *centres* lie in it (with the same margin), the only ones the triangle
    can cover (rasterisation; many triangles of a dense mesh seen small contain no centre at all).
    x0 > x1 marks a triangle to skip (degenerate, edge-on through the eye, culled, behind near, off
    screen; columns 4-7: no centre). ``uv``: ``project``."""
    nf = F.shape[0]
    box = np.empty((nf, 8), dtype=np.int32)
    for t in prange(nf):
        for c in range(4):
            box[t, 2 * c] = 1
            box[t, 2 * c + 1] = 0
        x0, y0, z0, x1, y1, z1, x2, y2, z2 = _corners(P, F, t)
        w = _w(x0, y0, z0, x1, y1, z1, x2, y2, z2)
        if not (w != 0.0) or (cull and w > 0.0):
            continue
        i0, i1, i2 = F[t, 0], F[t, 1], F[t, 2]
        if z0 >= near and z1 >= near and z2 >= near:
            umin = min(uv[i0, 0], min(uv[i1, 0], uv[i2, 0]))
            umax = max(uv[i0, 0], max(uv[i1, 0], uv[i2, 0]))
            vmin = min(uv[i0, 1], min(uv[i1, 1], uv[i2, 1]))
            vmax = max(uv[i0, 1], max(uv[i1, 1], uv[i2, 1]))
        else:
            umin, umax, vmin, vmax = _clipped_bounds(x0, y0, z0, x1, y1, z1, x2, y2, z2, K, near)
        if not (umin <= umax and vmin <= vmax):
            continue  # wholly behind the near plane
        # pixel x covers [x, x + 1): the pixels whose squares meet [umin, umax] x [vmin, vmax]
        if umax + _EPS_BOX < 0.0 or vmax + _EPS_BOX < 0.0:
            continue
        if umin - _EPS_BOX >= width or vmin - _EPS_BOX >= height:
            continue
        box[t, 0] = max(int(math.floor(max(umin - _EPS_BOX, -1.0))), 0)
        box[t, 1] = int(math.floor(min(umax + _EPS_BOX, width - 0.5)))
        box[t, 2] = max(int(math.floor(max(vmin - _EPS_BOX, -1.0))), 0)
        box[t, 3] = int(math.floor(min(vmax + _EPS_BOX, height - 0.5)))
        # centres x + 0.5 within [umin, umax] (widened by the margin), inside the square box
        box[t, 4] = max(int(math.ceil(max(umin - _EPS_BOX - 0.5, -1.0))), box[t, 0])
        box[t, 5] = min(int(math.floor(min(umax + _EPS_BOX - 0.5, width + 1.0))), box[t, 1])
        box[t, 6] = max(int(math.ceil(max(vmin - _EPS_BOX - 0.5, -1.0))), box[t, 2])
        box[t, 7] = min(int(math.floor(min(vmax + _EPS_BOX - 0.5, height + 1.0))), box[t, 3])
    return box


@njit(cache=True, error_model="numpy")
def _clipped_bounds(x0, y0, z0, x1, y1, z1, x2, y2, z2, K, near):
    """Screen bounds of the part of a triangle with z >= near (its corners and edge crossings)."""
    umin, umax, vmin, vmax = np.inf, -np.inf, np.inf, -np.inf
    for i in range(3):
        if i == 0:
            xa, ya, za, xb, yb, zb = x0, y0, z0, x1, y1, z1
        elif i == 1:
            xa, ya, za, xb, yb, zb = x1, y1, z1, x2, y2, z2
        else:
            xa, ya, za, xb, yb, zb = x2, y2, z2, x0, y0, z0
        for m in range(2):
            if m == 0:
                if za < near:
                    continue
                x, y, z = xa, ya, za
            else:  # where the edge crosses the near plane
                if (za < near) == (zb < near):
                    continue
                f = (near - za) / (zb - za)
                x, y, z = xa + f * (xb - xa), ya + f * (yb - ya), near
            u = (K[0, 0] * x + K[0, 1] * y) / z + K[0, 2]
            v = K[1, 1] * y / z + K[1, 2]
            umin, umax = min(umin, u), max(umax, u)
            vmin, vmax = min(vmin, v), max(vmax, v)
    return umin, umax, vmin, vmax


@njit(cache=True)
def _line(a, b, c, vmax):
    """Where a u + b v + c >= 0 on the row at v, as bounds on the pixel index x (u = x + 0.5):
    x >= lp + lq v (a > 0) or x <= rp + rq v (a < 0), widened by a margin far above rounding. Nearly
    horizontal lines give no bound (the exact per-pixel test then does the work)."""
    if abs(a) > 0.0 and abs(b) <= 1e6 * abs(a) and abs(c) <= 1e9 * abs(a):
        ia = -1.0 / a
        p = c * ia - 0.5
        q = b * ia
        m = 1e-9 * (abs(p) + abs(q) * vmax) + 1e-6
        if a > 0.0:
            return p - m, q, np.inf, 0.0
        return -np.inf, 0.0, p + m, q
    return -np.inf, 0.0, np.inf, 0.0


@njit(cache=True)
def _lines(e0, e1, e2, q, inv_near, vmax, grow):
    """Row bounds (``_line``) of the three edges and the near plane; ``grow`` = 1 widens each half-plane
    by its pixel radius (squares meeting the triangle instead of centres inside it)."""
    l0 = _line(e0[0], e0[1], e0[2] + grow * _rad(e0), vmax)
    l1 = _line(e1[0], e1[1], e1[2] + grow * _rad(e1), vmax)
    l2 = _line(e2[0], e2[1], e2[2] + grow * _rad(e2), vmax)
    l3 = _line(-q[0], -q[1], inv_near - q[2] + grow * _rad(q), vmax)
    return l0, l1, l2, l3


@njit(cache=True)
def _xrange(L, v, bx0, bx1):
    """Pixel index range [xs, xe] of a row (centre v) inside the box and all four row bounds."""
    l0, l1, l2, l3 = L
    lo = max(max(l0[0] + l0[1] * v, l1[0] + l1[1] * v), max(l2[0] + l2[1] * v, l3[0] + l3[1] * v))
    hi = min(min(l0[2] + l0[3] * v, l1[2] + l1[3] * v), min(l2[2] + l2[3] * v, l3[2] + l3[3] * v))
    xs = bx0 if lo <= bx0 else int(math.ceil(min(lo, bx1 + 1.0)))
    xe = bx1 if hi >= bx1 else int(math.floor(max(hi, bx0 - 1.0)))
    return xs, xe


TILE_H = 16  # rows of a tile row (the unit of parallel work)
TILE_W = 32  # columns of a tile (triangles are visited tile by tile, for cache locality)


@njit(cache=True)
def bin_tiles(box, width, height):
    """Counting sort of the triangles into tiles: each triangle goes into every tile row its box spans,
    in the tile column of its left edge. Returns (start [rows * cols + 1], triangle ids)."""
    cols = (width + TILE_W - 1) // TILE_W
    rows = (height + TILE_H - 1) // TILE_H
    count = np.zeros(rows * cols + 1, dtype=np.int64)
    for t in range(box.shape[0]):
        if box[t, 0] > box[t, 1]:
            continue
        c = box[t, 0] // TILE_W
        for r in range(box[t, 2] // TILE_H, box[t, 3] // TILE_H + 1):
            count[r * cols + c + 1] += 1
    for i in range(rows * cols):
        count[i + 1] += count[i]
    ids = np.empty(count[-1], dtype=np.int32)
    fill = count[:-1].copy()
    for t in range(box.shape[0]):
        if box[t, 0] > box[t, 1]:
            continue
        c = box[t, 0] // TILE_W
        for r in range(box[t, 2] // TILE_H, box[t, 3] // TILE_H + 1):
            ids[fill[r * cols + c]] = t
            fill[r * cols + c] += 1
    return count, ids


@njit(cache=True, parallel=True, error_model="numpy")
def raster(P, F, Kinv, box, start, ids, inv_near, izbuf, idbuf, hit):
    """Z-buffer pass: the nearest covering triangle per pixel centre; ``hit[t] = 1`` if triangle t
    covers any pixel centre (before the depth test).

    Per row, the pixel span is narrowed analytically from the four half-planes (with a margin), then
    every pixel of the span gets the exact test, so the result is that of testing the whole box."""
    height = idbuf.shape[0]
    cols = (idbuf.shape[1] + TILE_W - 1) // TILE_W
    for r in prange((height + TILE_H - 1) // TILE_H):
        yb0 = r * TILE_H
        yb1 = min(height, yb0 + TILE_H) - 1
        for j in range(start[r * cols], start[(r + 1) * cols]):
            t = ids[j]
            ya = max(box[t, 6], yb0)  # the centre box: only these centres can be covered
            yz = min(box[t, 7], yb1)
            bx0 = box[t, 4]
            bx1 = box[t, 5]
            if ya > yz or bx0 > bx1:
                continue
            e0, e1, e2, q = _coef(P, F, t, Kinv)
            a0, b0, c0 = e0
            a1, b1, c1 = e1
            a2, b2, c2 = e2
            aq, bq, cq = q
            t0, t1, t2 = _tie(e0), _tie(e1), _tie(e2)
            L = _lines(e0, e1, e2, q, inv_near, yz + 1.0, 0.0)
            any_hit = False
            for y in range(ya, yz + 1):
                v = y + 0.5
                xs, xe = _xrange(L, v, bx0, bx1)
                g0, g1, g2, gq = b0 * v + c0, b1 * v + c1, b2 * v + c2, bq * v + cq
                for x in range(xs, xe + 1):
                    u = x + 0.5
                    f0 = a0 * u + g0  # the same expression in every triangle: exact antisymmetry
                    f1 = a1 * u + g1
                    f2 = a2 * u + g2
                    iz = aq * u + gq
                    if (
                        (f0 > 0.0 or (f0 == 0.0 and t0))
                        and (f1 > 0.0 or (f1 == 0.0 and t1))
                        and (f2 > 0.0 or (f2 == 0.0 and t2))
                        and iz <= inv_near
                    ):
                        any_hit = True
                        old = izbuf[y, x]
                        if iz > old or (iz == old and t < idbuf[y, x]):
                            izbuf[y, x] = iz
                            idbuf[y, x] = t
            if any_hit:
                hit[t] = 1  # the same value from any band: a benign race


@njit(cache=True, parallel=True, error_model="numpy")
def resolve(P, F, Kinv, idbuf, cand, cover, k, depth, normals, bary, alpha):
    """Depth, oriented unit face normals, barycentrics and alpha per pixel from the winning ids."""
    h, w = idbuf.shape
    kk = k * k
    for y in prange(h):
        v = y + 0.5
        last = -1  # the previous pixel's triangle: its coefficients are reused
        e0 = e1 = e2 = (0.0, 0.0, 0.0)
        z0 = z1 = z2 = nx = ny = nz = 0.0
        for x in range(w):
            t = idbuf[y, x]
            if cand[y, x]:
                bits = cover[y, x]
                n = 0
                for i in range(kk):
                    n += (bits >> np.uint64(i)) & np.uint64(1)
                alpha[y, x] = n / kk
            elif t >= 0:
                alpha[y, x] = 1.0
            if t < 0:
                continue
            if t != last:
                last = t
                # the same oriented edge functions that decided coverage
                e0, e1, e2, _ = _coef(P, F, t, Kinv)
                x0, y0, z0, x1, y1, z1, x2, y2, z2 = _corners(P, F, t)
                nx, ny, nz = _cross(x1 - x0, y1 - y0, z1 - z0, x2 - x0, y2 - y0, z2 - z0)
                # unit, facing the camera: n . P0 < 0 (the eye is at the origin)
                g = 1.0 / math.sqrt(nx * nx + ny * ny + nz * nz)
                if nx * x0 + ny * y0 + nz * z0 > 0.0:
                    g = -g
                nx, ny, nz = nx * g, ny * g, nz * g
            u = x + 0.5
            f0 = e0[0] * u + e0[1] * v + e0[2]
            f1 = e1[0] * u + e1[1] * v + e1[2]
            f2 = e2[0] * u + e2[1] * v + e2[2]
            isum = 1.0 / (f0 + f1 + f2)
            b0, b1, b2 = f0 * isum, f1 * isum, f2 * isum
            bary[y, x, 0] = b0
            bary[y, x, 1] = b1
            bary[y, x, 2] = b2
            depth[y, x] = b0 * z0 + b1 * z1 + b2 * z2  # camera z of the hit point
            normals[y, x, 0] = nx
            normals[y, x, 1] = ny
            normals[y, x, 2] = nz
