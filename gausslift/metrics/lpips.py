"""LPIPS (Zhang et al. 2018, v0.1) with VGG16 or AlexNet trunks, from user-supplied weight files.

Two files are needed, never downloaded (see :mod:`gausslift.metrics.nets` for where they are looked
up): the torchvision ImageNet backbone (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) and the
linear heads of the official ``lpips`` package (``weights/v0.1/vgg.pth`` / ``alex.pth`` there, with
keys ``lin0.model.1.weight`` ...), saved here as ``lpips_vgg.pth`` / ``lpips_alex.pth`` (or
``lpips/vgg.pth`` / ``lpips/alex.pth``).

The distance follows the reference: inputs in [0, 1] are mapped to [-1, 1], shifted and scaled by
the LPIPS constants, features at five ReLUs are unit-normalised along channels, their squared
difference is weighted per channel by the (non-negative) linear head, averaged over space and summed
over layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gausslift.errors import InputError
from gausslift.metrics.nets import FeatureNet, backbone, find_weight_file, load_state_dict

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

NETS = {
    # name: (backbone arch, tapped ReLUs, head file name)
    "vgg": ("vgg16", ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"], "lpips_vgg.pth"),
    "alex": ("alexnet", ["relu1", "relu2", "relu3", "relu4", "relu5"], "lpips_alex.pth"),
}
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def normalize_features(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit length along the channel dim (dim 1), as the reference ``normalize_tensor``."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


def head_file(net: str, weights: str | Path | None = None) -> Path:
    canonical = NETS[net][2]
    short = "vgg" if net == "vgg" else "alex"
    return find_weight_file(canonical, (f"lpips/{short}.pth", f"{short}.pth"), weights, f"LPIPS-{net} head")


class LPIPS(nn.Module):
    """``LPIPS(net)(img, ref)`` -> distance per image [...] for images [..., H, W, 3] in [0, 1].

    ``weights``: a folder holding both files (else ``$GAUSSLIFT_WEIGHTS``, ``~/.cache/gausslift/weights``);
    ``backbone_path`` / ``head_path`` name the files directly. Frozen, differentiable in its inputs.
    """

    def __init__(
        self,
        net: str = "vgg",
        weights: str | Path | None = None,
        backbone_path: str | Path | None = None,
        head_path: str | Path | None = None,
    ):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
        self.net_name = net
        arch, taps, _ = NETS[net]
        self.trunk: FeatureNet = backbone(arch, taps, backbone_path or weights, f"LPIPS-{net} backbone")
        self.heads = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, c, 1, 1), requires_grad=False) for c in CHANNELS[net]]
        )
        self.load_heads(Path(head_path) if head_path else head_file(net, weights))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load_heads(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(path, "LPIPS head file is missing")
        sd = load_state_dict(path)
        for i, p in enumerate(self.heads):
            key = f"lin{i}.model.1.weight"
            if key not in sd:
                raise InputError(path, f"not an lpips linear-head file: no key {key}")
            if tuple(sd[key].shape) != tuple(p.shape):
                raise InputError(path, f"{key} has shape {list(sd[key].shape)}, expected {list(p.shape)}")
            p.data.copy_(sd[key].float())

    def train(self, mode: bool = True):
        return super().train(False)

    def distance_from_features(self, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> torch.Tensor:
        """Sum over layers of the head-weighted, spatially averaged squared differences of the
        unit-normalised features; [B]."""
        total = 0.0
        for a, b, w in zip(f0, f1, self.heads):
            d = (normalize_features(a) - normalize_features(b)) ** 2
            total = total + (d * w).sum(dim=1).mean(dim=(-2, -1))
        return total

    def forward(self, img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if img.shape != ref.shape or img.ndim < 3 or img.shape[-1] != 3:
            raise ValueError(f"LPIPS needs [..., H, W, 3] pairs, got {tuple(img.shape)} {tuple(ref.shape)}")
        lead, (h, w) = img.shape[:-3], img.shape[-3:-1]
        dev = self.shift.device

        def prep(x):
            x = x.reshape(-1, h, w, 3).permute(0, 3, 1, 2).to(dev, torch.float32)
            return ((2 * x - 1) - self.shift) / self.scale

        x, y = prep(img), prep(ref)
        return self.distance_from_features(self.trunk(x), self.trunk(y)).reshape(lead)
