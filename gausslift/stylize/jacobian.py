"""The gradient-domain style branch: per-triangle Jacobians, integrated by the Poisson solve.

In the spirit of Neural Jacobian Fields (Aigerman et al. 2022), the fine-tuned decoder does not
predict offsets but a 3x3 Jacobian per triangle, conditioned on the latent ``z``::

    J_t(z)  = I + (C_t + sum_r a_r(z) E_{r,t}) R2_t^T,   a(z) = (z - z*) @ U   (rank ``r`` correction)
    D(z)    = solve(J(z) * edges(P(z)); fixed vertices of P(z); component means of P(z) + unit * t)

``P`` is the pretrained decoder, ``solve`` the factorised Poisson solve
(:mod:`gausslift.stylize.poisson`) with the pair's unmoved vertices fixed (as deformation transfer,
:mod:`gausslift.stylize.transfer`), ``t`` one learned translation per unanchored component. With
``C = E = t = 0`` the solve returns ``P(z)`` exactly, so fine-tuning starts at the pretrained decoder.
The latent correction is centred at the pair's latent ``z*``: it is zero at the pair, so ``C`` alone
fits the pair and ``E`` is learnt only from the terms on sampled latents (``direction``, ``normal``).
Uncentred (``a(z) = z @ U``), ``C`` and ``E`` share the pair's fit, Adam splits it between them
arbitrarily, and other latents see the split. ``R2_t`` [3, 2] holds the two in-plane axes (first
edge, its perpendicular) of the pair's neutral triangle; ``C_t`` and ``E_{r,t}`` are [3, 2]: the
correction acts on the triangle's plane and leaves its normal direction as it is. The pair's own
edges show nothing about that direction; with a full 3x3 ``C_t`` in world coordinates Adam's
per-coordinate steps filled it with whatever the tiny out-of-plane components of ``P(z*)``'s edges
suggested.
Applied to a mesh ``X`` (``stylise``), the Jacobians act on ``X``'s own triangles: a bigger nose has
longer edges and moves by more, which the offsets of delta transfer cannot do.

``STY/style.pt`` of this branch has format ``gausslift-style-jacobian`` (the stylised subject of
``gausslift.subjects.styled`` reads only the field format; see docs/stylize_gradient.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.stylize.poisson import Poisson
from gausslift.stylize.transfer import apply_jacobians, moved
from gausslift.subjects.styled import FORMAT, STYLE_FILE, base_decode

FORMAT_J = "gausslift-style-jacobian"
KEYS = ("C", "E", "U", "t")


def local_frames(N: torch.Tensor, faces) -> torch.Tensor:
    """[F, 3, 2] orthonormal in-plane axes (first edge, its perpendicular) of mesh [V, 3]."""
    a, b, c = (N[faces[:, k]] for k in range(3))
    u = b - a
    n = torch.cross(u, c - a, dim=-1)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return torch.stack([u, torch.cross(n, u, dim=-1)], -1)


def init_jacobian(N, faces, z0, rank: int, components: int, seed: int = 0) -> dict:
    """The branch at zero (``D = P``) for a pair with neutral mesh ``N`` [V, 3]."""
    g = torch.Generator().manual_seed(seed)
    F, z0 = len(faces), torch.as_tensor(z0).reshape(-1).float()
    Z = len(z0)
    return {
        "R": local_frames(torch.as_tensor(N, dtype=torch.float64), faces).float(),
        "C": torch.zeros(F, 3, 2),
        "E": torch.zeros(rank, F * 6),
        "U": torch.randn(Z, rank, generator=g) / np.sqrt(max(Z, 1)),
        "t": torch.zeros(components, 3),
        "z0": z0,
    }


def jacobians(w: dict, z: torch.Tensor) -> torch.Tensor:
    """[B, F, 3, 3] for latents [B, Z]."""
    F = w["C"].shape[0]
    corr = w["C"] + (((z - w["z0"].to(z)) @ w["U"].to(z)) @ w["E"]).reshape(len(z), F, 3, 2)
    return torch.eye(3) + corr @ w["R"].transpose(1, 2)


def solver(faces, N, S) -> Poisson:
    """The solve of a pair: its unmoved vertices fixed (as deformation transfer)."""
    return Poisson(faces, len(N), ~moved(N, S))


def stylise(w: dict, P: Poisson, faces, X: torch.Tensor, z: torch.Tensor, unit: float) -> torch.Tensor:
    """Meshes ``X`` [B, V, 3] (latents ``z``) with the style's Jacobians on their own triangles."""
    return apply_jacobians(P, jacobians(w, z), X, faces, unit * w["t"])


def decode(pre: dict, w: dict, P: Poisson, faces, z: torch.Tensor, unit: float) -> torch.Tensor:
    with torch.no_grad():
        base = base_decode(pre, z)
    return stylise(w, P, faces, base, z, unit)


class Model:
    """A saved Jacobian style (``STY/style.pt``) ready to apply: ``change(X, z)``, ``decoder(z)``."""

    def __init__(self, sty: dict, faces):
        self.sty, self.faces = sty, torch.as_tensor(np.asarray(faces), dtype=torch.long)
        pair = sty["pair"]
        self.P = solver(self.faces, pair["neutral"].double().numpy(), pair["styled"].double().numpy())
        self.w, self.unit = sty["jacobian"], float(sty["unit"])

    @torch.no_grad()
    def apply(self, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return stylise(self.w, self.P, self.faces, X, z, self.unit)

    @torch.no_grad()
    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self.sty["pretrained"], self.w, self.P, self.faces, z, self.unit)


def read_any(path) -> dict:
    """``STY`` of either branch (the field format through ``read_style``)."""
    from gausslift.subjects.styled import read_style

    p = Path(path).expanduser()
    f = p / STYLE_FILE if p.is_dir() else p
    if f.is_file():
        d = torch.load(f, map_location="cpu", weights_only=True)
        if isinstance(d, dict) and d.get("format") == FORMAT_J:
            return d
    d = read_style(path)
    if d.get("format") != FORMAT:
        raise InputError(p, "not a stylised model")
    return d
