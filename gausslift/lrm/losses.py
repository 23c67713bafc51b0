"""GS-LRM training losses on rendered target views, each term weighted by ``LossConfig``.

Images [B, V, H, W, 3] in [0, 1] (renders composited over the sample's background, targets composited
over the same one), masks and alphas [B, V, H, W]. Every term is a mean per view, then over views and
the batch, so a batch split over processes averages to the same value (DDP averages gradients):

* ``l2``: MSE over all pixels; ``masked_l2``: MSE weighted by the target mask;
* ``ssim``: 1 - SSIM weighted by the mask (``gausslift.metrics.masked_ssim``, 11x11 Gaussian window);
* ``lpips`` / ``perceptual``: ``gausslift.metrics.LPIPS('vgg')`` / ``VGGPerceptual`` with weights from
  ``LossConfig.weights`` (a missing file is ``MissingWeightsError``, one line, before training starts);
* ``mask``: MSE between the rendered alpha and the mask.

Before ``l2_warmup_steps`` only ``l2``, ``masked_l2`` and ``mask`` count (FaceLift warms up on L2
before the perceptual terms join).
"""

from __future__ import annotations

import torch
from torch import nn

from gausslift.lrm.config import LossConfig
from gausslift.metrics import masked_ssim

TERMS = ("l2", "masked_l2", "ssim", "lpips", "perceptual", "mask")
WARMUP_TERMS = ("l2", "masked_l2", "mask")


class LRMLoss(nn.Module):
    """``loss(render, alpha, target, mask, step) -> (total, {term: value})`` (values detached)."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        weights = cfg.weights or None
        self.lpips = None
        self.vgg = None
        if cfg.lpips > 0:
            from gausslift.metrics import LPIPS

            self.lpips = LPIPS("vgg", weights=weights)
        if cfg.perceptual > 0:
            from gausslift.metrics import VGGPerceptual

            self.vgg = VGGPerceptual(weights=weights)

    def terms(self, step: int) -> list[str]:
        live = [t for t in TERMS if getattr(self.cfg, t) > 0]
        if step < self.cfg.l2_warmup_steps:
            live = [t for t in live if t in WARMUP_TERMS]
        return live

    def forward(self, render, alpha, target, mask, step: int = 1 << 62):
        out: dict[str, torch.Tensor] = {}
        m = mask[..., None]
        for t in self.terms(step):
            if t == "l2":
                v = ((render - target) ** 2).mean()
            elif t == "masked_l2":
                err = ((render - target) ** 2 * m).sum(dim=(-3, -2, -1))
                v = (err / (3.0 * mask.sum(dim=(-2, -1)).clamp_min(1.0))).mean()
            elif t == "ssim":
                v = (1.0 - masked_ssim(render, target, mask)).mean()
            elif t == "lpips":
                v = self.lpips(render, target).mean()
            elif t == "perceptual":
                v = self.vgg(render, target).mean()
            else:  # mask
                v = ((alpha - mask) ** 2).mean()
            out[t] = v
        total = sum(getattr(self.cfg, t) * v for t, v in out.items())
        if not out:
            total = render.sum() * 0.0
        return total, {k: v.detach() for k, v in out.items()}
