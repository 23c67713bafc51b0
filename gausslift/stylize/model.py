"""The networks as weight dicts (functional): the latent -> mesh decoder (its forward lives in
:mod:`gausslift.subjects.styled` so stylised subjects load without this package), the mesh -> latent
encoder, dense surface sampling, vertex normals and the samplers of training latents.

Encoder: ``z = x @ L + mlp(x)`` with ``x`` the offsets from the template of ``points`` fixed surface
samples (barycentric points on area-weighted random triangles), divided by ``scale``.
Both networks start with their linear part from ridge regression on random samples (the warm
start) and their non-linear part at zero; Adam then trains everything on fresh samples.
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.subjects.styled import base_decode, decode, field, latent, mlp

LATENT_KEYS = ("identity", "shape", "expression")


def latent_keys(subject) -> tuple[str, ...]:
    return tuple(k for k in LATENT_KEYS if k in subject.param_shapes)


def latent_size(subject) -> int:
    return sum(subject.param_shapes[k][0] for k in latent_keys(subject))


def sample_latents(subject, rng: np.random.Generator, batch: int) -> dict:
    """Random parameters with the pose (rotation, translation, eyes, ...) at zero."""
    p = subject.sample_params(rng, batch)
    keys = latent_keys(subject)
    zero = subject.zero_params(batch)
    return {k: (p[k] if k in keys else zero[k]) for k in subject.param_shapes}


def meshes(subject, params: dict) -> torch.Tensor:
    with torch.no_grad():
        return subject(params).vertices.float()


def surface_samples(verts, faces, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` area-weighted random points on the mesh: (face index [n], barycentrics [n, 3])."""
    v = np.asarray(verts, np.float64)
    f = np.asarray(faces)
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    fi = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    return torch.as_tensor(fi), torch.as_tensor(bary, dtype=torch.float32)


