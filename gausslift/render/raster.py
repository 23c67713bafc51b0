"""Tile-based Gaussian compositing on the CPU (numba): forward and analytic backward, gsplat classic mode.

Per pixel (centre at ``(x + 0.5, y + 0.5)``), over the depth-sorted Gaussians of its tile:
``d = mean2d - centre``, ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` (conic ``(a, b, c)``),
skip ``sigma < 0``, ``alpha = min(ALPHA_MAX, opacity exp(-sigma))``, skip ``alpha < ALPHA_MIN``, stop
*before* compositing the Gaussian that would bring the transmittance to ``<= T_MIN``;
``render = sum c_i alpha_i T_i + T bg``, ``alpha = 1 - T``.

How it is fast (culling is conservative, so results are those of the rule above):

* Gaussian-major inside a tile, one tile row (16 pixels) at a time as a branch-free loop that LLVM turns
  into SIMD code (float32 lanes; exp is our own vectorisable Cephes-style exp, ~1-2 ulp). Each pixel keeps
  its own transmittance (a stopped pixel stores -T), so every pixel still sees its Gaussians in depth order.
* Tiles are assigned by that ellipse's bounding box where it is smaller than the 3-sigma radii (faint
  Gaussians: opacity below about 0.35), so faint Gaussians enter fewer tile lists.
* Only rows crossed by the Gaussian's alpha >= 1/255 ellipse (``sigma <= log(255 opacity)`` plus a margin:
  row range, then the chord on each row) are visited; Gaussians whose ellipse misses the tile's columns and
  Gaussians with opacity < 1/255 are skipped outright.
* Rows whose pixels have all stopped are skipped and a tile ends when all its pixels have stopped; the
  backward (in ``raster_bwd``) starts at the tile's last contributor and skips rows whose pixels
  stopped earlier.
* Per-Gaussian data is packed in one record (mean, conic, opacity, culling bounds, colour): one cache line
  per tile-list entry.
* Tiles are ordered by list length (longest first) and dealt cyclically to the workers (``prange`` over
  workers), which balances the uneven tiles.
* The backward accumulates per-lane partial gradients of the current Gaussian, sums them and adds them into
  the worker's own gradient buffer (no races); the buffers are summed at the end.
* Each SIMD loop stores to at most 4 arrays: beyond that LLVM gives up its runtime alias checks and the
  row runs scalar (measured 5x slower); ``error_model="numpy"`` keeps divisions free of exception branches.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from gausslift.render.tiles import bin_gaussians, tile_grid

ALPHA_MAX = np.float32(0.99)  # alpha clamp (gsplat uses 0.999 in newer versions; we follow the spec)
ALPHA_MIN = np.float32(1.0 / 255.0)  # Gaussians fainter than this at a pixel are skipped
T_MIN = np.float32(1e-4)  # a pixel stops before the Gaussian that would take T to <= T_MIN
SIGMA_MARGIN = np.float32(0.02)  # slack on the alpha >= 1/255 bound used only for culling
# bin each Gaussian into the tiles its alpha >= 1/255 ellipse reaches (as gsplat's opacity-aware radii),
# not all tiles of its 3-sigma box; same image and gradients (GAUSSLIFT_TIGHT_TILES=0: the 3-sigma box, for
# comparisons)
TIGHT_TILES = os.environ.get("GAUSSLIFT_TIGHT_TILES", "1") != "0"

_F0 = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_REC = 9  # packed record: mx, my, a, b, c, opacity, sigma_max, y_extent, x_extent, colours...
_SIG_CLAMP = np.float32(60.0)  # exp(-sigma) is evaluated at min(sigma, 60): alpha < 1/255 long before
# exp(-s) = 2^-k exp(r): ln2 split (Cody-Waite) and the Cephes expf polynomial coefficients
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_E0 = np.float32(5.0000001201e-1)
_E1 = np.float32(1.6666665459e-1)
_E2 = np.float32(4.1665795894e-2)
_E3 = np.float32(8.3334519073e-3)
_E4 = np.float32(1.3981999507e-3)
_E5 = np.float32(1.9875691500e-4)
_P1, _P2, _P4, _P8, _P16, _P32, _P64 = (np.float32(2.0**-n) for n in (1, 2, 4, 8, 16, 32, 64))


@njit(cache=True, error_model="numpy", parallel=True)
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
        ex = np.float32(-1.0)
        det = a * c - b * b
        if tmax >= 0 and a > 0 and c > 0 and det > 0:
            ey = np.float32(math.sqrt(_TWO * tmax * a / det))
            ex = np.float32(math.sqrt(_TWO * tmax * c / det))
            if not (np.isfinite(ey) and np.isfinite(ex)):
                ey = ex = np.float32(-1.0)
        P[g, 6] = tmax
        P[g, 7] = ey
        P[g, 8] = ex
        for d in range(D):
            P[g, _REC + d] = colors[g, d]
    return P


@njit(cache=True, inline="always", error_model="numpy")
def _exp_neg(s):
    """exp(-s) for s in [0, 87], branch-free so that rows vectorise (Cody-Waite reduction, Cephes expf
    polynomial, 2^-k from the bits of k); relative error ~2e-7."""
    k = np.int32(s * _LOG2E + _HALF)
    kf = np.float32(k)
    r = kf * _LN2_HI - s + kf * _LN2_LO  # -s + k ln2, in [-ln2/2, ln2/2]
    q = _E5 * r + _E4
    q = q * r + _E3
    q = q * r + _E2
    q = q * r + _E1
    q = q * r + _E0
    e = q * r * r + r + _ONE
    e = e * (_P1 if (k & 1) != 0 else _ONE)
    e = e * (_P2 if (k & 2) != 0 else _ONE)
    e = e * (_P4 if (k & 4) != 0 else _ONE)
    e = e * (_P8 if (k & 8) != 0 else _ONE)
    e = e * (_P16 if (k & 16) != 0 else _ONE)
    e = e * (_P32 if (k & 32) != 0 else _ONE)
    return e * (_P64 if (k & 64) != 0 else _ONE)


@njit(cache=True, inline="always", error_model="numpy")
def _sigma_clamped(sigma):
    s = sigma if sigma > _F0 else _F0
    return s if s < _SIG_CLAMP else _SIG_CLAMP


@njit(cache=True, inline="always", error_model="numpy")
def _rows(y0, y1, my, ey):
    """Pixel rows [lo, hi] of the tile (rows y0 .. y1-1) that the Gaussian can reach."""
    if ey < 0:
        return y0, y1 - 1
    lo = max(np.float32(y0), np.floor(my - ey - _HALF))
    hi = min(np.float32(y1 - 1), np.ceil(my + ey - _HALF))
    if lo > hi:
        return 0, -1
    return int(lo), int(hi)


@njit(cache=True, inline="always", error_model="numpy")
def _misses_columns(x0, x1, mx, ex):
    """True when the Gaussian's alpha >= 1/255 ellipse lies left or right of the columns x0 .. x1-1."""
    return ex >= 0 and (mx + ex < np.float32(x0) or mx - ex > np.float32(x1))


