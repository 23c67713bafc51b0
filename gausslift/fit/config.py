"""The configuration of one per-scene fit (YAML in ``RUN/config.yaml``; ``--set key=value`` edits it).

Schedules (densification, SH degree, opacity reset, learning-rate decay) are given for a reference run
of ``schedule_ref_iters`` iterations (3DGS / gsplat values for 30k) and scaled to the run's length,
which is ``iters`` or, with a ``minutes`` budget, the iterations measured to fit in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StrategyConfig:
    """Density control; iteration values refer to the reference run length.

    ``kind``: ``default`` (gsplat DefaultStrategy: clone / split / prune, opacity resets; today's
    behaviour until issue 26), ``mcmc`` (3DGS-MCMC relocation with a hard cap ``cap_max``, gsplat
    MCMCStrategy; :mod:`gausslift.fit.mcmc`) or ``budget`` (clone / split of the highest-gradient
    Gaussians towards ``cap_max`` along a fixed count schedule, Taming-3DGS-like;
    :mod:`gausslift.fit.budget`). See docs/fit_speed.md.
    """

    kind: str = "default"
    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    refine_start_iter: int = 500
    refine_stop_iter: int = 15000
    reset_every: int = 3000
    refine_every: int = 100
    min_refine_every: int = 50  # never refine more often than this (after scaling)
    max_resets: int = 3  # opacity resets in a run at most (short runs cannot recover from many)
    max_gaussians: int = 250_000  # growth stops at this count (CPU budgets)
    revised_opacity: bool = False
    # adam | selective_adam (only the Gaussians the step's camera saw are updated, gsplat SelectiveAdam;
    # no gain measured on lego's validation views: docs/fit_speed.md)
    optimizer: str = "adam"
    # mcmc / budget kinds: the Gaussian count never exceeds min(cap_max, max_gaussians)
    cap_max: int = 60_000
    mcmc_refine_stop_iter: int = 25000
    mcmc_min_opacity: float = 0.005
    mcmc_grow_rate: float = 0.05
    mcmc_noise_lr: float = 5e5
    mcmc_opacity_reg: float = 0.01
    mcmc_scale_reg: float = 0.01
    mcmc_init_opacity: float = 0.5  # replace init_opacity / init_scale for an mcmc fit (gsplat's values)
    mcmc_init_scale: float = 0.1
    budget_curve: float = 1.0  # budget kind: target count n0 + (cap - n0) * t^curve over the refine span

    @property
    def cap(self) -> int:
        """The mcmc / budget kinds' ceiling: min(cap_max, max_gaussians) (max_gaussians: every kind's)."""
        return min(self.cap_max, self.max_gaussians)


@dataclass
class FitConfig:
    # length: iters, or a wall-clock budget (minutes > 0) that overrides iters
    iters: int = 7000
    minutes: float = 0.0
    schedule_ref_iters: int = 30000
    warmup_seconds: float = 20.0  # time used to measure it/s for a minutes budget
    # predict: each step's count and resolution are predicted, re-planned at 25/50/75 % (issue 26);
    # once: planned once from the warm-up, the model grows x0.6 and time ~ pixels^0.7, never re-planned
    # (the plan before issue 26: with strategy.kind=default, today's behaviour before it, for comparison)
    plan: str = "predict"
    seed: int = 0
    # data
    holdout_every: int = 0  # 0: use the capture's own test split (or none)
    background: str = "white"  # white | black | random (the colour renders and metrics use)
    random_background: bool = True  # train on random backgrounds when the data has alpha/masks
    backend: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: CUDA when the backend can use it)
    downscale: int = 1
    # coarse to fine (CPU budgets): images of at least c2f_min_size px train at 1/4 resolution, then
    # 1/2 from c2f_half (fraction of the run), then full from c2f_full
    c2f_min_size: int = 384
    c2f_half: float = 0.2
    c2f_full: float = 0.65
    # model
    sh_degree: int = 3
    sh_degree_interval: int = 1000  # reference iterations per degree step
    init_num_points: int = 30_000
    init_opacity: float = 0.1
    init_scale: float = 1.0
    init_extent: float = 1.0  # random init region, relative to the region all cameras see
    hull_keep: float = 0.9  # a point stays if inside the masks of this fraction of views seeing it
    # learning rates (3DGS); means scale with the scene extent and decay to lr_means_final
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    lr_opacities: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    # losses (each a switch by its weight)
    ssim_lambda: float = 0.2
    masked_l2_loss: float = 0.0
    masked_ssim_loss: float = 0.0
    background_loss_weight: float = 0.0  # drives alpha to 0 outside the mask
    alpha_loss_weight: float = 0.0  # L1 between alpha and the mask
    scale_reg: float = 0.0
    opacity_reg: float = 0.0
    lambda_perceptual: float = 0.0
    use_vgg_loss: bool = False
    use_lpips_loss: bool = False
    perceptual_weights: str = ""  # path to the VGG / LPIPS weights (never downloaded)
    # bookkeeping (gausslift.train.loop's options): checkpoints every checkpoint_every steps (0: by
    # time only) and every checkpoint_minutes (at least 6 times in a minutes budget)
    checkpoint_minutes: float = 3.0
    checkpoint_every: int = 0
    log_every: int = 50
    snapshot_every: int = 200  # in-memory good state for NaN rollback
    nan_lr_factor: float = 0.5
    nan_skip_limit: int = 3  # non-finite losses in a row are skipped; this many -> roll back
    # the fit's default since issue 26: MCMC relocation capped at cap_max. ``--set strategy.kind=default
    # --set plan=once`` is the behaviour before it (docs/fit_speed.md). StrategyConfig's own default
    # kind stays ``default`` (the avatar's config embeds it; its strategy is the default's)
    strategy: StrategyConfig = field(default_factory=lambda: StrategyConfig(kind="mcmc"))


BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "random": (1.0, 1.0, 1.0)}


def background_rgb(name: str) -> tuple[float, float, float]:
    """The fixed colour of a run's background (a 'random' run renders and scores on white)."""
    from gausslift.errors import InputError

    if name not in BACKGROUNDS:
        raise InputError(None, f"background must be one of {', '.join(BACKGROUNDS)}, got '{name}'")
    return BACKGROUNDS[name]


def check_config(cfg: FitConfig) -> None:
    """One InputError for a value outside what the fit can use (the config.yaml / --set key named; the
    background is checked where it is read, :func:`background_rgb`)."""
    from operator import attrgetter

    from gausslift.errors import InputError

    rules = [
        ("sh_degree", 0 <= cfg.sh_degree <= 3, "an integer from 0 to 3"),
        ("downscale", cfg.downscale >= 1, "an integer of at least 1"),
        ("init_num_points", cfg.init_num_points >= 1, "at least 1"),
        ("ssim_lambda", 0.0 <= cfg.ssim_lambda <= 1.0, "from 0 to 1"),
        ("c2f_half", 0.0 <= cfg.c2f_half <= cfg.c2f_full <= 1.0, "from 0 to c2f_full (<= 1)"),
        ("strategy.cap_max", cfg.strategy.cap_max >= 1, "at least 1"),
        ("strategy.max_gaussians", cfg.strategy.max_gaussians >= 1, "at least 1"),
        ("strategy.refine_every", cfg.strategy.refine_every >= 1, "at least 1"),
        ("plan", cfg.plan in ("predict", "once"), "predict or once"),
    ]
    for key, ok, want in rules:
        if not ok:
            raise InputError(None, f"{key} must be {want}, got {attrgetter(key)(cfg)!r}")
