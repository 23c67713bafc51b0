"""The configuration of an avatar fit (YAML in ``RUN/config.yaml``; ``--set key=value`` edits it).

The three switches of the seed document: ``lambda_perceptual`` (with ``use_vgg_loss`` /
``use_lpips_loss``), ``adaptive_densify_ratio`` and ``lambda_temporal``; all off by default.
Learning rates and regulariser thresholds are GaussianAvatars' (local positions in units of k).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gausslift.fit.config import StrategyConfig


@dataclass
class AvatarConfig:
    subject: str = ""  # ict | mouse | flame:PATH ("" = the model the sequence names)
    iters: int = 3000
    minutes: float = 0.0  # > 0: a wall-clock budget; the length is planned from it once (overrides iters)
    seed: int = 0
    holdout_frames: float = 0.2  # the last fraction of frames (self-reenactment)
    holdout_cameras: int = 8  # every n-th camera (novel views); 0: none
    backend: str = "auto"
    device: str = "auto"
    background: str = "white"
    random_background: bool = True
    gaussians_per_face: int = 1
    init_scale: float = 0.5  # local (units of k)
    sh_degree: int = 3
    sh_degree_interval: int = 1000  # reference iterations per SH degree
    schedule_ref_iters: int = 30000
    # learning rates (GaussianAvatars: local positions in units of k)
    lr_means: float = 5e-3
    lr_means_final: float = 5e-5
    lr_quats: float = 1e-3
    lr_scales: float = 1.7e-2
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    finetune_params: bool = True  # per-frame subject parameters are optimised (tracking fine-tuning)
    # simulated tracking error: N(0, param_noise^2) added to the training frames' per-frame parameters
    # (the same draw for every seed and configuration of a sequence); evaluation compares with the truth
    param_noise: float = 0.0
    # GaussianAvatars' learning rates for the tracking: coefficients (expression) 1e-3, rotations
    # (global rotation, neck, jaw, eyes, the mouse's joint rotations) 1e-5, translation 1e-6
    lr_params: float = 1e-3
    lr_pose: float = 1e-5
    lr_translation: float = 1e-6
    dynamic_offsets: bool = False
    lr_offsets: float = 1e-5
    # losses
    ssim_lambda: float = 0.2
    lambda_xyz: float = 1e-2
    threshold_xyz: float = 1.0
    lambda_scale: float = 1.0
    threshold_scale: float = 0.6
    lambda_perceptual: float = 0.0  # switch 1 (0.05 when on)
    use_vgg_loss: bool = False
    use_lpips_loss: bool = False
    perceptual_weights: str = ""
    adaptive_densify_ratio: float = 0.0  # switch 2 (0.5: weight 1.5 for eyes, mouth, nose)
    lambda_temporal: float = 0.0  # switch 3 (0.01 when on)
    temporal_first: float = 1.0
    temporal_second: float = 1.0
    threads: int = 0  # > 0: torch and numba threads (1 is fastest on a crowded machine)
    checkpoint_minutes: float = 3.0
    checkpoint_every: int = 0  # > 0: also a checkpoint every this many steps
    snapshot_every: int = 0  # > 0: an in-memory rollback state every this many steps (0: the checkpoint)
    log_every: int = 50
    # density control: strategy.kind default (clone / split / prune, gausslift.avatar.strategy) or mcmc
    # (relocation capped at strategy.cap_max, gausslift.avatar.mcmc); docs/fit_speed.md "Avatar fits"
    strategy: StrategyConfig = field(default_factory=lambda: StrategyConfig(max_gaussians=150_000))
