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
