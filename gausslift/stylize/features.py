"""The rendered-feature side of fine-tuning: views around the head, differentiable normal / depth /
silhouette images from the project's mesh renderer, and the image encoders that compare them.

Differentiable renders: the numba rasteriser (:func:`gausslift.meshrender.render_mesh`) gives each
pixel its triangle and barycentrics (not differentiable, recomputed every step); the vertex
attributes (camera-space normals, depth) are interpolated with them in torch, so the image is
differentiable with respect to the vertices inside the silhouette. The silhouette itself is a
constant of the raster (no gradient at edges).

Encoders: ``pyramid`` (default): the normal, depth and silhouette channels at 1, 1/2 and 1/4
resolution (average pooling). It has no weights, so nothing to download or train, it sees the same
geometry at several scales, and on this CPU it costs a fraction of a step. ``clip``: CLIP's vision
tower from a local folder (``transformers``, the optional extra ``diffusion``), fed the normal
images, compared by cosine distance of the pooled embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gausslift.cameras import look_at
from gausslift.errors import InputError, MissingWeightsError
from gausslift.meshrender import render_mesh
from gausslift.stylize.model import vertex_normals


@dataclass
class View:
    K: np.ndarray
    viewmat: np.ndarray
    size: int


def views(verts, yaws=(-70.0, -25.0, 25.0, 70.0), pitch: float = 10.0, size: int = 96) -> list[View]:
    """Cameras on a ring around the head (y up, face +z) at 2.6 radii, looking at its centre."""
    v = np.asarray(verts, np.float64)
    c = 0.5 * (v.min(0) + v.max(0))
    r = 0.5 * np.linalg.norm(np.ptp(v, 0))
    dist = 2.6 * r
    f = 0.5 * size / np.tan(np.arcsin(1.0 / 2.6)) * 0.95
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    out = []
    for yaw in yaws:
        a, b = np.radians(yaw), np.radians(pitch)
        eye = c + dist * np.array([np.sin(a) * np.cos(b), np.sin(b), np.cos(a) * np.cos(b)])
        out.append(View(K, look_at(eye, c, (0.0, 1.0, 0.0)), size))
    return out


def rasterize(verts, faces, view: View):
    v = verts.detach().double().cpu().numpy() if torch.is_tensor(verts) else np.asarray(verts)
    return render_mesh(v, np.asarray(faces), view.K, view.viewmat, view.size, view.size, antialias=False)


def image(verts: torch.Tensor, faces: torch.Tensor, view: View, frame, normals=None) -> torch.Tensor:
    """[H, W, 5] normals (camera space), depth (relative to the camera distance), silhouette.
    ``normals``: the vertex normals [V, 3] when already computed."""
    M = torch.as_tensor(view.viewmat, dtype=verts.dtype)
    cam = verts @ M[:3, :3].T + M[:3, 3]
    normals = vertex_normals(verts[None], faces)[0] if normals is None else normals
    n = normals @ M[:3, :3].T
    dist = float(np.linalg.norm(view.viewmat[:3, 3]))
    attr = torch.cat([n, (cam[:, 2:] - dist) / dist], 1)
    tid = torch.as_tensor(frame.tri_id)
    hit = tid >= 0
    f = faces[tid.clamp_min(0).long()]  # [H, W, 3]
    b = torch.as_tensor(frame.bary, dtype=verts.dtype)
    vals = (attr[f] * b[..., None]).sum(2) * hit[..., None]
    return torch.cat([vals, hit[..., None].to(verts.dtype)], -1)


def pyramid(img: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    x = img.permute(2, 0, 1)[None]
    out = [x]
    for _ in range(levels - 1):
        x = torch.nn.functional.avg_pool2d(x, 2)
        out.append(x)
    return out


def pyramid_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 over the levels of two [H, W, C] images."""
    return sum((x - y).abs().mean() for x, y in zip(pyramid(a), pyramid(b))) / 3


class Clip:
    """CLIP's vision tower from a local folder (no downloads): normal images -> pooled embeddings."""

    def __init__(self, path: str):
        try:
            from transformers import CLIPVisionModel
        except ModuleNotFoundError:
            raise MissingWeightsError(
                "the CLIP feature encoder needs the optional extra 'diffusion' "
                "(transformers is not installed): pip install 'gausslift[diffusion]'"
            ) from None
        try:
            self.model = CLIPVisionModel.from_pretrained(path, local_files_only=True).eval()
        except OSError as e:
            raise InputError(path, f"cannot load CLIP weights ({e})") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mean = torch.tensor([0.4815, 0.4578, 0.4082])[:, None, None]
        self.std = torch.tensor([0.2686, 0.2613, 0.2758])[:, None, None]

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        x = (img[..., :3] * 0.5 + 0.5).permute(2, 0, 1).float()
        x = torch.nn.functional.interpolate(x[None], size=224, mode="bilinear", align_corners=False)
        return self.model(pixel_values=(x - self.mean) / self.std).pooler_output[0]

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - torch.nn.functional.cosine_similarity(self.embed(a), self.embed(b), dim=0)
