"""GS-LRM training configuration: one dataclass, written as ``config.yaml`` next to every run.

``train_config("tiny"|"base"|"facelift"|"mouse"|"path.yaml", overrides)`` gives a
:class:`LRMTrainConfig`: a network preset name takes the network of ``gausslift.models.gslrm.PRESETS``
and the defaults below (FaceLift's training settings), ``mouse`` the measured mouse recipe
(:func:`mouse_preset`); a YAML
file is a (partial) dump of this dataclass (``model:``, ``data:``, ``loss:`` nested), e.g. a run's own
``config.yaml``. ``overrides`` are ``a.b=value`` strings (``gausslift.config.apply_overrides``).

Batch sizes are totals over all processes: under ``torchrun`` with N processes each one takes
``batch / N`` samples per step (``batch`` must divide), so the same config learns the same thing on
one process or many (the DDP test holds this to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from gausslift.config import apply_overrides, load_config
from gausslift.errors import InputError
from gausslift.models.gslrm import PRESETS, GSLRMConfig, gslrm_config


@dataclass
class DataConfig:
    """How views are drawn from a FaceLift-layout sample (FaceLift: ``training.num_views`` etc.)."""

    num_views: int = 8  # views drawn per sample (inputs and targets together)
    num_input_views: int = 5
    targets_include_inputs: bool = True  # FaceLift's target_has_input
    view_order: str = "random"  # random: shuffled per sample | fixed: inputs evenly spaced in file order
    input_views: tuple[int, ...] = ()  # fixed order: these view indices (file order) as the inputs
    background: str = "white"  # white | black | random (one colour per sample), composited from alpha
    image_size: int = 0  # 0: the model's image_size


@dataclass
class LossConfig:
    """Weights of each term (0 switches it off). During the first ``l2_warmup_steps`` steps only the
    L2 and mask terms count (FaceLift's warm-up before the perceptual terms)."""

    l2: float = 1.0
    masked_l2: float = 0.0  # L2 inside the target mask only
    ssim: float = 0.0  # 1 - masked SSIM
    lpips: float = 0.0  # needs weights (LPIPS heads + backbone, see gausslift.metrics)
    perceptual: float = 0.0  # VGG19 perceptual loss; needs weights
    mask: float = 0.1  # L2 between the rendered alpha and the mask
    l2_warmup_steps: int = 0
    weights: str = ""  # folder (or file) of LPIPS / VGG weights; "" -> gausslift's lookup


@dataclass
class LRMTrainConfig:
    model: GSLRMConfig = field(default_factory=lambda: gslrm_config("tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch: int = 4  # samples per step, over all processes
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05  # on matrices only (not LayerNorms, not the Gaussian tokens)
    warmup_steps: int = 100  # linear lr warm-up, then cosine decay to 0 over the planned steps
    grad_clip: float = 1.0
    max_nonfinite: int = 5  # non-finite losses in a row before rolling back to the last good state
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with AMX, else fp32) | fp32 | bf16
    backend: str = "auto"  # rasteriser: auto (cpu on CPU, gsplat on CUDA) | cpu | gsplat | torch
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    val_every: int = 200  # validation on held-out samples; 0: only at the end
    val_samples: int = 8  # held-out samples used per validation
    image_every: int = 200  # TensorBoard grids (input | target | render); 0: off
    workers: int = 2  # DataLoader processes decoding batches ahead of the step (0: in the training process)


def preset(name: str) -> LRMTrainConfig:
    """The training defaults with preset ``name``'s network (tiny | base | facelift)."""
    return LRMTrainConfig(model=gslrm_config(name))


def mouse_preset() -> LRMTrainConfig:
    """The measured mouse recipe (docs/benchmarks.md, "Mouse with the visual-hull depth"): the ``tiny``
    network with the visual-hull depth, the per-pixel MLP and scale bias 3.9; 8 views a sample, 5 of them
    inputs (evenly spaced), targets without the inputs; mask weight 1; batch 2, lr 4e-4, 50 warm-up
    steps. ``precision`` stays ``auto`` (bf16 only where the CPU has it natively). FaceLift's own
    settings stay ``--config facelift`` (the network) or ``tiny`` (its training defaults, small)."""
    cfg = preset("tiny")
    cfg.model = replace(cfg.model, hull_depth=0.2, pixel_mlp=32, scale_bias=3.9)
    cfg.data = replace(cfg.data, num_views=8, num_input_views=5, targets_include_inputs=False,
                       view_order="fixed")  # fmt: skip
    cfg.loss = replace(cfg.loss, mask=1.0)
    cfg.batch, cfg.lr, cfg.warmup_steps = 2, 4e-4, 50
    return cfg


# ``--config NAME`` of ``gausslift lrm train`` (``gausslift.cli._train.train_config(presets=...)``)
TRAIN_PRESETS = {name: (lambda name=name: preset(name)) for name in PRESETS} | {"mouse": mouse_preset}


def check_spec(spec: str) -> None:
    """A ``--config`` value must be a preset name or a YAML file (one line otherwise)."""
    if spec not in TRAIN_PRESETS and not spec.endswith((".yaml", ".yml")) and not Path(spec).is_file():
        raise InputError(spec, f"not a config: give one of {sorted(TRAIN_PRESETS)} or a .yaml file")


def train_config(spec: str = "tiny", overrides: list[str] | None = None) -> LRMTrainConfig:
    """A preset name (tiny | base | facelift) or a YAML file, then ``key=value`` overrides."""
    check_spec(spec)
    cfg = TRAIN_PRESETS[spec]() if spec in TRAIN_PRESETS else load_config(LRMTrainConfig, spec)
    cfg = apply_overrides(cfg, list(overrides or []))
    check_config(cfg)
    return cfg


def check_config(cfg: LRMTrainConfig) -> None:
    """Raise :class:`InputError` (one line) for settings that cannot work."""
    d = cfg.data
    problems = []
    if d.num_input_views < 1:
        problems.append("data.num_input_views must be >= 1")
    if d.num_views < d.num_input_views + (0 if d.targets_include_inputs else 1):
        problems.append(f"data.num_views ({d.num_views}) leaves no target views after "
                        f"{d.num_input_views} inputs")  # fmt: skip
    if d.view_order not in ("random", "fixed"):
        problems.append(f"data.view_order must be random or fixed, got {d.view_order!r}")
    if d.input_views and len(d.input_views) != d.num_input_views:
        problems.append(f"data.input_views names {len(d.input_views)} views, num_input_views is "
                        f"{d.num_input_views}")  # fmt: skip
    if d.background not in ("white", "black", "random"):
        problems.append(f"data.background must be white, black or random, got {d.background!r}")
    size = d.image_size or cfg.model.image_size
    if size % cfg.model.patch_size:
        problems.append(f"image size {size} is not a multiple of the patch size {cfg.model.patch_size}")
    if cfg.batch < 1:
        problems.append("batch must be >= 1")
    if cfg.workers < 0:
        problems.append("workers must be >= 0")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        problems.append(f"precision must be auto, fp32 or bf16, got {cfg.precision!r}")
    if any(getattr(cfg.loss, k) < 0 for k in ("l2", "masked_l2", "ssim", "lpips", "perceptual", "mask")):
        problems.append("loss weights must be >= 0")
    if problems:
        raise InputError(None, "; ".join(problems))


def image_size(cfg: LRMTrainConfig) -> int:
    return cfg.data.image_size or cfg.model.image_size
