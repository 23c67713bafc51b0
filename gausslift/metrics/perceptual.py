"""VGG19 perceptual loss: L1 between feature maps at relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 with
weights 1/32, 1/16, 1/8, 1/4, 1 on ImageNet-normalised inputs (pix2pixHD's layer weighting, taken at
the last ReLU of each VGG19 block). The torchvision checkpoint ``vgg19-dcbb9e9d.pth`` comes from the
user (see :mod:`gausslift.metrics.nets`); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gausslift.metrics.nets import FeatureNet, backbone

TAPS = ["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"]
LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGPerceptual(nn.Module):
    """``VGGPerceptual(weights)(img, ref)`` -> loss per image [...] for [..., H, W, 3] in [0, 1]."""

    def __init__(
        self,
        weights: str | Path | None = None,
        layer_weights: tuple[float, ...] = LAYER_WEIGHTS,
    ):
        super().__init__()
        if len(layer_weights) != len(TAPS):
            raise ValueError(f"need {len(TAPS)} layer weights, got {len(layer_weights)}")
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.trunk: FeatureNet = backbone("vgg19", TAPS, weights, "VGG19 perceptual loss")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if img.shape != ref.shape or img.ndim < 3 or img.shape[-1] != 3:
            raise ValueError(f"need two [..., H, W, 3] images, got {tuple(img.shape)}, {tuple(ref.shape)}")
        lead, (h, w) = img.shape[:-3], img.shape[-3:-1]
        n = img.reshape(-1, h, w, 3).shape[0]
        both = torch.cat([img.reshape(-1, h, w, 3), ref.reshape(-1, h, w, 3)]).permute(0, 3, 1, 2)
        both = (both.to(self.mean.device, torch.float32) - self.mean) / self.std
        total = 0.0
        for wgt, f in zip(self.layer_weights, self.trunk(both)):
            total = total + wgt * (f[:n] - f[n:]).abs().mean(dim=(1, 2, 3))
        return total.reshape(lead)