def points(verts: torch.Tensor, faces: torch.Tensor, fi: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Surface points [B, n, 3] of meshes [B, V, 3] at (face index, barycentrics)."""
    corner = verts[:, faces[fi]]  # [B, n, 3, 3]
    return (corner * bary.to(verts.dtype)[None, :, :, None]).sum(2)


_INCIDENCE: dict = {}


def incidence(faces: torch.Tensor, V: int) -> torch.Tensor:
    """Sparse [V, F] vertex-face incidence (cached by the faces' storage)."""
    key = (faces.data_ptr(), tuple(faces.shape), V)
    if key not in _INCIDENCE:
        F = faces.shape[0]
        idx = torch.stack([faces.T.reshape(-1), torch.arange(F).repeat(3)])
        _INCIDENCE.clear()
        _INCIDENCE[key] = torch.sparse_coo_tensor(
            idx, torch.ones(3 * F), (V, F), check_invariants=False
        ).coalesce()
    return _INCIDENCE[key]


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [B, V, 3], differentiable."""
    a, b, c = (verts[:, faces[:, i]] for i in range(3))
    n = torch.cross(b - a, c - a, dim=-1)  # [B, F, 3]
    B, F = n.shape[:2]
    S = incidence(faces, verts.shape[1]).to(n.dtype)
    out = torch.sparse.mm(S, n.permute(1, 0, 2).reshape(F, B * 3)).reshape(-1, B, 3).permute(1, 0, 2)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _dense(rng, shape, fan_in, scale=1.0):
    return torch.as_tensor(rng.normal(0, scale / np.sqrt(fan_in), shape), dtype=torch.float32)


def init_decoder(Z: int, V: int, hidden: int, scale: float, rng) -> dict:
    """The latent part (linear parts at zero until the warm start) and its ``scale``."""
    return {
        "template": torch.zeros(V, 3),
        "L": torch.zeros(Z, 3 * V),
        "R": torch.zeros(hidden, 3 * V),
        "dW1": _dense(rng, (Z, hidden), Z),
        "db1": torch.zeros(hidden),
        "dW2": _dense(rng, (hidden, hidden), hidden),
        "db2": torch.zeros(hidden),
        "scale": torch.tensor(float(scale)),
    }


def farthest_points(v: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` farthest-point samples of ``v`` (from the point nearest the centroid)."""
    n = min(n, len(v))
    idx = [int(np.argmin(((v - v.mean(0)) ** 2).sum(1)))]
    d = ((v - v[idx[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        idx.append(int(np.argmax(d)))
        d = np.minimum(d, ((v - v[idx[-1]]) ** 2).sum(1))
    return np.asarray(idx)


def init_field(template, points: int, width: float = 1.0) -> dict:
    """The style field at zero: ``points`` control points on the template (farthest-point samples),
    ``sigma`` = ``width`` x their mean nearest-neighbour spacing."""
    from scipy.spatial import cKDTree

    t = np.asarray(template, np.float64)
    c = t[farthest_points(t, points)]
    spacing = cKDTree(c).query(c, k=2)[0][:, 1].mean()
    return {
        "centres": torch.as_tensor(c, dtype=torch.float32),
        "sigma": torch.tensor(float(width * spacing)),
        "b": torch.zeros(len(c), 3),
        "A": torch.zeros(len(c), 3, 3),
    }


DECODER_FIELD = ("b", "A")
DECODER_BASE = ("template", "L", "R", "dW1", "db1", "dW2", "db2")


def init_encoder(P: int, Z: int, hidden: int, scale: float, rng) -> dict:
    return {
        "template": torch.zeros(P, 3),
        "L": torch.zeros(3 * P, Z),
        "c": torch.zeros(Z),
        "eW1": _dense(rng, (3 * P, hidden), 3 * P),
        "eb1": torch.zeros(hidden),
        "eW2": torch.zeros(hidden, Z),
        "eb2": torch.zeros(Z),
        "scale": torch.tensor(float(scale)),
    }


def encode(e: dict, pts: torch.Tensor) -> torch.Tensor:
    """Surface points [B, P, 3] (at the encoder's fixed samples) -> latents [B, Z]."""
    x = ((pts - e["template"]) / e["scale"]).flatten(1)
    return x @ e["L"] + e["c"] + mlp(e, "e", x, 2)


class Ridge:
    """Least squares ``Y ~ X @ W + b`` with a small ridge, accumulated over batches in float64."""

    def __init__(self):
        self.n, self.sx, self.sy, self.xx, self.xy = 0, 0, 0, 0, 0

    def add(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        X, Y = X.double(), Y.double()
        self.n += len(X)
        self.sx, self.sy = self.sx + X.sum(0), self.sy + Y.sum(0)
        self.xx, self.xy = self.xx + X.T @ X, self.xy + X.T @ Y

    def solve(self, lam: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
        mx, my = self.sx / self.n, self.sy / self.n
        A = self.xx / self.n - torch.outer(mx, mx)
        A = A + lam * A.diagonal().mean() * torch.eye(A.shape[0], dtype=A.dtype)
        W = torch.linalg.solve(A, self.xy / self.n - torch.outer(mx, my))
        return W.float(), (my - mx @ W).float()


def warm_start(dec: dict, enc: dict, subject, enc_samples, rng, n: int) -> None:
    """The linear parts from ridge regression on ``n`` random samples (in place): two passes (the
    encoder's template is the mean of the first)."""
    keys = latent_keys(subject)
    rd, batches = Ridge(), []
    for i in range(0, n, 256):
        p = sample_latents(subject, rng, min(256, n - i))
        z, v = latent(p, keys).float(), meshes(subject, p)
        rd.add(z, v.flatten(1))
        batches.append((z, points(v, subject.faces, *enc_samples)))
    W, b = rd.solve()
    dec["L"], dec["template"] = W, b.reshape(-1, 3)
    enc["template"] = torch.cat([p for _, p in batches]).mean(0)
    re = Ridge()
    for z, pts in batches:
        re.add(((pts - enc["template"]) / enc["scale"]).flatten(1), z)
    enc["L"], enc["c"] = re.solve()


__all__ = [
    "base_decode",
    "decode",
    "encode",
    "field",
    "init_decoder",
    "init_field",
    "init_encoder",
    "latent_keys",
    "latent",
    "points",
    "surface_samples",
    "vertex_normals",
    "warm_start",
    "sample_latents",
]
