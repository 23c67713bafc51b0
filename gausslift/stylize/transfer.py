"""Deformation transfer (Sumner & Popovic, SIGGRAPH 2004) of an example pair to any mesh of its topology.

Per triangle, the deformation gradient ``Q_t`` of the pair (neutral ``N`` -> styled ``S``) maps the
triangle's frame ``[e1, e2, n]`` (two edges and the paper's fourth-vertex normal
``n = e1 x e2 / sqrt(|e1 x e2|)``) to the styled one: ``Q_t = [e1', e2', n'] [e1, e2, n]^-1``. On a new
mesh ``X`` every triangle's edges are mapped by its ``Q_t`` and the positions come from the Poisson
solve (:mod:`gausslift.stylize.poisson`). Translation: the vertices the pair does not move (``|S - N|``
below ``1e-3`` of its largest displacement) are kept where ``X`` has them, as the style leaves them;
a component with no such vertex (an eyeball, the teeth) gets the mean of ``X`` over it plus the
pair's mean displacement there. Exact for any global similarity (rotation, uniform scale,
translation) on any mesh and for any global affine map on the pair's own neutral mesh; for an
anisotropic map on another mesh only approximately (the normal column of ``Q_t`` is the paper's
choice, not the map's), see ``docs/stylize_gradient.md``.
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.stylize.poisson import Poisson, edges

FIXED_TOL = 1e-3


def frames(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[B, F, 3, 3]: columns ``e1, e2, n`` (Sumner's scaled normal)."""
    a, b, c = (verts[:, faces[:, k]] for k in range(3))
    e1, e2 = b - a, c - a
    n = torch.cross(e1, e2, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30).sqrt()
    return torch.stack([e1, e2, n], -1)


def deformation_gradients(N, S, faces) -> torch.Tensor:
    """Per-triangle ``Q_t`` [F, 3, 3] of the pair (float64); identity on degenerate triangles."""
    N = torch.as_tensor(N, dtype=torch.float64)[None]
    S = torch.as_tensor(S, dtype=torch.float64)[None]
    Vn, Vs = frames(N, faces)[0], frames(S, faces)[0]
    ok = torch.linalg.det(Vn).abs() > 1e-12 * Vn.flatten(1).norm(dim=1).clamp_min(1e-30) ** 3
    Q = torch.eye(3, dtype=torch.float64).repeat(len(Vn), 1, 1)
    Q[ok] = torch.linalg.solve(Vn[ok].transpose(1, 2), Vs[ok].transpose(1, 2)).transpose(1, 2)
    return Q


def ring_gradients(N, S, faces, lam: float = 1e-3) -> torch.Tensor:
    """Per-triangle ``Q_t`` [F, 3, 3] fitted (least squares) to every edge around the triangle's three
    corners (their one-rings), pulled towards the paper's ``Q_t`` by a ridge ``lam`` (relative to the
    mean squared edge length). Where those edges are not coplanar this recovers the map's action on
    the normal direction too, so a global affine map comes out as itself (up to the ridge)."""
    N = np.asarray(N, np.float64)
    S = np.asarray(S, np.float64)
    f = np.asarray(faces)
    e = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1), axis=0)
    d, d2 = N[e[:, 1]] - N[e[:, 0]], S[e[:, 1]] - S[e[:, 0]]
    M, B = np.zeros((len(N), 3, 3)), np.zeros((len(N), 3, 3))
    for k in (0, 1):
        np.add.at(M, e[:, k], d[:, :, None] * d[:, None, :])
        np.add.at(B, e[:, k], d2[:, :, None] * d[:, None, :])
    Qs = deformation_gradients(N, S, torch.as_tensor(f)).numpy()
    r = lam * float((d * d).sum(1).mean())
    Mt, Bt = M[f].sum(1) + r * np.eye(3), B[f].sum(1) + r * Qs
    return torch.as_tensor(np.linalg.solve(Mt.transpose(0, 2, 1), Bt.transpose(0, 2, 1)).transpose(0, 2, 1))


def moved(N, S, tol: float = FIXED_TOL) -> np.ndarray:
    """[V] bool: the vertices the pair moves (by more than ``tol`` of its largest displacement)."""
    d = np.linalg.norm(np.asarray(S, np.float64) - np.asarray(N, np.float64), axis=1)
    return d > tol * d.max()


def apply_jacobians(P: Poisson, J: torch.Tensor, X: torch.Tensor, faces, offsets=None) -> torch.Tensor:
    """Meshes [B, V, 3] whose triangles' edges are ``J`` [(B,) F, 3, 3] times those of ``X``
    [B, V, 3]; ``X``'s fixed vertices stay, each unanchored component keeps ``X``'s mean plus
    ``offsets`` [(B,) n_components, 3]."""
    E = edges(X, faces)
    e = torch.einsum("bfij,bfkj->bfki", J.to(X.dtype).expand(len(X), *J.shape[-3:]), E)
    m = P.component_means(X)
    if offsets is not None:
        m = m + offsets.to(X.dtype)
    return P(e, X[:, P.fixed_idx], m)


class DeformationTransfer:
    """The pair's deformation gradients and its factorised solve; ``self(X)`` -> styled meshes."""

    def __init__(self, N, S, faces, gradients: str = "triangle"):
        N, S = np.asarray(N, np.float64), np.asarray(S, np.float64)
        self.faces = torch.as_tensor(np.asarray(faces), dtype=torch.long)
        if gradients not in ("triangle", "ring"):
            raise ValueError(f"gradients must be 'triangle' or 'ring', got {gradients!r}")
        grad = deformation_gradients if gradients == "triangle" else ring_gradients
        self.Q = grad(N, S, self.faces)
        self.solver = Poisson(self.faces, len(N), ~moved(N, S))
        d = torch.as_tensor(S - N)[None]
        self.offsets = self.solver.component_means(d)

    @torch.no_grad()
    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return apply_jacobians(self.solver, self.Q, X.double(), self.faces, self.offsets).to(X.dtype)
