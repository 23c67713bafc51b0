"""Train or fine-tune a multi-view diffusion model, FaceLift's recipe (train_diffusion.py).

Per step, for B objects of V views (view order fixed, view 0 the condition image):
- the condition image's CLIP embedding (frozen encoder, unCLIP noise augmentation at level 0) and its VAE
  latents (`mode()`), the targets' latents (`sample()`), all scaled by the VAE scaling factor;
- one timestep per object, shared by its views; noise added by a DDPMScheduler with the pipeline's config.
  Timesteps are uniform, or biased as diffusers' SDXL script's `timestep_bias_strategy` ("later": the last
  `portion` of the timesteps, the high-noise ones where only the condition can say what a view shows, are
  drawn `multiplier` times as often; "earlier": the first `portion`);
- condition dropout for classifier-free guidance, whole objects at a time (FaceLift's "drop_as_a_whole"):
  with p ~ U(0,1) and rate d, the CLIP embedding is zeroed when p < 2d, the condition latents when
  d <= p < 3d (so d: CLIP only, d: both, d: latents only);
- MSE to the scheduler's prediction type (epsilon, v_prediction or sample), weighted per view by
  min(SNR, gamma) / SNR (min-SNR, gamma 5; FaceLift uses this form for every prediction type);
- AdamW (0.9, 0.999, weight decay 1e-2), gradient norm clipped to 1, an EMA of the trained weights which is
  what the run's `pipeline/` folder holds (decay warmed up as diffusers' EMAModel: `ema_decay_at`).
Trainable: the UNet and non-fixed view embeddings ("all"), or the view embeddings alone ("views").
Camera-mode view conditioning reads each sample's own camera angles from its opencv_cameras.json.
Checkpoints (atomic, device-independent) resume a run where it stopped; logs as every gausslift trainer.

Under `torchrun --nproc_per_node N -m gausslift mvdiff train ...` (WORLD_SIZE > 1) each process trains on
its own draws (seed + rank) and DistributedDataParallel averages the gradients (NCCL on CUDA, one GPU per
LOCAL_RANK; gloo on CPUs); rank 0 alone writes; a time budget stops every rank at the same step.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gausslift.config import save_config
from gausslift.errors import InputError
from gausslift.mvdiff import data as mvdata
from gausslift.progress import progress
from gausslift.train.budget import Budget
from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gausslift.train.device import resolve_device
from gausslift.train.guard import NonFiniteGuard
from gausslift.train.runlog import RunLog


@dataclass
class MVDiffTrainConfig:
    data: list[str] = field(default_factory=list)
    init: str = "tiny"  # a pipeline folder (FaceLift pipeckpts or a run's pipeline/) or "tiny"
    out: str = "run"
    size: int = 64  # tiny only: view resolution
    channels: tuple[int, ...] = (32, 64, 96, 128)  # tiny only: UNet block widths
    view_classes: bool = False  # tiny only: each view's index as a class embedding in every ResNet block
    view_mode: str = ""  # "", "learned" or "camera": convert the loaded view embeddings
    trainable: str = "all"  # "all" (UNet + view embeddings) or "views"
    steps: int = 0
    minutes: float = 0.0
    batch: int = 2
    lr: float = 1e-4
    snr_gamma: float = 5.0
    timestep_bias: str = "none"  # none, later or earlier (diffusers' timestep_bias_strategy)
    timestep_bias_multiplier: float = 1.0
    timestep_bias_portion: float = 0.25
    condition_drop: float = 0.05
    ema_decay: float = 0.999  # 0: no EMA
    background: str = "three_choices"
    grad_checkpointing: bool = False
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; fp16 with a gradient scaler)
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    image_every: int = 0  # TensorBoard grid of (input | sampled views | truth) every N steps; 0: off
    log_every: int = 10


def build_pipeline(cfg: MVDiffTrainConfig):
    from gausslift.mvdiff.loading import convert_views, from_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline

    if cfg.init == "tiny":
        mode = cfg.view_mode or "learned"
        pipe = tiny_pipeline(size=cfg.size, channels=tuple(cfg.channels), view_mode=mode, seed=cfg.seed,
                             view_classes=cfg.view_classes)  # fmt: skip
    else:
        pipe = from_pretrained(cfg.init)
        if cfg.view_mode and cfg.view_mode != pipe.views.config.mode:
            pipe.views = convert_views(pipe.views, cfg.view_mode)
    return pipe


def trainable_parameters(pipe, which: str) -> list[torch.nn.Parameter]:
    for m in pipe.modules().values():
        m.requires_grad_(False)
    if which not in ("all", "views"):
        raise ValueError("trainable must be 'all' or 'views'")
    if which == "all":
        pipe.unet.requires_grad_(True)
    if pipe.views.config.mode != "fixed":
        pipe.views.requires_grad_(True)
    params = [p for m in (pipe.unet, pipe.views) for p in m.parameters() if p.requires_grad]
    if not params:
        raise InputError(None, "nothing to train: fixed view embeddings with trainable='views' "
                               "(use view_mode learned or camera)")  # fmt: skip
    return params


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = (ac / (1.0 - ac)).clamp(min=1e-12)  # a schedule may reach alpha_bar = 0 at its last step
    return torch.clamp(snr, max=gamma) / snr


def timestep_weights(cfg: MVDiffTrainConfig, num_timesteps: int) -> torch.Tensor:
    """Sampling probabilities of the training timesteps (sum 1): uniform, with the last ("later") or first
    ("earlier") `timestep_bias_portion` of them weighted by `timestep_bias_multiplier`."""
    w = torch.ones(num_timesteps)
    if cfg.timestep_bias not in ("none", "later", "earlier"):
        raise InputError(None, f"timestep_bias must be none, later or earlier, not {cfg.timestep_bias!r}")
    if cfg.timestep_bias != "none":
        if not 0 < cfg.timestep_bias_portion < 1 or cfg.timestep_bias_multiplier <= 0:
            raise InputError(None, "timestep bias: portion must be in (0, 1) and the multiplier > 0")
        n = max(1, int(round(cfg.timestep_bias_portion * num_timesteps)))
        part = slice(num_timesteps - n, None) if cfg.timestep_bias == "later" else slice(0, n)
        w[part] *= cfg.timestep_bias_multiplier
    return w / w.sum()


def training_loss(pipe, noise_sched, inputs, targets, cfg: MVDiffTrainConfig, gen: torch.Generator,
                  angles=None, t_weights: torch.Tensor | None = None):  # fmt: skip
    """FaceLift's loss on [B*V, 3, H, W] condition images (view 0 repeated) and targets; scalar.
    angles: [B, 2, V] (elevation, azimuth) per object for camera-mode view conditioning (default: the rig).
    t_weights: the run's `timestep_weights` (built here when None)."""
    v, n = pipe.num_views, inputs.shape[0]
    b = n // v
    dev = pipe.device
    with torch.no_grad():
        labels, cond = pipe.encode_condition(inputs, noise_level=0, generator=gen, exact_clip=False)
        latents = pipe.encode_latents(targets, sample=True, generator=gen)
    noise = torch.randn(latents.shape, generator=gen, device="cpu").to(dev, latents.dtype)
    num_t = noise_sched.config.num_train_timesteps
    if cfg.timestep_bias == "none":
        t = torch.randint(0, num_t, (b,), generator=gen)
    else:
        w = timestep_weights(cfg, num_t) if t_weights is None else t_weights
        t = torch.multinomial(w, b, replacement=True, generator=gen)
    t = t.to(dev).repeat_interleave(v)
    noisy = noise_sched.add_noise(latents, noise, t)
    if cfg.condition_drop > 0:
        p = torch.rand(b, generator=gen).to(dev).repeat_interleave(v)
        d = cfg.condition_drop
        keep_latents = 1.0 - ((p >= d) & (p < 3 * d)).to(cond.dtype)
        cond = cond * keep_latents[:, None, None, None]
        if labels is not None:
            labels = labels * (p >= 2 * d).to(labels.dtype)[:, None]
    if angles is None or pipe.views.config.mode != "camera":
        prompts = pipe.view_embeddings(b)
    else:
        prompts = torch.cat([pipe.view_embeddings(1, el, az) for el, az in angles.to(dev)])
    x = torch.cat([noisy, cond], 1)
    labels = pipe.view_labels(labels, n)
    pred = pipe.unet(x, t, encoder_hidden_states=prompts, class_labels=labels).sample
    kind = noise_sched.config.prediction_type
    target = {"epsilon": noise, "sample": latents}.get(kind)
    if kind == "v_prediction":
        target = noise_sched.get_velocity(latents, noise, t)
    if target is None:
        raise ValueError(f"unknown prediction type {kind!r}")
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if cfg.snr_gamma > 0:
        loss = loss * snr_weights(noise_sched, t, cfg.snr_gamma)
    return loss.mean()


