"""VGG16, VGG19 and AlexNet convolutional trunks in plain torch, with torchvision's layer indices, so
torchvision checkpoints (``features.0.weight`` ...) load directly; and where pretrained weights live.

Nothing is ever downloaded. Weight files are looked up, in order, in: the path given by the caller
(the file itself, or a folder), the folder named by ``$GAUSSLIFT_WEIGHTS``, and
``~/.cache/gausslift/weights``. A missing file raises :class:`MissingWeightsError` naming the file and
those places.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import torch
from torch import nn

from gausslift.errors import InputError, MissingWeightsError

ENV_VAR = "GAUSSLIFT_WEIGHTS"
DEFAULT_DIR = Path("~/.cache/gausslift/weights")

# torchvision's file names (any file matching the pattern is accepted)
BACKBONE_FILES = {
    "vgg16": ("vgg16-397923af.pth", ("vgg16*.pth",)),
    "vgg19": ("vgg19-dcbb9e9d.pth", ("vgg19*.pth",)),
    "alexnet": ("alexnet-owt-7be5be79.pth", ("alexnet*.pth",)),
}

# (out_channels | "M" for max-pool) as in torchvision's VGG configurations D and E
_VGG_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
    + [512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def weight_dirs(weights: str | Path | None = None) -> list[Path]:
    """Folders searched for weight files: ``weights`` (a folder, or a file's folder), then
    ``$GAUSSLIFT_WEIGHTS``, then ``~/.cache/gausslift/weights``."""
    dirs = []
    if weights is not None:
        p = Path(weights).expanduser()
        dirs.append(p.parent if p.is_file() else p)
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(DEFAULT_DIR.expanduser())
    return dirs


def find_weight_file(
    canonical: str, patterns: tuple[str, ...] = (), weights: str | Path | None = None, what: str = ""
) -> Path:
    """The weight file ``canonical`` (or the first matching one of ``patterns``, which may hold a
    sub-folder such as ``lpips/vgg.pth``). ``weights`` may name the file itself or a folder."""
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in (canonical, *patterns)):
            return p
    dirs = weight_dirs(weights)
    for d in dirs:
        if (d / canonical).is_file():
            return d / canonical
        for pat in patterns:
            hits = sorted(h for h in d.glob(pat) if h.is_file()) if d.is_dir() else []
            if hits:
                return hits[0]
    places = ", ".join(str(d) for d in dirs)
    given = ""
    if weights is not None and Path(weights).expanduser().is_file():
        given = f"the file given, {weights}, is not it ({' or '.join((canonical, *patterns))}); "
    raise MissingWeightsError(
        f"{what or 'weights'}: {given}file {canonical} not found; put it in one of: {places} "
        f"(or set ${ENV_VAR} to its folder, or give the file or its folder to the command's weights "
        f"option). gausslift never downloads weights."
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"not a readable torch weight file ({type(e).__name__})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(path, "weight file does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _vgg_features(name: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG_CFG[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    )


# end index (exclusive) in ``features`` of each tapped ReLU
TAPS = {
    "vgg16": {"relu1_2": 4, "relu2_2": 9, "relu3_3": 16, "relu4_3": 23, "relu5_3": 30},
    "vgg19": {"relu1_2": 4, "relu2_2": 9, "relu3_4": 18, "relu4_4": 27, "relu5_4": 36},
    "alexnet": {"relu1": 2, "relu2": 5, "relu3": 8, "relu4": 10, "relu5": 12},
}


class FeatureNet(nn.Module):
    """A frozen conv trunk returning the activations at chosen taps (NCHW in, list of NCHW out)."""

    def __init__(self, arch: str, taps: list[str]):
        super().__init__()
        if arch not in TAPS:
            raise ValueError(f"unknown network {arch!r}; choose from {sorted(TAPS)}")
        self.arch = arch
        self.features = _alexnet_features() if arch == "alexnet" else _vgg_features(arch)
        self.tap_names = list(taps)
        self.ends = [TAPS[arch][t] for t in taps]
        self.features = self.features[: max(self.ends)]
        self.requires_grad_(False)
        self.eval()

    def load_backbone(self, path: Path) -> None:
        """Load a torchvision-layout checkpoint (classifier keys are ignored); strict on features."""
        sd = load_state_dict(path)
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise InputError(
                path, f"not a torchvision {self.arch} checkpoint: missing {missing[:3]} (+{len(missing)})"
            )
        for k, v in own.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise InputError(path, f"{k} has shape {list(sd[k].shape)}, expected {list(v.shape)}")
        self.load_state_dict({k: sd[k].float() for k in own})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in self.ends:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs

    def train(self, mode: bool = True):  # always frozen, always eval (no dropout/bn anyway)
        return super().train(False)


def backbone(arch: str, taps: list[str], weights: str | Path | None = None, what: str = "") -> FeatureNet:
    """A :class:`FeatureNet` with its pretrained weights loaded from the user's files."""
    canonical, patterns = BACKBONE_FILES[arch]
    path = find_weight_file(canonical, patterns, weights, what or f"{arch} backbone")
    net = FeatureNet(arch, taps)
    net.load_backbone(path)
    return net
