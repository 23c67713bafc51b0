"""How well generated views match the truth on held-out six-view samples.

For each sample the front view (view 0, composited over white) conditions the pipeline; the V-1 other
views are "unseen". Per unseen view: mask IoU of the generated silhouette (pixels farther than `threshold`
from white in any channel) against the true alpha (> 0.5), PSNR and SSIM against the true view over white.
The baseline copies the input to every view: its silhouette for IoU, its image for PSNR/SSIM.
``draws`` > 1 scores the per-pixel median of that many draws (``pipeline.consensus_views``).
Camera-mode view conditioning gets each sample's own camera angles (opencv_cameras.json).
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.metrics import mask_iou, psnr, ssim
from gausslift.mvdiff.data import composite, load_rgba, sample_angles, view_path
from gausslift.mvdiff.pipeline import consensus_views

WHITE = (1.0, 1.0, 1.0)


def silhouette(views: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """[..., H, W, 3] over white -> [..., H, W] float mask."""
    return (np.abs(views - 1.0).max(-1) > threshold).astype(np.float32)


def evaluate(pipe, samples, steps: int = 20, guidance: float = 3.0, seed: int = 0, threshold: float = 0.1,
             progress=None, draws: int = 1) -> dict:  # fmt: skip
    """Mean metrics over the unseen views of `samples`, for the model and the copy-the-input baseline;
    `sheets` holds, per sample, rows (generated, truth) of [V, H, W, 3] for contact sheets."""
    v, res = pipe.num_views, pipe.resolution
    per, sheets = [], []
    for s in progress(samples) if progress else samples:
        rgba = np.stack([load_rgba(view_path(s, k), res) for k in range(v)])
        truth, alpha = composite(rgba, WHITE), rgba[..., 3]
        gen = torch.Generator().manual_seed(seed)
        angles = sample_angles(s, v) if getattr(pipe, "views", None) is not None and \
            pipe.views.config.mode == "camera" else None  # fmt: skip
        rig = {} if angles is None else {"elevation_deg": angles[0], "azimuth_deg": angles[1]}
        pred = consensus_views(pipe, truth[0], draws, num_inference_steps=steps, guidance_scale=guidance,
                               generator=gen, **rig)  # fmt: skip
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[1:]))
        copy = np.broadcast_to(truth[:1], truth.shape)
        per.append({
            "iou": mask_iou(t(silhouette(pred, threshold)), t(alpha)).mean().item(),
            "iou_baseline": mask_iou(t(np.broadcast_to(alpha[:1], alpha.shape)), t(alpha)).mean().item(),
            "psnr": psnr(t(pred), t(truth)).mean().item(),
            "psnr_baseline": psnr(t(copy), t(truth)).mean().item(),
            "ssim": ssim(t(pred), t(truth)).mean().item(),
            "ssim_baseline": ssim(t(copy), t(truth)).mean().item(),
        })  # fmt: skip
        sheets.append((pred, truth))
    keys = per[0].keys() if per else ()
    return {"samples": len(per), "steps": steps, "guidance": guidance, "draws": draws,
            **{k: float(np.mean([p[k] for p in per])) for k in keys}, "per_sample": per,
            "sheets": sheets}  # fmt: skip