@njit(cache=True, inline="always", error_model="numpy")
def _row_misses(x0, x1, mx, dy, a, b, det, tmax, ex):
    """True when, on the pixel row at vertical offset dy = my - centre_y, the alpha >= 1/255 ellipse spans
    no pixel centre of the columns x0 .. x1-1 (its chord there is [xc - hw, xc + hw])."""
    if ex < 0:
        return False
    disc = _TWO * a * tmax - det * dy * dy
    if disc < 0:
        return True
    hw = np.float32(math.sqrt(disc)) / a
    xc = mx + b * dy / a
    return xc + hw < np.float32(x0) or xc - hw > np.float32(x1)


@njit(cache=True, inline="always", error_model="numpy")
def _tile_xy(t, ntpc, tiles_x, ts, width, height):
    c = t // ntpc
    r = t - c * ntpc
    ty = r // tiles_x
    x0 = (r - ty * tiles_x) * ts
    y0 = ty * ts
    return c, x0, y0, min(x0 + ts, width), min(y0 + ts, height)


@njit(cache=True, parallel=True, error_model="numpy")
def _forward(P, bg, tile_offsets, flat_ids, tile_order, ts, tiles_x, nw, render, alpha, T_out, last_out):
    C, H, W, D = render.shape
    ntpc = (tile_offsets.size - 1) // C
    nt = tile_order.size
    for w in prange(nw):
        # tile state as [row, column] arrays: row-invariant outer index + in-range column index lets LLVM
        # vectorise each 16-pixel row (a flat p = base + u index does not)
        T = np.empty((ts, ts), np.float32)
        last = np.empty((ts, ts), np.int32)
        acc = np.empty((D, ts, ts), np.float32)
        wgt = np.empty(ts, np.float32)
        px = np.empty(ts, np.float32)
        row_live = np.empty(ts, np.int32)
        for k in range(w, nt, nw):
            t = tile_order[k]
            c, x0, y0, x1, y1 = _tile_xy(t, ntpc, tiles_x, ts, W, H)
            pw = x1 - x0
            ph = y1 - y0
            for u in range(ts):
                px[u] = np.float32(x0 + u) + _HALF
            for v in range(ts):
                row_live[v] = pw if v < ph else 0
                for u in range(ts):
                    # a stopped pixel keeps -T (its final transmittance, negated); pixels outside: -1
                    T[v, u] = _ONE if (u < pw and v < ph) else -_ONE
                    last[v, u] = -1
            acc[:] = _F0
            tile_live = pw * ph
            s0 = tile_offsets[t]
            for i in range(s0, tile_offsets[t + 1]):
                g = flat_ids[i]
                tmax = P[g, 6]
                mx = P[g, 0]
                ex = P[g, 8]
                if tmax < 0 or _misses_columns(x0, x1, mx, ex):
                    continue
                my = P[g, 1]
                a = P[g, 2]
                b = P[g, 3]
                cc = P[g, 4]
                o = P[g, 5]
                det = a * cc - b * b
                li = np.int32(i - s0)
                ylo, yhi = _rows(y0, y1, my, P[g, 7])
                for y in range(ylo, yhi + 1):
                    v = y - y0
                    dy = my - (np.float32(y) + _HALF)
                    if row_live[v] == 0 or _row_misses(x0, x1, mx, dy, a, b, det, tmax, ex):
                        continue
                    cdy2 = cc * dy * dy
                    bdy = b * dy
                    nstop = 0
                    ncon = 0
                    for u in range(ts):  # one SIMD row, branch-free
                        dx = mx - px[u]
                        sigma = _HALF * (a * dx * dx + cdy2) + bdy * dx
                        al = o * _exp_neg(_sigma_clamped(sigma))
                        al = al if al < ALPHA_MAX else ALPHA_MAX
                        tp = T[v, u]
                        ok = (sigma >= _F0) & (al >= ALPHA_MIN) & (tp > _F0)
                        nT = tp * (_ONE - al)
                        stop = ok & (nT <= T_MIN)
                        con = ok & (nT > T_MIN)
                        wgt[u] = al * tp if con else _F0
                        T[v, u] = nT if con else (-tp if stop else tp)
                        last[v, u] = li if con else last[v, u]
                        nstop += 1 if stop else 0
                        ncon += 1 if con else 0
                    if ncon > 0:
                        for d in range(D):
                            cd = P[g, _REC + d]
                            for u in range(ts):
                                acc[d, v, u] += wgt[u] * cd
                    if nstop > 0:
                        row_live[v] -= nstop
                        tile_live -= nstop
                if tile_live == 0:
                    break
            for v in range(ph):
                for u in range(pw):
                    Tp = abs(T[v, u])
                    for d in range(D):
                        render[c, y0 + v, x0 + u, d] = acc[d, v, u] + Tp * bg[c, d]
                    alpha[c, y0 + v, x0 + u] = _ONE - Tp
                    T_out[c, y0 + v, x0 + u] = Tp
                    last_out[c, y0 + v, x0 + u] = last[v, u]


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
    a = np.ascontiguousarray(x, dtype=np.float32)
    return a if a.flags.writeable else a.copy()  # one compiled signature (numba types read-only arrays apart)


