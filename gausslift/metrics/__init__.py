"""Image metrics and perceptual losses: PSNR, SSIM (and masked variants), mask IoU, LPIPS, VGG19
perceptual loss. Images are channels-last ``[..., H, W, C]`` in [0, 1]; one value per image."""

from gausslift.metrics.image import (
    gaussian_window,
    l1,
    l2,
    mask_iou,
    masked_psnr,
    masked_ssim,
    mse,
    psnr,
    ssim,
    ssim_map,
)
from gausslift.metrics.lpips import LPIPS
from gausslift.metrics.perceptual import VGGPerceptual

__all__ = [
    "LPIPS",
    "VGGPerceptual",
    "gaussian_window",
    "l1",
    "l2",
    "mask_iou",
    "masked_psnr",
    "masked_ssim",
    "mse",
    "psnr",
    "ssim",
    "ssim_map",
]
