"""Anti-aliased silhouettes for the numba rasteriser: candidate pixels, then k x k supersampling there.

Anti-aliasing: candidate pixels are those whose 3x3 neighbourhood holds both covered and uncovered
centres (the silhouette, one pixel either side), plus every uncovered pixel whose square meets a
triangle that covers no pixel centre at all (sub-pixel slivers; a conservative square test: each
half-plane evaluated at the square's most inside corner). At candidates the k x k regular subsamples
((x + (i + 0.5)/k, y + (j + 0.5)/k)) are tested against every triangle meeting the square (union
coverage, no depth test) and alpha = covered fraction; elsewhere alpha = 1 if the centre is covered,
else 0. Not seen: a gap narrower than the pixel spacing away from the silhouette, and parts of a thin
triangle farther than a pixel from any covered centre when the triangle covers some centre.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from gausslift.meshrender.raster import TILE_H, TILE_W, _coef, _lines, _rad, _tie, _xrange


@njit(cache=True, error_model="numpy")
def candidates(P, F, Kinv, box, inv_near, idbuf, hit):
    """AA candidate pixels and their summed-area table: pixels whose 3x3 neighbourhood holds both covered
    and uncovered centres, plus every uncovered pixel whose square meets a triangle that covers no centre."""
    h, w = idbuf.shape
    # counts of covered centres in 1x3 then 3x3 windows (clipped at the image border)
    row = np.empty((h, w), dtype=np.int32)
    for y in range(h):
        for x in range(w):
            n = idbuf[y, x] >= 0
            if x > 0:
                n += idbuf[y, x - 1] >= 0
            if x < w - 1:
                n += idbuf[y, x + 1] >= 0
            row[y, x] = n
    cand = np.zeros((h, w), dtype=np.bool_)
    for y in range(h):
        y0, y1 = max(y - 1, 0), min(y + 1, h - 1)
        ny = y1 - y0 + 1
        for x in range(w):
            nall = ny * (min(x + 1, w - 1) - max(x - 1, 0) + 1)
            nin = row[y0, x] + row[y1, x] + (row[y, x] if ny == 3 else 0)
            cand[y, x] = 0 < nin < nall
    for t in range(F.shape[0]):  # triangles that cover no centre: slivers and sub-pixel ones
        if hit[t] or box[t, 0] > box[t, 1]:
            continue
        empty = False  # only uncovered pixels can become candidates this way
        for y in range(box[t, 2], box[t, 3] + 1):
            for x in range(box[t, 0], box[t, 1] + 1):
                empty |= idbuf[y, x] < 0
        if not empty:
            continue
        e0, e1, e2, q = _coef(P, F, t, Kinv)
        r0, r1, r2, rq = _rad(e0), _rad(e1), _rad(e2), _rad(q)
        for y in range(box[t, 2], box[t, 3] + 1):
            v = y + 0.5
            for x in range(box[t, 0], box[t, 1] + 1):
                u = x + 0.5
                if idbuf[y, x] < 0 and (
                    e0[0] * u + e0[1] * v + e0[2] >= -r0
                    and e1[0] * u + e1[1] * v + e1[2] >= -r1
                    and e2[0] * u + e2[1] * v + e2[2] >= -r2
                    and q[0] * u + q[1] * v + q[2] <= inv_near + rq
                ):
                    cand[y, x] = True
    sat = np.zeros((h + 1, w + 1), dtype=np.int32)
    for y in range(h):
        acc = 0
        for x in range(w):
            acc += cand[y, x]
            sat[y + 1, x + 1] = sat[y, x + 1] + acc
    return cand, sat


@njit(cache=True, parallel=True, error_model="numpy")
def supersample(P, F, Kinv, box, start, ids, inv_near, cand, sat, k, cover):
    """OR each triangle's covered k x k subsamples into ``cover`` (uint64 bit masks) at candidate pixels."""
    height = cand.shape[0]
    cols = (cand.shape[1] + TILE_W - 1) // TILE_W
    full = np.uint64((1 << (k * k)) - 1) if k < 8 else ~np.uint64(0)
    for r in prange((height + TILE_H - 1) // TILE_H):
        yb0 = r * TILE_H
        yb1 = min(height, yb0 + TILE_H) - 1
        for j in range(start[r * cols], start[(r + 1) * cols]):
            t = ids[j]
            ya = max(box[t, 2], yb0)
            yz = min(box[t, 3], yb1)
            xa = box[t, 0]
            xz = box[t, 1]
            if ya > yz or xa > xz:
                continue
            if sat[yz + 1, xz + 1] - sat[ya, xz + 1] - sat[yz + 1, xa] + sat[ya, xa] == 0:
                continue
            e0, e1, e2, q = _coef(P, F, t, Kinv)
            a0, b0, c0 = e0
            a1, b1, c1 = e1
            a2, b2, c2 = e2
            aq, bq, cq = q
            t0, t1, t2 = _tie(e0), _tie(e1), _tie(e2)
            L = _lines(e0, e1, e2, q, inv_near, yz + 1.0, 1.0)  # squares meeting the triangle
            for y in range(ya, yz + 1):
                xs, xe = _xrange(L, y + 0.5, xa, xz)
                if xs > xe or sat[y + 1, xe + 1] - sat[y, xe + 1] - sat[y + 1, xs] + sat[y, xs] == 0:
                    continue
                for x in range(xs, xe + 1):
                    if not cand[y, x] or cover[y, x] == full:
                        continue
                    bits = cover[y, x]
                    for sj in range(k):
                        v = y + (sj + 0.5) / k
                        g0 = b0 * v + c0
                        g1 = b1 * v + c1
                        g2 = b2 * v + c2
                        gq = bq * v + cq
                        for si in range(k):
                            u = x + (si + 0.5) / k
                            f0 = a0 * u + g0
                            f1 = a1 * u + g1
                            f2 = a2 * u + g2
                            ok = (
                                ((f0 > 0.0) | ((f0 == 0.0) & t0))
                                & ((f1 > 0.0) | ((f1 == 0.0) & t1))
                                & ((f2 > 0.0) | ((f2 == 0.0) & t2))
                                & (aq * u + gq <= inv_near)
                            )
                            bits |= np.uint64(ok) << np.uint64(sj * k + si)
                    cover[y, x] = bits
