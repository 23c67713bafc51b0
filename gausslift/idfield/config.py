"""Configs of ``idfield train``: ``tiny`` (CPU, 128^2 images, a 96^2 UV map: ~3.5k Gaussians on ICT's face
region) and ``base`` (GPU, a 256^2 map: ~26k Gaussians, wider generator)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IdFieldConfig:
    subject: str = "ict"  # load_subject spec: ict | flame:/path/generic_model.pkl
    region: str = "face"  # the subject's region whose triangles carry Gaussians
    res: int = 96  # UV map resolution (one Gaussian per covered texel)
    const_res: int = 6
    channels: list[int] = field(default_factory=lambda: [128, 128, 64, 48, 32])
    code_dim: int = 64
    w_dim: int = 128
    map_layers: int = 2
    code_init: float = 0.1  # codes start N(0, code_init^2)
    frames: int = 2  # identity-frames per step
    views: int = 3  # cameras per frame per step
    lr: float = 2e-3  # generator
    lr_code: float = 1e-2
    lr_end: float = 0.1  # cosine to this fraction
    ssim: float = 0.2  # loss = (1 - ssim) L1 + ssim (1 - SSIM), on the face-masked image
    alpha: float = 0.5  # L1 of the render's alpha against the face mask
    code_reg: float = 1e-3  # mean squared code (auto-decoder prior)
    scale_reg: float = 1e-3  # the late scale regulariser (GaussianAvatars' lambda_scale term)
    scale_reg_start: float = 0.6  # ... switched on at this fraction of the steps
    scale_threshold: float = 0.6  # local scale (units of the triangle's k) allowed for free
    snapshot_minutes: float = 8.0  # copies of the model for the overfit curve (0: none)
    seed: int = 0
    iters: int = 20000
    minutes: float = 0.0
    log_every: int = 50
    checkpoint_minutes: float = 3.0
    checkpoint_every: int = 0  # > 0: also a checkpoint every this many steps


def tiny() -> IdFieldConfig:
    return IdFieldConfig()


def base() -> IdFieldConfig:
    return IdFieldConfig(res=256, const_res=8, channels=[256, 256, 256, 128, 64, 32], code_dim=128, w_dim=256,
                         frames=4, views=4, iters=100000, snapshot_minutes=30.0)


PRESETS = {"tiny": tiny, "base": base}
