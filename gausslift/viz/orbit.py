"""Orbit cameras around a subject and turntable videos of splats (rendered with gausslift.render)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gausslift.cameras import FACELIFT_ELEVATION_DEG, FACELIFT_FOV_DEG, FACELIFT_RADIUS, Camera, ring
from gausslift.splats import Splats
from gausslift.viz.video import write_video


def orbit_cameras(
    n: int = 120,
    radius: float = FACELIFT_RADIUS,
    elevation_deg: float = FACELIFT_ELEVATION_DEG,
    fov_deg: float = FACELIFT_FOV_DEG,
    size: int | tuple[int, int] = 512,
    target=(0.0, 0.0, 0.0),
    up=(0.0, 0.0, 1.0),
    azimuth0_deg: float = 0.0,
) -> Camera:
    """``n`` cameras evenly spaced on a full circle around ``target`` (batched Camera)."""
    if n < 1:
        raise ValueError("an orbit needs at least one camera")
    return ring(n, radius, elevation_deg, fov_deg, size, azimuth0_deg=azimuth0_deg, target=target, up=up)


def framing(splats: Splats, fov_deg: float = FACELIFT_FOV_DEG, margin: float = 1.15) -> tuple:
    """(target, radius) that frame the visible splats: the median of the means of splats with
    opacity > 0.1 (all when none are) and a distance at which the 95th-percentile extent fits the
    field of view."""
    means = splats.means.detach().cpu().double().numpy()
    if len(means) == 0:
        return np.zeros(3), FACELIFT_RADIUS
    vis = splats.opacities_act.detach().cpu().numpy() > 0.1
    pts = means[vis] if vis.any() else means
    target = np.median(pts, axis=0)
    extent = float(np.percentile(np.linalg.norm(pts - target, axis=1), 95))
    extent = max(extent, 1e-3)
    return target, margin * extent / np.sin(np.radians(fov_deg) / 2)


def _as_torch(cam: Camera, device) -> tuple[torch.Tensor, torch.Tensor]:
    vm = torch.as_tensor(cam.viewmat, dtype=torch.float32, device=device).reshape(-1, 4, 4)
    K = torch.as_tensor(cam.K, dtype=torch.float32, device=device).reshape(-1, 3, 3)
    return vm, K


def render_frames(
    splats: Splats,
    cameras: Camera,
    background=(1.0, 1.0, 1.0),
    backend: str = "auto",
) -> Iterator[torch.Tensor]:
    """Render one camera at a time (bounded memory); yields [H, W, 3] float tensors on the CPU."""
    from gausslift.render import rasterize

    cams = cameras if cameras.batch_shape else Camera.stack([cameras])
    dev = splats.device
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev).reshape(1, 3)
    args = splats.render_args()
    with torch.no_grad():
        for cam in cams:
            vm, K = _as_torch(cam, dev)
            renders, _, _ = rasterize(
                viewmats=vm,
                Ks=K,
                width=cams.width,
                height=cams.height,
                backgrounds=bg,
                backend=backend,
                **args,
            )
            yield renders[0, ..., :3].clamp(0, 1).cpu()


def render_turntable(
    splats: Splats,
    cameras: Camera,
    path: str | Path,
    background=(1.0, 1.0, 1.0),
    backend: str = "auto",
    fps: float = 30,
    progress: bool = False,
) -> Path:
    """Render ``splats`` from every camera and encode an .mp4 at ``path`` (atomic)."""
    frames = render_frames(splats, cameras, background, backend)
    if progress:
        from gausslift.progress import progress as progress_bar

        frames = progress_bar(frames, total=len(cameras) if cameras.batch_shape else 1, desc="turntable")
    return write_video(frames, path, fps=fps)
