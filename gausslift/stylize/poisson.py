"""A sparse least-squares (Poisson) solve for vertex positions from per-triangle edge targets.

Every triangle ``t`` with corners ``(a, b, c)`` asks for its three edges ``b - a``, ``c - b``, ``a - c``
to equal targets ``e_t`` [3, 3] (e.g. a Jacobian applied to an input mesh's edges); the positions
minimise ``|D x - e|^2`` (``D`` the [3F, V] edge-difference operator, so ``D^T D`` is the mesh's
graph Laplacian). The solution is defined up to one translation per connected component; it is fixed

* by **fixed vertices** (Dirichlet rows: their positions are given), and
* for a component without any fixed vertex, by its **mean** (a Lagrange multiplier row).

The system ``[[L_ff, C^T], [C, 0]]`` depends only on the topology and the fixed set: it is factorised
once (``scipy.sparse.linalg.splu``) and reused for every mesh, every coordinate and every batch.
``solve`` is a ``torch.autograd.Function``: the system is symmetric, so the backward pass is one more
solve with the same factors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu


def edge_operator(faces: np.ndarray, V: int) -> sp.csr_matrix:
    """[3F, V]: row ``3t + k`` is ``x[f[t, k+1]] - x[f[t, k]]``."""
    f = np.asarray(faces)
    i, j = f.reshape(-1), np.roll(f, -1, axis=1).reshape(-1)
    r = np.arange(len(i))
    return sp.csr_matrix(
        (np.r_[np.ones(len(r)), -np.ones(len(r))], (np.r_[r, r], np.r_[j, i])), shape=(len(r), V)
    )


def edges(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The edges [B, F, 3 (edge), 3 (xyz)] of meshes [B, V, 3], in the operator's order."""
    a, b, c = (verts[:, faces[:, k]] for k in range(3))
    return torch.stack([b - a, c - b, a - c], 2)


class Poisson:
    """The factorised solve for one topology (``faces``, ``V``) and one ``fixed`` vertex set."""

    def __init__(self, faces, V: int, fixed=None):
        f = np.asarray(faces.cpu() if torch.is_tensor(faces) else faces, np.int64)
        self.V, self.F = V, len(f)
        self.fixed = np.zeros(V, bool) if fixed is None else np.asarray(fixed, bool).copy()
        D = edge_operator(f, V).tocsc()
        self.free_idx, self.fixed_idx = np.flatnonzero(~self.fixed), np.flatnonzero(self.fixed)
        self.Df, self.Da = D[:, self.free_idx].tocsr(), D[:, self.fixed_idx].tocsr()
        n, label = connected_components(D.T @ D, directed=False)
        anchored = np.zeros(n, bool)
        anchored[label[self.fixed]] = True
        self.components = [np.flatnonzero(label == c) for c in range(n) if not anchored[c]]
        pos = np.full(V, -1)
        pos[self.free_idx] = np.arange(len(self.free_idx))
        rows = np.concatenate([np.full(len(m), k) for k, m in enumerate(self.components)] or [[]])
        cols = np.concatenate([pos[m] for m in self.components] or [[]])
        vals = np.concatenate([np.full(len(m), 1.0 / len(m)) for m in self.components] or [[]])
        self.nf = len(self.free_idx)
        C = sp.csr_matrix((vals, (rows.astype(int), cols.astype(int))), shape=(len(self.components), self.nf))
        self.lu = splu(sp.bmat([[self.Df.T @ self.Df, C.T], [C, None]], format="csc"))

    def component_means(self, x: torch.Tensor) -> torch.Tensor:
        """Means [B, n_components, 3] of meshes [B, V, 3] over the unanchored components."""
        if not self.components:
            return x.new_zeros(x.shape[0], 0, 3)
        return torch.stack([x[:, m].mean(1) for m in self.components], 1)

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        return self.lu.solve(rhs) if rhs.size else rhs

    def __call__(self, e: torch.Tensor, x_fixed: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """Edge targets ``e`` [B, F, 3, 3], the fixed vertices' positions [B, n_fixed, 3] and the
        unanchored components' means [B, n_components, 3] -> vertices [B, V, 3]."""
        return _Solve.apply(e, x_fixed, means, self)


def _cols(t: torch.Tensor) -> np.ndarray:
    """[B, N, 3] -> [N, 3B] float64."""
    return t.detach().double().cpu().numpy().transpose(1, 0, 2).reshape(t.shape[1], 3 * t.shape[0])


def _back(a: np.ndarray, B: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a.reshape(a.shape[0], B, 3).transpose(1, 0, 2).copy()).to(like)


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e, x_fixed, means, P: Poisson):
        B = e.shape[0]
        r = _cols(e.reshape(B, -1, 3)) - P.Da @ _cols(x_fixed)
        sol = P._solve(np.vstack([P.Df.T @ r, _cols(means)]))
        x = e.new_zeros(B, P.V, 3)
        x[:, P.free_idx] = _back(sol[: P.nf], B, e)
        x[:, P.fixed_idx] = x_fixed.to(e)
        ctx.P, ctx.B = P, B
        return x

    @staticmethod
    def backward(ctx, g):
        P, B = ctx.P, ctx.B
        gf = _cols(g[:, P.free_idx])
        y = P._solve(np.vstack([gf, np.zeros((len(P.components), gf.shape[1]))]))
        ge = P.Df @ y[: P.nf]
        g_e = _back(ge, B, g).reshape(B, P.F, 3, 3)
        g_fixed = g[:, P.fixed_idx] - _back(P.Da.T @ ge, B, g)
        g_means = _back(y[P.nf :], B, g)
        return g_e, g_fixed, g_means, None
