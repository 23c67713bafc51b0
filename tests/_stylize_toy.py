"""A toy linear head for the stylize tests: a UV sphere (~300 vertices, radius 10 'cm') with 4 smooth
identity deltas and 3 expression deltas (one opens a 'jaw'), regions for both procedural styles."""

from __future__ import annotations

import numpy as np
import torch

from gausslift.subjects.base import Subject, SubjectOutput, axis_angle_to_matrix


def uv_sphere(rows: int = 14, cols: int = 20, r: float = 10.0):
    th = np.linspace(0.15, np.pi - 0.15, rows)
    ph = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    # y up, the face towards +z
    v = np.stack([r * np.sin(T) * np.sin(P), r * np.cos(T), r * np.sin(T) * np.cos(P)], -1).reshape(-1, 3)
    f = []
    for i in range(rows - 1):
        for j in range(cols):
            a, b = i * cols + j, i * cols + (j + 1) % cols
            c, d = a + cols, b + cols
            f += [(a, c, b), (b, c, d)]  # outward winding
    return v, np.array(f)


class ToyHead(Subject):
    name = "toy"
    units = "cm"

    def __init__(self, seed: int = 0):
        v, f = uv_sphere()
        super().__init__(f)
        rng = np.random.default_rng(seed)
        u = v / 10.0
        feats = np.stack(
            [u[:, 0], u[:, 1], u[:, 2], u[:, 0] * u[:, 1], u[:, 1] ** 2 - 0.3, u[:, 0] * u[:, 2]], 1
        )
        ident = np.einsum("vk,nkc->nvc", feats, rng.normal(0, 0.4, (4, feats.shape[1], 3)))
        jaw = np.where((u[:, 1] < -0.2) & (u[:, 2] > 0), 1.0, 0.0)[:, None] * np.array([0, -1.5, 0.3])
        smile = (u[:, 2] > 0.5)[:, None] * np.stack([0.6 * u[:, 0], 0 * u[:, 0], 0 * u[:, 0]], 1)
        brow = (u[:, 1] > 0.4)[:, None] * np.array([0, 0.5, 0.2]) * (u[:, 2:3] > 0)
        self.register_buffer("neutral", torch.as_tensor(v, dtype=torch.float32))
        self.register_buffer("ib", torch.as_tensor(ident.reshape(4, -1), dtype=torch.float32))
        self.register_buffer(
            "eb", torch.as_tensor(np.stack([jaw, smile, brow]).reshape(3, -1), dtype=torch.float32)
        )
        self.param_shapes = {"identity": (4,), "expression": (3,), "rotation": (3,), "translation": (3,)}
        x, y, z = u.T
        front = z > 0.3
        self.regions = {
            "skin": np.ones(len(v), bool),
            "face": z > 0,
            "nose": (z > 0.9),
            "ears": np.abs(x) > 0.85,
            "mouth": front & (y < -0.3) & (y > -0.6),
            "eyes": front & (y > 0.1) & (y < 0.45) & (np.abs(x) > 0.2) & (np.abs(x) < 0.6),
        }

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    def forward(self, params):
        p = self._prepared(params)
        B = p["identity"].shape[0]
        v = self.neutral + (p["identity"] @ self.ib + p["expression"] @ self.eb).reshape(B, -1, 3)
        R = axis_angle_to_matrix(p["rotation"])
        return SubjectOutput(vertices=v @ R.transpose(1, 2) + p["translation"][:, None])

    def sample_params(self, rng, batch: int = 1, **kw):
        return self._as_tensors(
            {
                "identity": rng.normal(0, 1, (batch, 4)),
                "expression": rng.random((batch, 3)),
                "rotation": rng.normal(0, 0.1, (batch, 3)),
                "translation": np.zeros((batch, 3)),
            }
        )

    def sample_sequence(self, rng, frames: int, **kw):
        p = self.sample_params(rng, frames)
        p["identity"] = p["identity"][:1].repeat(frames, 1)
        return p
