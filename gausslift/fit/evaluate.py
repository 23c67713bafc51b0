"""Rendering a finished run's views and scoring them against the capture.

The caller (the CLI) reads the scene; views are rendered on the run's background, and the ground
truth is composited on the same background with its mask as alpha. Metrics: PSNR, SSIM, LPIPS
(when weights are given), masked PSNR and mask IoU (when the capture has masks).

Rendering happens on the parameters' device (``evaluate(..., device=)`` moves them there: a run
fitted on a GPU scores on a CPU and the other way round); images come back to the host only to be
written.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gausslift.fit.config import background_rgb
from gausslift.fit.data import ViewData, composite, load_views, on_device
from gausslift.fit.model import render_params
from gausslift.fit.runs import sh_degree_of
from gausslift.ioutil import atomic_path
from gausslift.scene import View
from gausslift.train.device import resolve_device, synchronize


def safe_name(name: str) -> str:
    """A view name as a relative file path: '/' keeps sub-folders (``test/r_0``), odd characters
    and '.'/'..' segments become '_'."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in name.split("/") if p]
    parts = ["_" if set(p) <= {"."} else p for p in parts]
    return "/".join(parts) or "view"


def params_on(params: dict[str, torch.Tensor], device: str | torch.device = "auto", backend: str = "auto"):
    """(params moved to the resolved device, that device)."""
    dev = resolve_device(device, backend)
    return {k: v.detach().to(dev) for k, v in params.items()}, dev


def render_view(params, vd: ViewData, bg: torch.Tensor, backend: str = "auto"):
    """(rgb [H,W,3], alpha [H,W,1]) in [0,1] on the parameters' device."""
    h, w = vd.image.shape[:2]
    dev = params["means"].device
    with torch.no_grad():
        rgb, alpha, _ = render_params(
            params, vd.viewmat[None].to(dev), vd.K[None].to(dev), w, h, sh_degree_of(params), bg.to(dev),
            backend,
        )  # fmt: skip
    return rgb[0].clamp(0, 1), alpha[0].clamp(0, 1)


def render_cameras(params, viewmats, Ks, width: int, height: int, bg, backend: str = "auto"):
    """Yield (rgb [H,W,3], alpha [H,W,1]) on the CPU for cameras given as numpy [C,4,4] and [C,3,3]
    (rendered on the parameters' device)."""
    dev = params["means"].device
    vm = torch.as_tensor(np.asarray(viewmats), dtype=torch.float32, device=dev)
    K = torch.as_tensor(np.asarray(Ks), dtype=torch.float32, device=dev)
    bg = bg.to(dev)
    for i in range(len(vm)):
        with torch.no_grad():
            rgb, alpha, _ = render_params(
                params, vm[i : i + 1], K[i : i + 1], width, height, sh_degree_of(params), bg, backend
            )
        yield rgb[0].clamp(0, 1).cpu(), alpha[0].clamp(0, 1).cpu()


def write_rgba(path: str | Path, rgb: torch.Tensor, alpha: torch.Tensor) -> None:
    """An RGBA 8-bit PNG, written atomically."""
    import cv2

    rgba = torch.cat([rgb, alpha], -1).detach().cpu().numpy()
    img = (np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8)[..., [2, 1, 0, 3]]
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"could not write {path}")


def iter_views(views: list[View], downscale: int = 1) -> Iterator[ViewData]:
    for v in views:
        yield load_views([v], downscale)[0]


def evaluate(
    params: dict[str, torch.Tensor],
    views: list[View],
    background: str,
    downscale: int = 1,
    backend: str = "auto",
    lpips=None,
    device: str | torch.device = "auto",
) -> tuple[list[dict], dict]:
    """Per-view rows and their means; ``lpips`` is an optional ``gausslift.metrics.LPIPS``;
    ``device`` as :func:`gausslift.train.device.resolve_device` (for ``backend``)."""
    from gausslift import metrics

    params, dev = params_on(params, device, backend)
    if lpips is not None:
        lpips = lpips.to(dev)
    bg = torch.tensor(background_rgb(background), dtype=torch.float32, device=dev)
    rows, render_s = [], []
    for vd in iter_views(views, downscale):
        vd = on_device(vd, dev)
        synchronize(dev)
        t = time.perf_counter()
        rgb, alpha = render_view(params, vd, bg, backend)
        synchronize(dev)
        render_s.append(time.perf_counter() - t)
        gt = composite(vd.image, vd.mask, bg)
        row = {
            "view": vd.name,
            "psnr": float(metrics.psnr(rgb, gt)),
            "ssim": float(metrics.ssim(rgb, gt)),
        }
        if lpips is not None:
            with torch.no_grad():
                row["lpips"] = float(lpips(rgb, gt))
        if vd.mask is not None:
            row["masked_psnr"] = float(metrics.masked_psnr(rgb, gt, vd.mask[..., 0]))
            row["mask_iou"] = float(metrics.mask_iou(alpha[..., 0], vd.mask[..., 0]))
        rows.append(row)
    keys = [k for k in rows[0] if k != "view"] if rows else []
    summary = {k: _mean([r[k] for r in rows]) for k in keys}
    summary["num_views"] = len(rows)
    summary["device"] = str(dev)
    summary["num_gaussians"] = len(params["means"])
    timed = render_s[1:] if len(render_s) > 1 else render_s  # the first render warms caches up
    summary["render_fps"] = round(len(timed) / max(sum(timed), 1e-9), 2) if timed else None
    return rows, summary


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
