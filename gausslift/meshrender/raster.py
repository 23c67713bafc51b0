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

Work is split into horizontal bands of ``BAND`` rows; each band owns its pixels (``prange`` over bands,
no races) and visits the triangles binned to it, in index order.

Anti-aliasing: during the pass each pixel records whether any triangle touches its square (a conservative
test: each half-plane evaluated at the square's most inside corner). Candidate pixels are touched pixels
whose own centre or one of whose 8 neighbours' centres is uncovered; at those the k x k regular
subsamples ((x + (i + 0.5)/k, y + (j + 0.5)/k)) are tested against every triangle (union coverage, no
depth test) and alpha = covered fraction. Other pixels have alpha 1 if covered, else 0 (untouched).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

BAND = 8  # rows per band (the unit of parallel work)
_REC = 20  # per-triangle record: 3 edges (a, b, c), 1/z (a, b, c), edge radii (3), 1/z radius, ties (3), w


@njit(cache=True, inline="always")
def _tie(a, b):
    return 1.0 if (a > 0.0 or (a == 0.0 and b > 0.0)) else 0.0


@njit(cache=True, parallel=True, error_model="numpy")
def setup(P, F, K, Kinv, near, width, height, cull):
    """Per-triangle records [F, _REC] and inclusive pixel boxes [F, 4] (x0, x1, y0, y1; x0 > x1: skip)."""
    nf = F.shape[0]
    rec = np.zeros((nf, _REC))
    box = np.empty((nf, 4), dtype=np.int32)
    for t in prange(nf):
        box[t, 0] = 1
        box[t, 1] = 0
        box[t, 2] = 1
        box[t, 3] = 0
        i0, i1, i2 = F[t, 0], F[t, 1], F[t, 2]
        p = np.empty((3, 3))
        for k in range(3):
            p[0, k] = P[i0, k]
            p[1, k] = P[i1, k]
            p[2, k] = P[i2, k]
        # edge vectors c_i = P_j x P_k and the normal n = sum c_i
        c = np.empty((4, 3))
        for i in range(3):
            j = (i + 1) % 3
            k = (i + 2) % 3
            c[i, 0] = p[j, 1] * p[k, 2] - p[j, 2] * p[k, 1]
            c[i, 1] = p[j, 2] * p[k, 0] - p[j, 0] * p[k, 2]
            c[i, 2] = p[j, 0] * p[k, 1] - p[j, 1] * p[k, 0]
        e1x, e1y, e1z = p[1, 0] - p[0, 0], p[1, 1] - p[0, 1], p[1, 2] - p[0, 2]
        e2x, e2y, e2z = p[2, 0] - p[0, 0], p[2, 1] - p[0, 1], p[2, 2] - p[0, 2]
        c[3, 0] = e1y * e2z - e1z * e2y
        c[3, 1] = e1z * e2x - e1x * e2z
        c[3, 2] = e1x * e2y - e1y * e2x
        w = c[3, 0] * p[0, 0] + c[3, 1] * p[0, 1] + c[3, 2] * p[0, 2]
        if not (w != 0.0) or (cull and w > 0.0):
            continue  # degenerate / edge-on through the eye / back-facing and culled
        s = 1.0 if w > 0.0 else -1.0
        # screen bounding box of the part with z >= near
        umin, umax, vmin, vmax = np.inf, -np.inf, np.inf, -np.inf
        for i in range(3):
            j = (i + 1) % 3
            zi, zj = p[i, 2], p[j, 2]
            for m in range(2):
                if m == 0:
                    if zi < near:
                        continue
                    x, y, z = p[i, 0], p[i, 1], zi
                else:
                    if (zi < near) == (zj < near):
                        continue
                    f = (near - zi) / (zj - zi)
                    x = p[i, 0] + f * (p[j, 0] - p[i, 0])
                    y = p[i, 1] + f * (p[j, 1] - p[i, 1])
                    z = near
                u = K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2]
                v = K[1, 1] * y / z + K[1, 2]
                umin = min(umin, u)
                umax = max(umax, u)
                vmin = min(vmin, v)
                vmax = max(vmax, v)
        if not (umin <= umax and vmin <= vmax):
            continue  # wholly behind the near plane
        eps = 1e-4
        x0 = max(umin - eps, 0.0)
        x1 = min(umax + eps, width - 1.0)
        y0 = max(vmin - eps, 0.0)
        y1 = min(vmax + eps, height - 1.0)
        if x0 > x1 or y0 > y1:
            continue
        box[t, 0] = int(math.floor(x0))
        box[t, 1] = int(math.floor(x1))
        box[t, 2] = int(math.floor(y0))
        box[t, 3] = int(math.floor(y1))
        # affine coefficients in (u, v): row of Kinv^T c (then oriented by s; 1/z divided by w)
        for i in range(4):
            g = s if i < 3 else 1.0 / w
            for r in range(3):
                rec[t, 3 * i + r] = g * (Kinv[0, r] * c[i, 0] + Kinv[1, r] * c[i, 1] + Kinv[2, r] * c[i, 2])
            rec[t, 12 + i] = 0.5 * (abs(rec[t, 3 * i]) + abs(rec[t, 3 * i + 1]))
        for i in range(3):
            rec[t, 16 + i] = _tie(rec[t, 3 * i], rec[t, 3 * i + 1])
        rec[t, 19] = w
    return rec, box