def _batch(pipe, samples, cfg, rng: random.Random):
    """(condition images, targets) [B*V, 3, H, W] and, in camera mode, each object's angles [B, 2, V]."""
    v, size = pipe.num_views, pipe.resolution
    picked = [rng.choice(samples) for _ in range(cfg.batch)]
    views = [mvdata.load_sample(s, v, size, mvdata.pick_background(cfg.background, rng)) for s in picked]
    x = torch.from_numpy(np.stack(views)).permute(0, 1, 4, 2, 3).flatten(0, 1)  # [B*V, 3, H, W]
    inputs = x.view(cfg.batch, v, *x.shape[1:])[:, :1].expand(-1, v, -1, -1, -1).flatten(0, 1)
    angles = None
    if pipe.views.config.mode == "camera":
        found = [mvdata.sample_angles(s, v) for s in picked]
        if all(a is not None for a in found):
            angles = torch.tensor(np.array(found), dtype=torch.float32)
    return inputs.to(pipe.device), x.to(pipe.device), angles


class _Loss(torch.nn.Module):
    """The trainable modules with the loss as forward, so that DistributedDataParallel can wrap them."""

    def __init__(self, pipe, noise_sched, cfg):
        super().__init__()
        self.unet, self.views = pipe.unet, pipe.views
        self.pipe, self.noise_sched, self.cfg = [pipe], noise_sched, cfg  # lists: not submodules
        self.t_weights = timestep_weights(cfg, noise_sched.config.num_train_timesteps)  # once per run

    def forward(self, inputs, targets, gen, angles=None):
        return training_loss(self.pipe[0], self.noise_sched, inputs, targets, self.cfg, gen, angles,
                             self.t_weights)  # fmt: skip


