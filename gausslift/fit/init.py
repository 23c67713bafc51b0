"""Initial Gaussians: from the capture's 3D points, else random inside the space the cameras see,
carved by the masks into a visual hull when there are masks.

The carving works on a voxel grid over the common field of view: a voxel stays when it projects inside
the mask in at least ``hull_keep`` of the views that see it. Points are then drawn uniformly inside the
kept voxels and coloured by the mean of the images they project to.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gausslift.cameras import Camera, nearest_point_to_rays
from gausslift.errors import InputError
from gausslift.fit.config import FitConfig
from gausslift.fit.data import pixels

SH_C0 = 0.28209479177387814
Masks = list[torch.Tensor] | None


def scene_extent(cams: Camera) -> float:
    """Scene scale as gsplat: 1.1 x the largest distance of a camera centre from their mean."""
    c = cams.center
    return float(1.1 * np.linalg.norm(c - c.mean(0), axis=1).max()) or 1.0


def look_centre(cams: Camera) -> np.ndarray:
    """The point closest (least squares) to all optical axes; the mean camera's focus for a rig
    whose axes are nearly parallel."""
    o, d = cams.center, cams.forward
    p = nearest_point_to_rays(o, d)
    if p is not None:
        return p
    depth = np.linalg.norm(o - o.mean(0), axis=1).max() + 1.0
    return o.mean(0) + depth * d.mean(0) / np.linalg.norm(d.mean(0))


def view_region(cams: Camera, cfg: FitConfig) -> tuple[np.ndarray, float]:
    """Centre and half-size of a cube that the cameras see."""
    c = look_centre(cams)
    dist = np.linalg.norm(cams.center - c, axis=1)
    half_w = cams.width / (2 * cams.K[:, 0, 0])
    half_h = cams.height / (2 * cams.K[:, 1, 1])
    return c, float(cfg.init_extent * np.min(dist * np.minimum(half_w, half_h)))


def _project(
    cams: Camera, i: int, pts: torch.Tensor, w: int, h: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    vm = torch.as_tensor(cams.viewmat[i], dtype=torch.float32)
    K = torch.as_tensor(cams.K[i], dtype=torch.float32)
    pc = pts @ vm[:3, :3].T + vm[:3, 3]
    z = pc[:, 2]
    uv = pc[:, :2] / z.clamp_min(1e-6)[:, None] @ K[:2, :2].T + K[:2, 2]
    u, v = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
    ok = (z > 1e-6) & (u >= 0) & (v >= 0) & (u < w) & (v < h)
    return u.clamp(0, w - 1), v.clamp(0, h - 1), ok


def carve(
    cams: Camera,
    images: list[torch.Tensor],
    masks: Masks,
    centres: torch.Tensor,
    keep: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which points stay (seen by half the views, inside the masks of ``keep`` of those) and their
    mean colour over the views that see them. Images and masks are float32 in [0, 1] or the fit's
    compact uint8 / uint16 views (:func:`gausslift.fit.data.pixels`)."""
    n = len(centres)
    seen = torch.zeros(n)
    inside = torch.zeros(n)
    rgb = torch.zeros(n, 3)
    for i in range(len(cams)):
        h, w = images[i].shape[:2]
        u, v, ok = _project(cams, i, centres, w, h)
        seen += ok
        inm = ok if masks is None else ok & (pixels(masks[i][v, u]).reshape(-1) > 0.5)
        inside += inm
        rgb += pixels(images[i][v, u]) * inm[:, None]  # only the sampled pixels become float
    stays = (seen >= max(1, 0.5 * len(cams))) & (inside >= keep * seen)
    return stays, rgb / inside.clamp_min(1)[:, None]


def _subsample(n: int, k: int = 32) -> list[int]:
    """At most k evenly spread view indices (carving with more views changes little)."""
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def random_init(
    cams: Camera,
    images: list[torch.Tensor],
    masks: Masks,
    cfg: FitConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    centre, half = view_region(cams, cfg)
    pick_views = _subsample(len(cams))
    cams = cams[pick_views]
    images = [images[i] for i in pick_views]
    masks = None if masks is None else [masks[i] for i in pick_views]
    res = 48
    axis = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    vox = torch.as_tensor(centre, dtype=torch.float32) + half * grid
    for keep in (cfg.hull_keep, 0.7, 0.5):
        stays, _ = carve(cams, images, masks, vox, keep)
        if int(stays.sum()) >= 8:
            break
    else:
        what = "inside the masks of" if masks is not None else "in front of"
        raise InputError(None, f"no point of the space the cameras see lies {what} most views seeing it")
    kept = vox[stays]
    pick = torch.randint(len(kept), (cfg.init_num_points,), generator=gen)
    jitter = (torch.rand(cfg.init_num_points, 3, generator=gen) - 0.5) * (2 * half / res)
    pts = kept[pick] + jitter
    _, rgb = carve(cams, images, masks, pts, 0.0)
    return pts, rgb.clamp(0, 1)


def knn_scales(pts: torch.Tensor, k: int = 3) -> torch.Tensor:
    """sqrt of the mean squared distance to the k nearest neighbours (3DGS init scale)."""
    from scipy.spatial import cKDTree

    x = pts.double().numpy()
    if len(x) <= 1:
        return torch.full((len(x),), 0.01)
    d, _ = cKDTree(x).query(x, k=min(k, len(x) - 1) + 1)
    d2 = (d[:, 1:] ** 2).mean(1)
    return torch.as_tensor(np.sqrt(np.maximum(d2, 1e-12)), dtype=torch.float32)


def init_params(
    cams: Camera,
    images: list[torch.Tensor],
    masks: Masks,
    cfg: FitConfig,
    gen: torch.Generator,
    points3d: np.ndarray | None = None,
    points_rgb: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Raw Gaussian parameters (means, quats wxyz, log scales, logit opacities, sh0, shN)."""
    if points3d is not None and len(points3d) > 0:
        pts = torch.as_tensor(np.asarray(points3d), dtype=torch.float32)
        if points_rgb is not None:
            rgb = torch.as_tensor(np.asarray(points_rgb), dtype=torch.float32).clamp(0, 1)
        else:
            rgb = torch.full_like(pts, 0.5)
    else:
        pts, rgb = random_init(cams, images, masks, cfg, gen)
    n = len(pts)
    scales = torch.log(knn_scales(pts) * cfg.init_scale)[:, None].repeat(1, 3)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    opac = torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity)))
    sh0 = ((rgb - 0.5) / SH_C0)[:, None, :]
    shN = torch.zeros(n, (cfg.sh_degree + 1) ** 2 - 1, 3)
    raw = {"means": pts, "quats": quats, "scales": scales, "opacities": opac, "sh0": sh0, "shN": shN}
    return {k: torch.nn.Parameter(v.contiguous().float()) for k, v in raw.items()}