def rasterize_to_pixels_fwd(
    means2d, conics, colors, opacities, radii, depths, backgrounds, width, height, tile_size=16
):
    """Composite projected Gaussians of C cameras. Returns (render [C,H,W,D], alpha [C,H,W], ctx)."""
    means2d, conics, colors, opacities, depths = map(_f32, (means2d, conics, colors, opacities, depths))
    radii = np.ascontiguousarray(radii, dtype=np.int32)
    C, N, D = colors.shape
    width, height, tile_size = int(width), int(height), int(tile_size)
    bg = np.zeros((C, D), np.float32)
    if backgrounds is not None:
        bg[:] = np.broadcast_to(np.asarray(backgrounds, dtype=np.float32), (C, D))
    P = _pack(
        means2d.reshape(C * N, 2), conics.reshape(C * N, 3), colors.reshape(C * N, D), opacities.reshape(-1)
    )
    # tile rectangles from the alpha >= 1/255 extents where they are tighter than the 3-sigma radii
    extents = P[:, 6:9].reshape(C, N, 3) if TIGHT_TILES else None
    tile_offsets, flat_ids = bin_gaussians(means2d, radii, depths, width, height, tile_size, extents)
    tiles_x, _ = tile_grid(width, height, tile_size)
    # longest tile lists first, dealt cyclically to the workers
    tile_order = np.argsort(-np.diff(tile_offsets), kind="stable").astype(np.int64)
    render = np.empty((C, height, width, D), np.float32)
    alpha = np.empty((C, height, width), np.float32)
    T_final = np.empty((C, height, width), np.float32)
    last = np.empty((C, height, width), np.int32)
    nw = numba.get_num_threads()
    if tile_order.size:
        _forward(P, bg, tile_offsets, flat_ids, tile_order, tile_size, tiles_x, nw,
                 render, alpha, T_final, last)  # fmt: skip
    ctx = RasterContext(P, bg, tile_offsets, flat_ids, tile_order, T_final, last,
                        (C, N, D, width, height, tile_size))  # fmt: skip
    return render, alpha, ctx
