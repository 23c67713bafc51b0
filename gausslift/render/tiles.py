"""Tile binning and depth sorting of projected Gaussians (numba), as gsplat's ``isect_tiles``.

A Gaussian with ``radii > 0`` on both axes is given to every tile overlapped by the rectangle
``mean2d +- radii``: tiles ``floor(m / ts - r / ts) .. ceil(m / ts + r / ts) - 1`` per axis, clipped to the
image's tile grid. Each tile's list is sorted by depth ascending, ties by Gaussian index.

With ``extents`` (the rasteriser's own half-widths of each Gaussian's alpha >= 1/255 ellipse, as gsplat's
projection shrinks its radii by opacity) the rectangle per axis is ``mean2d +- min(radius, extent)``, and a
Gaussian that can never reach 1/255 gets no tile. The rasteriser skips exactly those pixels anyway (each
tile's pixel centres lie 0.5 px inside it, and the extents carry the rasteriser's culling margin), so the
image and its gradients are the same, with fewer list entries.

How: one stable LSD radix argsort of the visible depths per camera (three 11-bit passes over sortable
uint32 keys), then a counting sort by tile that walks the Gaussians in depth order, so every tile list comes
out depth-sorted and stable without any per-tile sort. The walk can be split into chunks with their own
write cursors (per-chunk counts), so the counting and filling passes run in parallel over chunks (one per
thread) once there are at least ``PARALLEL_MIN_VISIBLE`` visible Gaussians; below that one serial chunk.
The depth argsort stays serial (about 3% of a 300k render at one thread).

Output is CSR: ``tile_offsets[C * tiles_y * tiles_x + 1]`` (int64) into ``flat_ids[n_isects]`` (int32, the
flat Gaussian index ``c * N + n``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_RADIX_BITS = 11
_RADIX = 1 << _RADIX_BITS
PARALLEL_MIN_VISIBLE = 20_000  # visible Gaussians from which binning is split over the threads


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """(tiles_x, tiles_y) of an image."""
    return (width + tile_size - 1) // tile_size, (height + tile_size - 1) // tile_size


def sortable_keys(depths: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order is the float order of ``depths`` (negatives too)."""
    bits = np.ascontiguousarray(depths, dtype=np.float32).view(np.uint32)
    neg = (bits >> np.uint32(31)).astype(bool)
    return np.where(neg, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


@njit(cache=True)
def _radix_argsort(keys, idx):
    """Stable argsort of ``keys[idx]`` (uint32) by LSD radix; returns the permuted ``idx``."""
    n = idx.size
    src = idx.copy()
    dst = np.empty_like(idx)
    count = np.empty(_RADIX, np.int64)
    mask = np.uint32(_RADIX - 1)
    for shift in range(0, 32, _RADIX_BITS):
        sh = np.uint32(shift)
        count[:] = 0
        for i in range(n):
            count[(keys[src[i]] >> sh) & mask] += 1
        run = 0
        for b in range(_RADIX):
            c = count[b]
            count[b] = run
            run += c
        for i in range(n):
            j = src[i]
            b = (keys[j] >> sh) & mask
            dst[count[b]] = j
            count[b] += 1
        src, dst = dst, src
    return src


@njit(cache=True)
def _depth_order(keys, radii, ext):
    """Per camera, the visible Gaussians sorted by depth (stable): (order[C, N], nvis[C])."""
    C, N = keys.shape
    order = np.zeros((C, N), np.int32)
    nvis = np.zeros(C, np.int64)
    for c in range(C):  # serial: ~1 ms per 100k, not worth a parallel region on a busy machine
        vis = np.empty(N, np.int32)
        m = 0
        for n in range(N):
            if radii[c, n, 0] > 0 and radii[c, n, 1] > 0 and ext[c, n, 0] >= 0:
                vis[m] = n
                m += 1
        srt = _radix_argsort(keys[c], vis[:m])
        order[c, :m] = srt
        nvis[c] = m
    return order, nvis


@njit(cache=True, inline="always")
def _tile_rect(mx, my, rx, ry, ey, ex, inv_ts, tiles_x, tiles_y):
    """Inclusive-exclusive tile rectangle [x0, x1) x [y0, y1) of one Gaussian (half-widths: the radii, or
    the alpha >= 1/255 extents ex, ey where those are given (>= 0) and smaller)."""
    cx = mx * inv_ts
    cy = my * inv_ts
    hx = np.float32(rx)
    hy = np.float32(ry)
    if ex >= 0 and ey >= 0:
        hx = min(hx, ex)
        hy = min(hy, ey)
    hx = hx * inv_ts
    hy = hy * inv_ts
    x0 = int(max(0.0, min(float(tiles_x), np.floor(cx - hx))))
    x1 = int(max(0.0, min(float(tiles_x), np.ceil(cx + hx))))
    y0 = int(max(0.0, min(float(tiles_y), np.floor(cy - hy))))
    y1 = int(max(0.0, min(float(tiles_y), np.ceil(cy + hy))))
    return x0, x1, y0, y1


@njit(cache=True, parallel=True)
def _bin(means2d, radii, ext, order, nvis, tile_size, tiles_x, tiles_y, nchunk):
    C, N = order.shape
    ntpc = tiles_x * tiles_y
    inv_ts = np.float32(1.0) / np.float32(tile_size)
    npiece = C * nchunk
    counts = np.zeros((npiece, ntpc), np.int64)
    for piece in prange(npiece):  # pieces count into their own rows
        c = piece // nchunk
        j = piece % nchunk
        k0 = nvis[c] * j // nchunk
        k1 = nvis[c] * (j + 1) // nchunk
        cnt = counts[piece]
        for k in range(k0, k1):
            n = order[c, k]
            x0, x1, y0, y1 = _tile_rect(
                means2d[c, n, 0], means2d[c, n, 1], radii[c, n, 0], radii[c, n, 1],
                ext[c, n, 1], ext[c, n, 2], inv_ts, tiles_x, tiles_y,
            )  # fmt: skip
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    cnt[ty * tiles_x + tx] += 1
    # exclusive scan in (camera, tile, chunk) order -> per-piece write cursors and tile offsets
    tile_offsets = np.empty(C * ntpc + 1, np.int64)
    run = 0
    for c in range(C):
        for t in range(ntpc):
            tile_offsets[c * ntpc + t] = run
            for j in range(nchunk):
                p = c * nchunk + j
                v = counts[p, t]
                counts[p, t] = run
                run += v
    tile_offsets[C * ntpc] = run
    flat_ids = np.empty(run, np.int32)
    for piece in prange(npiece):  # pieces write through their own cursors: disjoint slots
        c = piece // nchunk
        j = piece % nchunk
        k0 = nvis[c] * j // nchunk
        k1 = nvis[c] * (j + 1) // nchunk
        cur = counts[piece]
        base = c * N
        for k in range(k0, k1):
            n = order[c, k]
            x0, x1, y0, y1 = _tile_rect(
                means2d[c, n, 0], means2d[c, n, 1], radii[c, n, 0], radii[c, n, 1],
                ext[c, n, 1], ext[c, n, 2], inv_ts, tiles_x, tiles_y,
            )  # fmt: skip
            for ty in range(y0, y1):
                for tx in range(x0, x1):
                    t = ty * tiles_x + tx
                    flat_ids[cur[t]] = base + n
                    cur[t] += 1
    return tile_offsets, flat_ids


def no_extents(C: int, N: int) -> np.ndarray:
    """``extents`` that narrow nothing (sigma_max 0, extents -1): every rectangle is the radii's."""
    ext = np.full((C, N, 3), -1.0, np.float32)
    ext[..., 0] = 0.0
    return ext


def bin_gaussians(
    means2d: np.ndarray,
    radii: np.ndarray,
    depths: np.ndarray,
    width: int,
    height: int,
    tile_size: int = 16,
    extents: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tile lists of the visible Gaussians, each sorted by depth: ``(tile_offsets, flat_ids)`` (CSR).

    means2d [C, N, 2] float32, radii [C, N, 2] int32, depths [C, N] float32. Tile ``t = ty * tiles_x + tx``
    of camera ``c`` is ``flat_ids[tile_offsets[c * T + t] : tile_offsets[c * T + t + 1]]``,
    ``T = tiles_x * tiles_y``. ``extents`` [C, N, 3] float32, optional: the rasteriser's (sigma_max,
    y_extent, x_extent) per Gaussian (``raster._pack``'s columns 6-8): sigma_max < 0 bins nothing, an
    extent >= 0 narrows that axis's rectangle.
    """
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    C, N = depths.shape
    keys = sortable_keys(depths).reshape(C, N)
    ext = no_extents(C, N) if extents is None else np.ascontiguousarray(extents, np.float32).reshape(C, N, 3)
    order, nvis = _depth_order(keys, np.ascontiguousarray(radii, dtype=np.int32), ext)
    # one chunk per thread when the work is large (each chunk's lists stay depth-sorted: chunks are depth
    # ranges written in order); one serial chunk otherwise
    nchunk = numba.get_num_threads() if int(nvis.max(initial=0)) >= PARALLEL_MIN_VISIBLE else 1
    return _bin(
        np.ascontiguousarray(means2d, dtype=np.float32),
        np.ascontiguousarray(radii, dtype=np.int32),
        ext,
        order,
        nvis,
        int(tile_size),
        tiles_x,
        tiles_y,
        nchunk,
    )
