"""Backward pass of the CPU compositor (numba): analytic gradients of :mod:`gausslift.render.raster`'s
forward, per worker into its own buffer, then summed.

It walks each tile from its last contributor back to front, recomputing each Gaussian's alpha and the
transmittance before it (``T_i = T_{i+1} / (1 - alpha_i)``), with the same culling and SIMD row layout as
the forward (see that module's docstring); rows whose pixels stopped earlier are skipped.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

from gausslift.render.raster import (
    _F0,
    _HALF,
    _ONE,
    _REC,
    ALPHA_MAX,
    ALPHA_MIN,
    RasterContext,
    _exp_neg,
    _f32,
    _misses_columns,
    _row_misses,
    _rows,
    _sigma_clamped,
    _tile_xy,
)
from gausslift.render.tiles import tile_grid


@njit(cache=True, parallel=True, error_model="numpy")
def _backward(
    P, bg, tile_offsets, flat_ids, tile_order, ts, tiles_x, nw, T_out, last_out, v_render, v_alpha, grads
):
    C, H, W, D = v_render.shape
    ntpc = (tile_offsets.size - 1) // C
    nt = tile_order.size
    for w in prange(nw):
        Tb = np.empty((ts, ts), np.float32)
        Q = np.empty((ts, ts), np.float32)  # T_final * (v_alpha - bg . v_render)
        last = np.empty((ts, ts), np.int32)
        vr = np.empty((D * ts, ts), np.float32)  # row d * ts + v
        buf = np.empty((D * ts, ts), np.float32)  # colour composited behind the current Gaussian
        lane = np.empty((6 + D, ts), np.float32)  # per-lane partial gradients of the current Gaussian
        l_mx, l_my, l_a, l_b, l_c, l_o, l_col = lane[0], lane[1], lane[2], lane[3], lane[4], lane[5], lane[6:]
        rows = np.empty((4, ts), np.float32)  # per-row values shared by the passes
        al_l, ra_l, T_l, va_l = rows[0], rows[1], rows[2], rows[3]
        px = np.empty(ts, np.float32)
        row_last = np.empty(ts, np.int32)
        G = grads[w]
        G[:] = 0.0  # each worker zeroes its own buffer (in parallel; see _grad_buffer)
        for k in range(w, nt, nw):
            t = tile_order[k]
            c, x0, y0, x1, y1 = _tile_xy(t, ntpc, tiles_x, ts, W, H)
            pw = x1 - x0
            ph = y1 - y0
            for u in range(ts):
                px[u] = np.float32(x0 + u) + _HALF
            Tb[:] = _ONE
            last[:] = -1
            Q[:] = _F0
            vr[:] = _F0
            buf[:] = _F0
            row_last[:] = -1
            for v in range(ph):
                for u in range(pw):
                    Tp = T_out[c, y0 + v, x0 + u]
                    Tb[v, u] = Tp
                    last[v, u] = last_out[c, y0 + v, x0 + u]
                    row_last[v] = max(row_last[v], last[v, u])
                    q = v_alpha[c, y0 + v, x0 + u]
                    for d in range(D):
                        vv = v_render[c, y0 + v, x0 + u, d]
                        vr[d * ts + v, u] = vv
                        q -= vv * bg[c, d]
                    Q[v, u] = Tp * q
            s0 = tile_offsets[t]
            for i in range(s0 + row_last.max(), s0 - 1, -1):
                g = flat_ids[i]
                tmax = P[g, 6]
                mx = P[g, 0]
                ex = P[g, 8]
                if tmax < 0 or _misses_columns(x0, x1, mx, ex):
                    continue
                li = np.int32(i - s0)
                my = P[g, 1]
                a = P[g, 2]
                b = P[g, 3]
                cc = P[g, 4]
                o = P[g, 5]
                det = a * cc - b * b
                hit = False
                ylo, yhi = _rows(y0, y1, my, P[g, 7])
                for y in range(ylo, yhi + 1):
                    v = y - y0
                    dy = my - (np.float32(y) + _HALF)
                    if row_last[v] < li or _row_misses(x0, x1, mx, dy, a, b, det, tmax, ex):
                        continue
                    cdy2 = cc * dy * dy
                    bdy = b * dy
                    T_r = Tb[v]
                    last_r = last[v]
                    nok = 0
                    # Each loop below stores to at most 4 arrays: more and LLVM gives up the runtime alias
                    # checks and runs the row scalar (5x slower).
                    for u in range(ts):  # SIMD row, pass 1: alpha, transmittance
                        dx = mx - px[u]
                        sigma = _HALF * (a * dx * dx + cdy2) + bdy * dx
                        al = o * _exp_neg(_sigma_clamped(sigma))
                        al = al if al < ALPHA_MAX else ALPHA_MAX
                        ok = (sigma >= _F0) & (al >= ALPHA_MIN) & (li <= last_r[u])
                        ra = _ONE / (_ONE - al)
                        Tp = T_r[u]
                        Tn = Tp * ra
                        T_r[u] = Tn if ok else Tp
                        al_l[u] = al if ok else _F0
                        ra_l[u] = ra if ok else _F0
                        T_l[u] = Tn if ok else _F0
                        nok += 1 if ok else 0
                    if nok == 0:
                        continue
                    if not hit:
                        hit = True
                        lane[:] = _F0
                    Q_r = Q[v]
                    for u in range(ts):  # d loss / d alpha: background and v_alpha part
                        va_l[u] = Q_r[u] * ra_l[u]
                    for d in range(D):  # pass 2: colour terms
                        cd = P[g, _REC + d]
                        vr_r = vr[d * ts + v]
                        buf_r = buf[d * ts + v]
                        lc = l_col[d]
                        for u in range(ts):
                            vv = vr_r[u]
                            fac = al_l[u] * T_l[u]
                            lc[u] += fac * vv
                            va_l[u] += vv * (cd * T_l[u] - buf_r[u] * ra_l[u])
                            buf_r[u] += cd * fac
                    # pass 3: through alpha = opacity * exp(-sigma); no gradient where alpha was clamped
                    for u in range(ts):
                        dx = mx - px[u]
                        vs = -al_l[u] * va_l[u] if al_l[u] < ALPHA_MAX else _F0
                        l_mx[u] += vs * (a * dx + bdy)
                        l_my[u] += vs * (b * dx + cc * dy)
                        l_o[u] -= vs
                    for u in range(ts):
                        dx = mx - px[u]
                        vs = -al_l[u] * va_l[u] if al_l[u] < ALPHA_MAX else _F0
                        l_a[u] += _HALF * vs * dx * dx
                        l_b[u] += vs * dx * dy
                        l_c[u] += _HALF * vs * dy * dy
                if hit:
                    G[g, 0] += l_mx.sum()
                    G[g, 1] += l_my.sum()
                    G[g, 2] += l_a.sum()
                    G[g, 3] += l_b.sum()
                    G[g, 4] += l_c.sum()
                    G[g, 5] += l_o.sum() / o  # d alpha / d opacity = alpha / opacity
                    for d in range(D):
                        G[g, 6 + d] += l_col[d].sum()


@njit(cache=True, error_model="numpy", parallel=True)
def _reduce(grads, v_means2d, v_conics, v_colors, v_opacities):
    """Sum the workers' gradient buffers, in parallel over blocks of Gaussians (it reads nw * CN * K
    floats: serial, it grew with the thread count)."""
    nw, CN, K = grads.shape
    D = K - 6
    nblock = (CN + 1023) // 1024
    for blk in prange(nblock):
        s = np.empty(K, np.float32)
        for g in range(blk * 1024, min(CN, (blk + 1) * 1024)):
            for j in range(K):
                s[j] = grads[0, g, j]
            for w in range(1, nw):
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


_buffers = threading.local()


def _grad_buffer(nw: int, cn: int, k: int) -> np.ndarray:
    """The backward's per-worker gradient buffers [nw, cn, k], uninitialised (the workers zero their
    own). Kept between calls (per thread) and grown when needed: allocating nw * N * K floats afresh
    each call cost page faults that grew with the thread count. ``release_buffers()`` frees them."""
    need = nw * cn * k
    buf = getattr(_buffers, "grads", None)
    if buf is None or buf.size < need:
        buf = np.empty(max(need, 1), np.float32)
        _buffers.grads = buf
    return buf[:need].reshape(nw, cn, k)


def release_buffers() -> None:
    """Free the kept gradient buffers of this thread."""
    _buffers.grads = None


def rasterize_to_pixels_bwd(ctx: RasterContext, v_render, v_alpha):
    """Gradients (v_means2d [C,N,2], v_conics [C,N,3], v_colors [C,N,D], v_opacities [C,N])."""
    C, N, D, width, height, tile_size = ctx.shape
    v_render = _f32(v_render).reshape(C, height, width, D)
    v_alpha = _f32(v_alpha).reshape(C, height, width)
    tiles_x, _ = tile_grid(width, height, tile_size)
    nw = numba.get_num_threads()
    grads = _grad_buffer(nw, C * N, 6 + D)
    if not (ctx.tile_order.size and ctx.flat_ids.size):
        grads[:] = 0.0
    else:
        _backward(ctx.packed, ctx.backgrounds, ctx.tile_offsets, ctx.flat_ids, ctx.tile_order, tile_size,
                  tiles_x, nw, ctx.T_final, ctx.last, v_render, v_alpha, grads)  # fmt: skip
    v_means2d = np.empty((C, N, 2), np.float32)
    v_conics = np.empty((C, N, 3), np.float32)
    v_colors = np.empty((C, N, D), np.float32)
    v_opacities = np.empty((C, N), np.float32)
    _reduce(grads, v_means2d.reshape(C * N, 2), v_conics.reshape(C * N, 3), v_colors.reshape(C * N, D),
            v_opacities.reshape(C * N))  # fmt: skip
    return v_means2d, v_conics, v_colors, v_opacities
