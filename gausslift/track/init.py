"""Initialisation: a similarity (one scale for the sequence, a rotation and translation per frame) that
takes the rest model's torso points (head, ears, neck, trunk, tail base, shoulders, haunches: every
mapped node except the tail beyond its base and the paws) onto their triangulated positions.

Per frame a weighted Umeyama fit (weights: views seeing the point), refitted once without the points
whose residual exceeds 3x the median; the sequence's scale is the median of the frames' scales, and
the rotations and translations are refitted with it. Frames with fewer than 3 usable points copy the
nearest good frame.
"""

from __future__ import annotations

import re

import numpy as np

from gausslift.errors import InputError

NOT_TORSO = re.compile(r"^(tail_[1-9]|fore_paw|hind_paw)")


def torso_nodes(kmap, nodes: list[str], subject) -> np.ndarray:
    """Bool [K]: nodes whose model point moves with the trunk and head."""
    names = subject.joint_names
    dominant = subject.weights.argmax(1).cpu().numpy() if hasattr(subject, "weights") else None
    out = []
    for n in nodes:
        node = kmap.nodes[n]
        if node.kind == "J":
            js = [names[i] for i in node.ids]
        elif dominant is not None:
            js = [names[int(dominant[i])] for i in node.ids]
        else:
            js = []
        out.append(not any(NOT_TORSO.match(j) for j in js))
    return np.array(out, bool)


def umeyama(P: np.ndarray, Y: np.ndarray, w: np.ndarray, scale: float | None = None):
    """Weighted similarity Y ~ s R P + t; returns (s, R, t). ``scale`` fixes s."""
    w = w / w.sum()
    mp, my = w @ P, w @ Y
    Pc, Yc = P - mp, Y - my
    S = (Yc * w[:, None]).T @ Pc
    U, D, Vt = np.linalg.svd(S)
    E = np.eye(3)
    E[2, 2] = np.sign(np.linalg.det(U @ Vt)) or 1.0
    R = U @ E @ Vt
    s = scale if scale is not None else float(np.trace(np.diag(D) @ E) / max(w @ (Pc ** 2).sum(1), 1e-12))
    return s, R, my - s * R @ mp


def _fit(P, Y, w, scale=None):
    s, R, t = umeyama(P, Y, w, scale)
    r = np.linalg.norm(Y - (s * P @ R.T + t), axis=1)
    keep = r <= 3 * max(np.median(r), 1e-9)
    if keep.sum() >= 3 and not keep.all():
        s, R, t = umeyama(P[keep], Y[keep], w[keep], scale)
    return s, R, t


