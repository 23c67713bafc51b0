"""Tile-based Gaussian compositing on the CPU (numba): forward and analytic backward, gsplat classic mode.

Per pixel (centre at ``(x + 0.5, y + 0.5)``), over the depth-sorted Gaussians of its tile:
``d = mean2d - centre``, ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` (conic ``(a, b, c)``),
skip ``sigma < 0``, ``alpha = min(ALPHA_MAX, opacity exp(-sigma))``, skip ``alpha < ALPHA_MIN``, stop
*before* compositing the Gaussian that would bring the transmittance to ``<= T_MIN``;
``render = sum c_i alpha_i T_i + T bg``, ``alpha = 1 - T``.

How it is fast (all exact w.r.t. the rule above):

* Gaussian-major order inside a tile: each Gaussian of the tile list visits only the pixels where
  ``sigma <= log(255 opacity)`` can hold (its alpha >= 1/255 ellipse: a row range, then an x range per row
  from the quadratic), widened by a margin and a pixel, so far pixels cost nothing and ``exp`` is skipped
  where ``sigma`` already says alpha < 1/255. Pixels keep their own T / done state, so the per-pixel order
  is the same depth order as the classic pixel-major loop.
* A tile stops when all of its pixels are done; the backward starts at the tile's last contributor.
* Per-Gaussian data is packed in one record (``mean, conic, opacity, sigma bound, row extent, colour``) so a
  tile-list entry costs one cache line.
* Tiles are ordered by list length (longest first) and dealt cyclically to the workers (``prange`` over
  workers), which balances the uneven tiles.
* The backward accumulates each Gaussian's gradient over its pixels in registers (Gaussian-major again), then
  adds it into the worker's own gradient buffer: no races; the buffers are summed at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from gausslift.render.tiles import bin_gaussians, tile_grid

ALPHA_MAX = np.float32(0.99)  # alpha clamp (gsplat uses 0.999 in newer versions; we follow the spec)
ALPHA_MIN = np.float32(1.0 / 255.0)  # Gaussians fainter than this at a pixel are skipped
T_MIN = np.float32(1e-4)  # a pixel stops before the Gaussian that would take T to <= T_MIN
SIGMA_MARGIN = np.float32(0.02)  # slack on the alpha >= 1/255 bound used only for culling

_F0 = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_REC = 8  # packed record: mx, my, a, b, c, opacity, sigma_max, y_extent, colours...


@njit(cache=True, parallel=True)
def _pack(means2d, conics, colors, opacities):
    """[CN, 8 + D] records. sigma_max < 0 marks a Gaussian that can never reach alpha >= 1/255 (or is not
    finite); y_extent < 0 marks a conic that is not positive definite (then whole tiles are scanned)."""
    CN, D = colors.shape
    P = np.empty((CN, _REC + D), np.float32)
    for g in prange(CN):
        mx = means2d[g, 0]
        my = means2d[g, 1]
        a = conics[g, 0]
        b = conics[g, 1]
        c = conics[g, 2]
        o = opacities[g]
        P[g, 0] = mx
        P[g, 1] = my
        P[g, 2] = a
        P[g, 3] = b
        P[g, 4] = c
        P[g, 5] = o
        ok = np.isfinite(mx) and np.isfinite(my) and np.isfinite(a) and np.isfinite(b) and np.isfinite(c)
        tmax = np.float32(-1.0)
        if ok and o * np.float32(255.0) >= _ONE:
            tmax = np.float32(math.log(o * np.float32(255.0))) + SIGMA_MARGIN
        ey = np.float32(-1.0)
        det = a * c - b * b
        if tmax >= 0 and a > 0 and det > 0:
            ey = np.float32(math.sqrt(_TWO * tmax * a / det))
            if not np.isfinite(ey):
                ey = np.float32(-1.0)
        P[g, 6] = tmax
        P[g, 7] = ey
        for d in range(D):
            P[g, _REC + d] = colors[g, d]
    return P


@njit(cache=True, inline="always")
def _rows(y0, y1, my, ey):
    """Pixel rows [lo, hi] of the tile (rows y0 .. y1-1) that the Gaussian can reach."""
    if ey < 0:
        return y0, y1 - 1
    lo = max(np.float32(y0), np.floor(my - ey - _HALF))
    hi = min(np.float32(y1 - 1), np.ceil(my + ey - _HALF))
    if lo > hi:
        return 0, -1
    return int(lo), int(hi)


@njit(cache=True, inline="always")
def _cols(x0, x1, mx, dy, a, b, det, tmax, ey):
    """Pixel columns [lo, hi] of one row (dy = my - row centre) that the Gaussian can reach."""
    if ey < 0:
        return x0, x1 - 1
    disc = _TWO * a * tmax - det * dy * dy
    if disc < 0:
        return 0, -1
    hw = np.float32(math.sqrt(disc)) / a
    xc = mx + b * dy / a - _HALF
    lo = max(np.float32(x0), np.floor(xc - hw))
    hi = min(np.float32(x1 - 1), np.ceil(xc + hw))
    if lo > hi:
        return 0, -1
    return int(lo), int(hi)


@njit(cache=True, parallel=True)
def _forward(
    P, bg, tile_offsets, flat_ids, tile_order, width, height, ts, tiles_x, nw, render, alpha, T_out, last_out
):
    C, H, W, D = render.shape
    ntpc = (tile_offsets.size - 1) // C
    nt = tile_order.size
    for w in prange(nw):
        Tb = np.empty(ts * ts, np.float32)
        acc = np.empty(ts * ts * D, np.float32)
        done = np.empty(ts * ts, np.bool_)
        last = np.empty(ts * ts, np.int32)
        for k in range(w, nt, nw):
            t = tile_order[k]
            c = t // ntpc
            r = t - c * ntpc
            ty = r // tiles_x
            x0 = (r - ty * tiles_x) * ts
            y0 = ty * ts
            x1 = min(x0 + ts, width)
            y1 = min(y0 + ts, height)
            pw = x1 - x0
            npix = pw * (y1 - y0)
            for p in range(npix):
                Tb[p] = _ONE
                done[p] = False
                last[p] = -1
            for q in range(npix * D):
                acc[q] = _F0
            s0 = tile_offsets[t]
            ndone = 0
            for i in range(s0, tile_offsets[t + 1]):
                g = flat_ids[i]
                tmax = P[g, 6]
                if tmax < 0:
                    continue
                mx = P[g, 0]
                my = P[g, 1]
                a = P[g, 2]
                b = P[g, 3]
                cc = P[g, 4]
                o = P[g, 5]
                ey = P[g, 7]
                det = a * cc - b * b
                ylo, yhi = _rows(y0, y1, my, ey)
                for y in range(ylo, yhi + 1):
                    dy = my - (np.float32(y) + _HALF)
                    xlo, xhi = _cols(x0, x1, mx, dy, a, b, det, tmax, ey)
                    rb = (y - y0) * pw - x0
                    for x in range(xlo, xhi + 1):
                        p = rb + x
                        if done[p]:
                            continue
                        dx = mx - (np.float32(x) + _HALF)
                        sigma = _HALF * (a * dx * dx + cc * dy * dy) + b * dx * dy
                        if sigma < 0 or sigma > tmax:
                            continue
                        al = min(ALPHA_MAX, o * np.float32(math.exp(-sigma)))
                        if al < ALPHA_MIN:
                            continue
                        tp = Tb[p]
                        nT = tp * (_ONE - al)
                        if nT <= T_MIN:
                            done[p] = True
                            ndone += 1
                            continue
                        wgt = al * tp
                        for d in range(D):
                            acc[p * D + d] += wgt * P[g, _REC + d]
                        Tb[p] = nT
                        last[p] = i - s0
                if ndone >= npix:
                    break
            for p in range(npix):
                y = y0 + p // pw
                x = x0 + p % pw
                T = Tb[p]
                for d in range(D):
                    render[c, y, x, d] = acc[p * D + d] + T * bg[c, d]
                alpha[c, y, x] = _ONE - T
                T_out[c, y, x] = T
                last_out[c, y, x] = last[p]


@njit(cache=True, parallel=True)
def _backward(
    P,
    bg,
    tile_offsets,
    flat_ids,
    tile_order,
    width,
    height,
    ts,
    tiles_x,
    nw,
    T_out,
    last_out,
    v_render,
    v_alpha,
    grads,
):
    C, H, W, D = v_render.shape
    ntpc = (tile_offsets.size - 1) // C
    nt = tile_order.size
    for w in prange(nw):
        Tb = np.empty(ts * ts, np.float32)
        Q = np.empty(ts * ts, np.float32)
        last = np.empty(ts * ts, np.int32)
        vr = np.empty(ts * ts * D, np.float32)
        buf = np.empty(ts * ts * D, np.float32)
        vc = np.empty(D, np.float32)
        G = grads[w]
        for k in range(w, nt, nw):
            t = tile_order[k]
            c = t // ntpc
            r = t - c * ntpc
            ty = r // tiles_x
            x0 = (r - ty * tiles_x) * ts
            y0 = ty * ts
            x1 = min(x0 + ts, width)
            y1 = min(y0 + ts, height)
            pw = x1 - x0
            npix = pw * (y1 - y0)
            maxlast = -1
            for p in range(npix):
                y = y0 + p // pw
                x = x0 + p % pw
                T = T_out[c, y, x]
                Tb[p] = T
                lp = last_out[c, y, x]
                last[p] = lp
                maxlast = max(maxlast, lp)
                q = v_alpha[c, y, x]
                for d in range(D):
                    v = v_render[c, y, x, d]
                    vr[p * D + d] = v
                    buf[p * D + d] = _F0
                    q -= v * bg[c, d]
                Q[p] = T * q
            s0 = tile_offsets[t]
            for i in range(s0 + maxlast, s0 - 1, -1):
                g = flat_ids[i]
                tmax = P[g, 6]
                if tmax < 0:
                    continue
                li = i - s0
                mx = P[g, 0]
                my = P[g, 1]
                a = P[g, 2]
                b = P[g, 3]
                cc = P[g, 4]
                o = P[g, 5]
                ey = P[g, 7]
                det = a * cc - b * b
                gmx = gmy = ga = gb = gc = gop = _F0
                for d in range(D):
                    vc[d] = _F0
                hit = False
                ylo, yhi = _rows(y0, y1, my, ey)
                for y in range(ylo, yhi + 1):
                    dy = my - (np.float32(y) + _HALF)
                    xlo, xhi = _cols(x0, x1, mx, dy, a, b, det, tmax, ey)
                    rb = (y - y0) * pw - x0
                    for x in range(xlo, xhi + 1):
                        p = rb + x
                        if li > last[p]:
                            continue
                        dx = mx - (np.float32(x) + _HALF)
                        sigma = _HALF * (a * dx * dx + cc * dy * dy) + b * dx * dy
                        if sigma < 0 or sigma > tmax:
                            continue
                        vis = np.float32(math.exp(-sigma))
                        ar = o * vis
                        al = min(ALPHA_MAX, ar)
                        if al < ALPHA_MIN:
                            continue
                        hit = True
                        ra = _ONE / (_ONE - al)
                        T = Tb[p] * ra
                        Tb[p] = T
                        fac = al * T
                        va = Q[p] * ra
                        for d in range(D):
                            v = vr[p * D + d]
                            cd = P[g, _REC + d]
                            vc[d] += fac * v
                            va += v * (cd * T - buf[p * D + d] * ra)
                            buf[p * D + d] += cd * fac
                        if ar <= ALPHA_MAX:
                            vs = -ar * va
                            gop += vis * va
                            ga += _HALF * vs * dx * dx
                            gb += vs * dx * dy
                            gc += _HALF * vs * dy * dy
                            gmx += vs * (a * dx + b * dy)
                            gmy += vs * (b * dx + cc * dy)
                if hit:
                    G[g, 0] += gmx
                    G[g, 1] += gmy
                    G[g, 2] += ga
                    G[g, 3] += gb
                    G[g, 4] += gc
                    G[g, 5] += gop
                    for d in range(D):
                        G[g, 6 + d] += vc[d]


@njit(cache=True, parallel=True)
def _reduce(grads, v_means2d, v_conics, v_colors, v_opacities):
    nw, CN, K = grads.shape
    D = K - 6
    for g in prange(CN):
        s = np.zeros(K, np.float32)
        for w in range(nw):
            for j in range(K):
                s[j] += grads[w, g, j]
        v_means2d[g, 0] = s[0]
        v_means2d[g, 1] = s[1]
        v_conics[g, 0] = s[2]
        v_conics[g, 1] = s[3]
        v_conics[g, 2] = s[4]
        v_opacities[g] = s[5]
        for d in range(D):
            v_colors[g, d] = s[6 + d]


@dataclass
class RasterContext:
    """What the backward needs from the forward (O(N + intersections + pixels))."""

    packed: np.ndarray
    backgrounds: np.ndarray
    tile_offsets: np.ndarray
    flat_ids: np.ndarray
    tile_order: np.ndarray
    T_final: np.ndarray
    last: np.ndarray
    shape: tuple  # (C, N, D, width, height, tile_size)


def _f32(x):
    return np.ascontiguousarray(x, dtype=np.float32)


def rasterize_to_pixels_fwd(
    means2d, conics, colors, opacities, radii, depths, backgrounds, width, height, tile_size=16
):
    """Composite projected Gaussians of C cameras. Returns (render [C,H,W,D], alpha [C,H,W], ctx)."""
    means2d, conics, colors, opacities, depths = map(_f32, (means2d, conics, colors, opacities, depths))
    radii = np.ascontiguousarray(radii, dtype=np.int32)
    C, N, D = colors.shape
    width, height, tile_size = int(width), int(height), int(tile_size)
    bg = np.zeros((C, D), np.float32) if backgrounds is None else _f32(np.broadcast_to(backgrounds, (C, D)))
    tile_offsets, flat_ids = bin_gaussians(means2d, radii, depths, width, height, tile_size)
    tiles_x, _ = tile_grid(width, height, tile_size)
    # longest tile lists first, dealt cyclically to the workers
    tile_order = np.argsort(-np.diff(tile_offsets), kind="stable").astype(np.int64)
    P = _pack(
        means2d.reshape(C * N, 2), conics.reshape(C * N, 3), colors.reshape(C * N, D), opacities.reshape(-1)
    )
    render = np.empty((C, height, width, D), np.float32)
    alpha = np.empty((C, height, width), np.float32)
    T_final = np.empty((C, height, width), np.float32)
    last = np.empty((C, height, width), np.int32)
    nw = numba.get_num_threads()
    if tile_order.size:
        _forward(P, bg, tile_offsets, flat_ids, tile_order, width, height, tile_size, tiles_x, nw,
                 render, alpha, T_final, last)  # fmt: skip
    ctx = RasterContext(P, bg, tile_offsets, flat_ids, tile_order, T_final, last,
                        (C, N, D, width, height, tile_size))  # fmt: skip
    return render, alpha, ctx


def rasterize_to_pixels_bwd(ctx: RasterContext, v_render, v_alpha):
    """Gradients (v_means2d [C,N,2], v_conics [C,N,3], v_colors [C,N,D], v_opacities [C,N])."""
    C, N, D, width, height, tile_size = ctx.shape
    v_render = _f32(v_render).reshape(C, height, width, D)
    v_alpha = _f32(v_alpha).reshape(C, height, width)
    tiles_x, _ = tile_grid(width, height, tile_size)
    nw = numba.get_num_threads()
    grads = np.zeros((nw, C * N, 6 + D), np.float32)
    if ctx.tile_order.size and ctx.flat_ids.size:
        _backward(ctx.packed, ctx.backgrounds, ctx.tile_offsets, ctx.flat_ids, ctx.tile_order, width, height,
                  tile_size, tiles_x, nw, ctx.T_final, ctx.last, v_render, v_alpha, grads)  # fmt: skip
    v_means2d = np.empty((C, N, 2), np.float32)
    v_conics = np.empty((C, N, 3), np.float32)
    v_colors = np.empty((C, N, D), np.float32)
    v_opacities = np.empty((C, N), np.float32)
    _reduce(grads, v_means2d.reshape(C * N, 2), v_conics.reshape(C * N, 3), v_colors.reshape(C * N, D),
            v_opacities.reshape(C * N))  # fmt: skip
    return v_means2d, v_conics, v_colors, v_opacities
