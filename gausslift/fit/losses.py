"""Training losses, each switched on by its weight in :class:`FitConfig`.

Images are [..., H, W, 3] in [0, 1] (channels last), alpha and masks [..., H, W, 1].
"""

from __future__ import annotations

import torch

from gausslift.errors import MissingWeightsError
from gausslift.fit.config import FitConfig


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable SSIM map with 'same' padding, as the 3DGS training loss."""
    from gausslift.metrics import ssim_map as _ssim_map

    return _ssim_map(a, b, 11, 1.5, 1.0, "same")


def _masked_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    w = w.expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1e-6)


class Perceptual:
    """A perceptual loss from gausslift.metrics (VGG or LPIPS); weights from ``perceptual_weights``
    (else $GAUSSLIFT_WEIGHTS or ~/.cache/gausslift/weights); a clear error when they are absent."""

    def __init__(self, cfg: FitConfig, device: torch.device | str = "cpu"):
        from gausslift import metrics

        weights = cfg.perceptual_weights or None
        if cfg.use_lpips_loss:
            self.net = metrics.LPIPS("vgg", weights=weights)
        elif cfg.use_vgg_loss:
            self.net = metrics.VGGPerceptual(weights=weights)
        else:
            raise MissingWeightsError("lambda_perceptual > 0 needs use_vgg_loss=true or use_lpips_loss=true")
        self.net = self.net.to(device)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b).mean()


def compute_loss(
    cfg: FitConfig,
    render: torch.Tensor,
    alpha: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    perceptual: Perceptual | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts (detached 0-d tensors on the render's device: read them back only when
    logging). ``gt`` is already composited on the same background as ``render``."""
    parts: dict[str, torch.Tensor] = {}
    l1 = (render - gt).abs().mean()
    ssim = ssim_map(render, gt)
    parts["l1"] = (1 - cfg.ssim_lambda) * l1
    parts["ssim"] = cfg.ssim_lambda * (1 - ssim.mean())
    if mask is not None:
        if cfg.masked_l2_loss > 0:
            parts["masked_l2"] = cfg.masked_l2_loss * _masked_mean((render - gt) ** 2, mask)
        if cfg.masked_ssim_loss > 0:
            parts["masked_ssim"] = cfg.masked_ssim_loss * (1 - _masked_mean(ssim, mask))
        if cfg.background_loss_weight > 0:
            parts["background"] = cfg.background_loss_weight * _masked_mean(alpha, 1 - mask)
        if cfg.alpha_loss_weight > 0:
            parts["alpha"] = cfg.alpha_loss_weight * (alpha - mask).abs().mean()
    if cfg.scale_reg > 0:
        parts["scale_reg"] = cfg.scale_reg * params["scales"].exp().mean()
    if cfg.opacity_reg > 0:
        parts["opacity_reg"] = cfg.opacity_reg * torch.sigmoid(params["opacities"]).mean()
    if perceptual is not None and cfg.lambda_perceptual > 0:
        parts["perceptual"] = cfg.lambda_perceptual * perceptual(render, gt)
    total = sum(parts.values())
    return total, {k: v.detach() for k, v in parts.items()}