def _distributed():
    """(rank, world, local_rank) under torchrun, initialising the process group; (0, 1, 0) otherwise."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _all_agree(flag: bool, world: int) -> bool:
    """True only when every rank says True (so that all ranks skip or stop together)."""
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def _ema_copy(params):
    return [p.detach().clone() for p in params]


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA decay for the ``updates``-th update (1-based), as diffusers' ``EMAModel`` (no
    ``update_after_step``, no ``use_ema_warmup``): ``min(decay, (1 + n) / (10 + n))`` with n = updates - 1.
    Without the cap a 0.999 EMA of a short run would still be mostly the random initial weights
    (0.999^600 = 55% of them after 600 steps)."""
    n = max(0, updates - 1)
    return 0.0 if n == 0 else min(decay, (1.0 + n) / (10.0 + n))


def train(cfg: MVDiffTrainConfig) -> Path:
    """Run (or resume) training; returns the run folder, whose `pipeline/` holds the EMA model."""
    from diffusers import DDPMScheduler

    from gausslift.mvdiff.loading import save_pretrained

    if cfg.steps <= 0 and cfg.minutes <= 0:
        raise InputError(None, "give a training length: steps and/or minutes")
    timestep_weights(cfg, 1000)  # a bad timestep bias is refused before anything is built or written
    rank, world, local_rank = _distributed()
    run = Path(cfg.out)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run / "config.yaml")
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    pipe = build_pipeline(cfg).to(device)
    samples = mvdata.find_samples(cfg.data, pipe.num_views)
    if cfg.grad_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    params = trainable_parameters(pipe, cfg.trainable)
    pipe.unet.train(cfg.trainable == "all")
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    ema = _ema_copy(params) if cfg.ema_decay > 0 else None
    budget, guard = Budget(minutes=cfg.minutes, steps=cfg.steps), NonFiniteGuard()
    seed = cfg.seed + 1000 * rank
    gen, rng, step = torch.Generator().manual_seed(seed), random.Random(seed), 0
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        for p, q in zip(params, state["params"]):
            p.data.copy_(q)
        opt.load_state_dict(state["opt"])
        ema = None if ema is None else [e.to(device) for e in state["ema"]]
        budget.restore(state["budget"])
        set_rng_state(state["rng"], gen)
        rng.setstate(state["py_rng"])
        step = int(state["step"])
        if rank:  # other ranks: their own draws from here on
            gen.manual_seed(seed + step)
            rng.seed(seed + step)
    model = _Loss(pipe, noise_sched, cfg)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    log = RunLog(run, columns=("step", "loss", "seconds"), resume_step=step if ckpt.exists() else None) \
        if rank == 0 else None

    saved = [step]

    def checkpoint():
        saved[0] = step
        if rank:
            return
        save_checkpoint(ckpt, {"step": step, "params": [p.detach() for p in params], "opt": opt.state_dict(),
                               "ema": ema, "budget": budget.state(), "rng": rng_state(gen),
                               "py_rng": rng.getstate()})  # fmt: skip
        live = [p.detach().clone() for p in params] if ema is not None else None
        with torch.no_grad():  # the exported pipeline carries the EMA weights
            for p, e in zip(params, ema or []):
                p.copy_(e)
            save_pretrained(pipe, run / "pipeline")
            for p, q in zip(params, live or []):
                p.copy_(q)

    bar = progress(total=cfg.steps or None, desc="mvdiff train", initial=step, disable=rank > 0)
    try:
        while _all_agree(not budget.done(step), world):  # every rank stops at the same step
            inputs, targets, angles = _batch(pipe, samples, cfg, rng)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = model(inputs, targets, gen, angles)
            if not _all_agree(guard.check(loss), world):
                if guard.rollback:
                    raise InputError(run, "loss is not finite several steps in a row (lower --lr?)")
                continue
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                with torch.no_grad():
                    decay = ema_decay_at(cfg.ema_decay, step + 1)
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
            step += 1
            bar.update(1)
            if log is not None and step % cfg.log_every == 0:
                log.write({"step": step, "loss": loss.item(), "seconds": budget.elapsed()})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
            if log is not None and cfg.image_every and step % cfg.image_every == 0:
                with torch.no_grad():
                    views = pipe(inputs[0].permute(1, 2, 0).cpu().numpy(), num_inference_steps=20,
                                 generator=torch.Generator().manual_seed(0))[0]  # fmt: skip
                truth = targets[: pipe.num_views].permute(0, 2, 3, 1).cpu().numpy()
                log.log_images("views", np.concatenate([views, truth]), step)
    finally:  # Ctrl-C or the end: keep what was learned
        bar.close()
        if step > saved[0]:
            checkpoint()
        if log is not None:
            log.close()
    return run