def similarity_init(rest_points: np.ndarray, points3d: np.ndarray, views: np.ndarray,
                    torso: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``rest_points`` [K,3] (model units), ``points3d`` [F,K,3] (NaN unknown), ``views`` [F,K] ->
    (scale, R [F,3,3], t [F,3])."""
    F = points3d.shape[0]
    fits: list = [None] * F
    for f in range(F):
        ok = torso & np.isfinite(points3d[f]).all(1)
        if ok.sum() < 3:
            continue
        P, Y = rest_points[ok], points3d[f, ok]
        if np.linalg.svd(P - P.mean(0), compute_uv=False)[1] < 1e-3:  # (near) collinear
            continue
        fits[f] = (ok, _fit(P, Y, np.maximum(views[f, ok], 1).astype(float)))
    good = [f for f in range(F) if fits[f] is not None]
    if not good:
        raise InputError(None, "cannot initialise the tracker: no frame has 3 or more torso keypoints "
                               "(head, ears, neck, trunk, tail base...) seen by two cameras")
    scale = float(np.median([fits[f][1][0] for f in good]))
    R, t = np.zeros((F, 3, 3)), np.zeros((F, 3))
    for f in good:
        ok = fits[f][0]
        w = np.maximum(views[f, ok], 1).astype(float)
        _, R[f], t[f] = _fit(rest_points[ok], points3d[f, ok], w, scale)
    good_arr = np.array(good)
    for f in range(F):
        if fits[f] is None:
            g = good_arr[np.argmin(np.abs(good_arr - f))]
            R[f], t[f] = R[g], t[g]
    return scale, R, t


# ------------------------------------------------------------------------------ from masks alone
def _triangulate_centroid(P: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """DLT of one point from 3x4 matrices P [C,3,4] and pixels uv [C,2]."""
    A = np.concatenate([uv[:, :1] * P[:, 2] - P[:, 0], uv[:, 1:] * P[:, 2] - P[:, 1]])
    X = np.linalg.svd(A)[2][-1]
    return X[:3] / X[3]


def _project(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    q = X @ P[:, :3].T + P[:, 3]
    return q[:, :2] / np.maximum(q[:, 2:], 1e-9)


def _centre_and_reach(P: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(the triangulated mask centroids [3], the largest mask radius back-projected at that depth, the
    largest spread (std) of a mask along its 2D principal axis, back-projected: world units)."""
    cent, rad, spread = [], [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        uv = np.stack([xs, ys], 1) + 0.5
        cent.append(uv.mean(0))
        rad.append(np.sqrt(((uv - uv.mean(0)) ** 2).sum(1)).max())
        spread.append(np.sqrt(np.linalg.eigvalsh(np.cov(uv.T))[-1]) if len(uv) > 2 else 0.0)
    cent = np.array(cent)
    c = _triangulate_centroid(P, cent)
    r = sp = 0.0
    for i in range(len(masks)):
        # pixels per world unit at the centroid's depth (the largest over the axes: the in-plane one)
        d = _project(P[i], np.vstack([c, c + np.eye(3) * 1e-3]))
        ppu = max(np.linalg.norm(d[1:] - d[0], axis=1).max() / 1e-3, 1e-12)
        r, sp = max(r, rad[i] / ppu), max(sp, spread[i] / ppu)
    return c, r, sp


def visual_hull(P: np.ndarray, masks: np.ndarray, grid: int = 32) -> np.ndarray:
    """Points [N,3] of the visual hull of one frame: ``P`` [C,3,4] (world -> mask pixels), ``masks``
    [C,H,W] bool (the cameras that saw the subject). The search cube is centred on the triangulated
    mask centroids, its half-size 1.5x the largest mask radius back-projected at that depth."""
    C, H, W = masks.shape
    c, r, _ = _centre_and_reach(P, masks)
    g = np.linspace(-1.5 * r, 1.5 * r, grid)
    X = c + np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    inside = np.ones(len(X), bool)
    for i, m in enumerate(masks):
        uv = np.floor(_project(P[i], X)).astype(np.int64)
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        hit = np.zeros(len(X), bool)
        hit[ok] = m[uv[ok, 1], uv[ok, 0]]
        inside &= hit
    return X[inside]


def _axes(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, principal axes [3,3] as columns by decreasing variance, right-handed; std along them)."""
    mu = Y.mean(0)
    w, V = np.linalg.eigh(np.cov((Y - mu).T))
    V = V[:, ::-1]
    if np.linalg.det(V) < 0:
        V[:, 2] *= -1
    return mu, V, np.sqrt(np.maximum(w[::-1], 0))


def _align(B: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The right-handed basis among B's signed and permuted columns closest to ``prev`` (principal axes
    with close variances swap from frame to frame)."""
    best, score = B, -np.inf
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for s1 in (1, -1):
            for s2 in (1, -1):
                Q = B[:, perm] * np.array([s1, s2, 1.0])
                if np.linalg.det(Q) < 0:
                    Q[:, 2] *= -1
                sc = float(np.trace(prev.T @ Q))
                if sc > score:
                    best, score = Q, sc
    return best


# the 24 right-handed ways of laying the model's axes (x left, y tail, z up) on a frame's principal
# axes: model y -> +-b_i, model z -> +-b_j (j != i). All 24, not only y -> b1: from a few cameras on
# the same side the hull is longest along their viewing direction, not along the body
def _candidates() -> list[np.ndarray]:
    out = []
    for ya in range(3):
        for sy in (1, -1):
            for up in range(3):
                if up == ya:
                    continue
                for sz in (1, -1):
                    Q = np.zeros((3, 3))
                    Q[ya, 1] = sy
                    Q[up, 2] = sz
                    Q[:, 0] = np.cross(Q[:, 1], Q[:, 2])
                    out.append(Q)
    return out


def mask_init(P: np.ndarray, present: np.ndarray, masks: np.ndarray, rest: np.ndarray,
              grid: int = 32) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Similarity candidates from masks alone: ``P`` [F,C,3,4], ``present`` [F,C], ``masks``
    [F,C,H,W] (largest component), ``rest`` [n,3] the rest model's points (no tail). Per frame the
    visual hull's principal axes (aligned from frame to frame) and the triangulated mask centroids
    (the hull's own centroid slides along the cameras' common viewing direction). The scale (median over
    frames) matches the largest back-projected 2D spread of a mask with the rest model's spread along
    its body (y). Returns (scale, 24 candidates (R [F,3,3], t [F,3])), one per way of laying the
    model's axes on the hull's; the caller picks one (see :meth:`gausslift.track.optimize.Tracker`)."""
    F = P.shape[0]
    mu_m = rest.mean(0)
    fits: list = [None] * F
    for f in range(F):
        cams = np.flatnonzero(present[f])
        if len(cams) < 2 or not all(masks[f, c].any() for c in cams):
            continue
        c, _, spread = _centre_and_reach(P[f, cams], masks[f, cams])
        H = visual_hull(P[f, cams], masks[f, cams], grid)
        if len(H) < 20:
            continue
        fits[f] = (c, _axes(H)[1], spread)
    good = [f for f in range(F) if fits[f] is not None]
    if not good:
        raise InputError(None, "cannot initialise the tracker from the masks: no frame has masks in two "
                               "cameras whose visual hull is non-empty")
    scale = float(np.median([fits[f][2] for f in good])) / max(float(rest[:, 1].std()), 1e-12)
    B = np.zeros((F, 3, 3))
    mu = np.zeros((F, 3))
    prev = None
    for f in good:
        B[f] = fits[f][1] if prev is None else _align(fits[f][1], prev)
        mu[f] = fits[f][0]
        prev = B[f]
    g = np.array(good)
    for f in range(F):
        if fits[f] is None:
            n = g[np.argmin(np.abs(g - f))]
            B[f], mu[f] = B[n], mu[n]
    out = []
    for Q in _candidates():
        R = B @ Q
        t = mu - scale * R @ mu_m
        out.append((R, t))
    return scale, out