def bin_bands(box: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Counting-sort triangles into bands of BAND rows: (start [nb+1], triangle ids) in index order."""
    nb = (height + BAND - 1) // BAND
    valid = box[:, 0] <= box[:, 1]
    ids = np.nonzero(valid)[0].astype(np.int32)
    b0 = box[ids, 2] // BAND
    n = box[ids, 3] // BAND - b0 + 1
    total = int(n.sum())
    # each triangle repeated once per band it spans; stable sort by band keeps index order
    rep = np.repeat(ids, n)
    off = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    band = np.repeat(b0, n) + off
    order = np.argsort(band, kind="stable")
    start = np.zeros(nb + 1, dtype=np.int64)
    np.cumsum(np.bincount(band, minlength=nb), out=start[1:])
    return start, rep[order]


@njit(cache=True, inline="always")
def _inside(r, u, v):
    """(covered centre, touched square, 1/z) of triangle record r at (u, v)."""
    cov = True
    touch = True
    for i in range(3):
        e = r[3 * i] * u + r[3 * i + 1] * v + r[3 * i + 2]
        if e < -r[12 + i]:
            touch = False
            cov = False
            break
        if e < 0.0 or (e == 0.0 and r[16 + i] == 0.0):
            cov = False
    iz = r[9] * u + r[10] * v + r[11]
    return cov, touch, iz


@njit(cache=True, parallel=True, error_model="numpy")
def raster(rec, box, start, tris, inv_near, width, height, izbuf, idbuf, touched):
    """Z-buffer pass: nearest covering triangle per pixel centre, and the touched-square flags."""
    nb = start.shape[0] - 1
    for b in prange(nb):
        yb0 = b * BAND
        yb1 = min(height, yb0 + BAND) - 1
        for j in range(start[b], start[b + 1]):
            t = tris[j]
            a0, b0, c0 = rec[t, 0], rec[t, 1], rec[t, 2]
            a1, b1, c1 = rec[t, 3], rec[t, 4], rec[t, 5]
            a2, b2, c2 = rec[t, 6], rec[t, 7], rec[t, 8]
            aq, bq, cq = rec[t, 9], rec[t, 10], rec[t, 11]
            r0, r1, r2, rq = -rec[t, 12], -rec[t, 13], -rec[t, 14], inv_near + rec[t, 15]
            t0, t1, t2 = rec[t, 16] > 0.0, rec[t, 17] > 0.0, rec[t, 18] > 0.0
            x0, x1 = box[t, 0], box[t, 1]
            for y in range(max(box[t, 2], yb0), min(box[t, 3], yb1) + 1):
                v = y + 0.5
                for x in range(x0, x1 + 1):
                    u = x + 0.5
                    e0 = a0 * u + b0 * v + c0
                    e1 = a1 * u + b1 * v + c1
                    e2 = a2 * u + b2 * v + c2
                    iz = aq * u + bq * v + cq
                    if e0 >= r0 and e1 >= r1 and e2 >= r2 and iz <= rq:
                        touched[y, x] = True
                        if (
                            (e0 > 0.0 or (e0 == 0.0 and t0))
                            and (e1 > 0.0 or (e1 == 0.0 and t1))
                            and (e2 > 0.0 or (e2 == 0.0 and t2))
                            and iz <= inv_near
                            and iz > izbuf[y, x]
                        ):
                            izbuf[y, x] = iz
                            idbuf[y, x] = t


@njit(cache=True, parallel=True)
def candidates(idbuf, touched):
    """Touched pixels whose centre or one of whose 8 neighbours' centres is uncovered; and their SAT."""
    h, w = idbuf.shape
    cand = np.zeros((h, w), dtype=np.bool_)
    for y in prange(h):
        for x in range(w):
            if not touched[y, x]:
                continue
            full = idbuf[y, x] >= 0
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and idbuf[yy, xx] < 0:
                        full = False
            cand[y, x] = not full
    sat = np.zeros((h + 1, w + 1), dtype=np.int32)
    for y in range(h):
        acc = 0
        for x in range(w):
            acc += cand[y, x]
            sat[y + 1, x + 1] = sat[y, x + 1] + acc
    return cand, sat


@njit(cache=True, parallel=True, error_model="numpy")
def supersample(rec, box, start, tris, inv_near, cand, sat, k, cover):
    """OR each triangle's covered k x k subsamples into ``cover`` (uint64 bit masks) at candidate pixels."""
    height = cand.shape[0]
    nb = start.shape[0] - 1
    for b in prange(nb):
        yb0 = b * BAND
        yb1 = min(height, yb0 + BAND) - 1
        for j in range(start[b], start[b + 1]):
            t = tris[j]
            y0 = max(box[t, 2], yb0)
            y1 = min(box[t, 3], yb1)
            x0 = box[t, 0]
            x1 = box[t, 1]
            if y0 > y1 or sat[y1 + 1, x1 + 1] - sat[y0, x1 + 1] - sat[y1 + 1, x0] + sat[y0, x0] == 0:
                continue
            r = rec[t]
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    if not cand[y, x]:
                        continue
                    bits = cover[y, x]
                    for sj in range(k):
                        v = y + (sj + 0.5) / k
                        for si in range(k):
                            u = x + (si + 0.5) / k
                            cov, touch, iz = _inside(r, u, v)
                            if cov and iz <= inv_near:
                                bits |= np.uint64(1) << np.uint64(sj * k + si)
                    cover[y, x] = bits


@njit(cache=True, parallel=True, error_model="numpy")
def resolve(P, F, Kinv, rec, idbuf, cand, cover, k, depth, normals, bary, alpha):
    """Depth, oriented unit face normals, barycentrics and alpha per pixel from the winning ids."""
    h, w = idbuf.shape
    kk = k * k
    for y in prange(h):
        v = y + 0.5
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
            u = x + 0.5
            dx = Kinv[0, 0] * u + Kinv[0, 1] * v + Kinv[0, 2]
            dy = Kinv[1, 0] * u + Kinv[1, 1] * v + Kinv[1, 2]
            dz = Kinv[2, 0] * u + Kinv[2, 1] * v + Kinv[2, 2]
            i0, i1, i2 = F[t, 0], F[t, 1], F[t, 2]
            # barycentrics from the oriented edge functions (exactly the ones that decided coverage)
            r = rec[t]
            e0 = r[0] * u + r[1] * v + r[2]
            e1 = r[3] * u + r[4] * v + r[5]
            e2 = r[6] * u + r[7] * v + r[8]
            sm = e0 + e1 + e2
            bary[y, x, 0] = e0 / sm
            bary[y, x, 1] = e1 / sm
            bary[y, x, 2] = e2 / sm
            # hit point from the barycentrics; z is its camera z
            hz = (e0 * P[i0, 2] + e1 * P[i1, 2] + e2 * P[i2, 2]) / sm
            depth[y, x] = hz
            ax, ay, az = P[i1, 0] - P[i0, 0], P[i1, 1] - P[i0, 1], P[i1, 2] - P[i0, 2]
            bx, by, bz = P[i2, 0] - P[i0, 0], P[i2, 1] - P[i0, 1], P[i2, 2] - P[i0, 2]
            nx = ay * bz - az * by
            ny = az * bx - ax * bz
            nz = ax * by - ay * bx
            # face the camera: n . d < 0 (d points from the eye into the scene)
            g = 1.0 / math.sqrt(nx * nx + ny * ny + nz * nz)
            if nx * dx + ny * dy + nz * dz > 0.0:
                g = -g
            normals[y, x, 0] = nx * g
            normals[y, x, 1] = ny * g
            normals[y, x, 2] = nz * g
