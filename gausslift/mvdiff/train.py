"""Train or fine-tune a multi-view diffusion model, FaceLift's recipe (train_diffusion.py), on the one loop.

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
- MSE to the scheduler's prediction type (epsilon, v_prediction or sample), weighted per view (`snr_weights`,
  gamma 5). `snr_weighting: facelift` (the default) is FaceLift's own form, min(SNR, gamma) / SNR for every
  prediction type (its train_diffusion.py, which trains SD 2.1 unCLIP, a v-prediction model): for
  v-prediction it keeps the high-noise steps at weight 1. `snr_weighting: minsnr` is Min-SNR-gamma proper,
  by prediction type as the paper and diffusers' train_text_to_image.py: min(SNR, gamma) / SNR for epsilon,
  / (SNR + 1) for v-prediction (weights near 0 at high noise), min(SNR, gamma) for sample. FaceLift's form is
  the default because it learned better here: 455 steps of the tiny mouse model, same run, 16 held-out
  mice, unseen-view IoU 0.306 against 0.189 (uniform timesteps) and 0.264 against 0.213 (later x4), see
  docs/benchmarks.md, "One training loop (issue 24)";
- AdamW (0.9, 0.999, weight decay 1e-2), gradient norm clipped to 1, an EMA of the trained weights which is
  what the run's `pipeline/` folder holds (decay warmed up as diffusers' EMAModel: `ema_decay_at`).
Trainable: the UNet and non-fixed view embeddings ("all"), or the view embeddings alone ("views").
Camera-mode view conditioning reads each sample's own camera angles from its opencv_cameras.json.

The run is a :class:`MVDiffTask` on :class:`gausslift.train.loop.Loop`: budget, explicit resume (refused when
a key of `shape_keys` changed), atomic checkpoints with the trainable weights, their EMA and the optimiser
**by parameter name** (checked on load), logs, the non-finite guard with rollback, torchrun. Every random
draw of a step is a pure function of (seed, step, rank): the batches (`mvdiff.data.StepBatches`, decoded
ahead by DataLoader workers) and the noise, timesteps and dropout (a generator seeded per step), so a
resumed run continues bit for bit and no generator has to be saved.

Under `torchrun --nproc_per_node N -m gausslift mvdiff train ...` (WORLD_SIZE > 1) rank r trains on its
shard of the samples (every N-th from r); the trainable modules (UNet and view embeddings, with the loss as
their forward: `_Loss`) are wrapped in torch's DistributedDataParallel, which broadcasts rank 0's weights
when it is built and averages the gradients during the backward pass (NCCL on CUDA, one GPU per LOCAL_RANK;
gloo on CPUs); rank 0 alone writes; all ranks stop at the same step. A step the loop's non-finite guard
skips has run DDP's forward without a backward: allowed, as DDP (find_unused_parameters=False) only
requires each backward it sees to reduce every trainable parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gausslift.errors import InputError
from gausslift.mvdiff import data as mvdata
from gausslift.train.device import autocast_dtype
from gausslift.train.dist import Dist, setup_dist
from gausslift.train.guard import all_finite
from gausslift.train.loop import REPLAN_AT, Loop, LoopOptions, Task

PIPELINE = "pipeline"  # the run's export: the EMA weights in the FaceLift folder layout
SNR_WEIGHTINGS = ("minsnr", "facelift")
STREAM_NOISE = 3  # mvdata.step_seed stream of the per-step generator (1, 2: the batches')


@dataclass
class MVDiffTrainConfig:
    data: list[str] = field(default_factory=list)
    init: str = "tiny"  # a pipeline folder (FaceLift pipeckpts or a run's pipeline/) or "tiny"
    # size, channels, view_classes: set for tiny; with a pipeline folder, the run records the loaded
    # model's own values here (`record_loaded`), so config.yaml says what the weights carry
    size: int = 64  # tiny: view resolution
    channels: tuple[int, ...] = (32, 64, 96, 128)  # tiny: UNet block widths
    view_classes: bool = False  # tiny: each view's index as a class embedding in every ResNet block
    view_mode: str = ""  # "", "learned" or "camera": convert the loaded view embeddings
    trainable: str = "all"  # "all" (UNet + view embeddings) or "views"
    batch: int = 2  # objects per step and rank
    lr: float = 1e-4
    snr_gamma: float = 5.0  # 0: no Min-SNR weighting
    snr_weighting: str = "facelift"  # "facelift" (/ SNR for every type) or "minsnr" (by prediction type)
    timestep_bias: str = "none"  # none, later or earlier (diffusers' timestep_bias_strategy)
    timestep_bias_multiplier: float = 1.0
    timestep_bias_portion: float = 0.25
    condition_drop: float = 0.05
    ema_decay: float = 0.999  # 0: no EMA
    background: str = "three_choices"
    grad_checkpointing: bool = False
    precision: str = "auto"  # auto (bf16 on CUDA and AMX CPUs, else fp32), fp32, bf16 or fp16 (autocast;
    # fp16 with a gradient scaler)
    seed: int = 0
    workers: int = 2  # DataLoader processes decoding the batches ahead (0: in the training process)
    checkpoint_every: int = 500  # steps (the loop also checkpoints by time)
    image_every: int = 0  # TensorBoard grid of (input | sampled views | truth) every N steps; 0: off
    log_every: int = 10


def mouse_preset() -> MVDiffTrainConfig:
    """The measured mouse recipe (docs/benchmarks.md, "Multi-view diffusion", third and sixth runs): the
    tiny pixel-space model at 64^2 with UNet widths 32/64/96/128 and each view's index as a class
    embedding in every ResNet block (``view_classes``); batch 2, lr 2e-4, white background; the high-noise
    quarter of the timesteps drawn 4 times as often (``timestep_bias: later``, multiplier 4); FaceLift's
    loss weight (``snr_weighting: facelift``, the default, measured better); ``precision: auto`` (bf16
    only where the CPU has it natively). Train it on ``synth mouse --size 64 --rig facelift6 --framing
    input`` (views framed as ``lift`` frames its input). That recipe reached unseen-view IoU 0.527 on 64
    held-out mice after 60 minutes on facelift-framed data, and 0.576 on input-framed ones after 60 more
    minutes fine-tuned on them (a 2-core AMX Xeon, bf16). The defaults (``--config facelift``) stay
    FaceLift's settings."""
    return MVDiffTrainConfig(init="tiny", size=64, channels=(32, 64, 96, 128), view_classes=True, batch=2,
                             lr=2e-4, background="white", timestep_bias="later", timestep_bias_multiplier=4.0,
                             snr_weighting="facelift", precision="auto")  # fmt: skip


# ``--config NAME`` of ``gausslift mvdiff train`` (``gausslift.cli._train.train_config(presets=...)``)
TRAIN_PRESETS = {"facelift": MVDiffTrainConfig, "mouse": mouse_preset}


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


def record_loaded(cfg: MVDiffTrainConfig, pipe) -> None:
    """With a pipeline folder as ``init``: write the loaded model's resolution, UNet block widths and view
    classes (``num_class_embeds``) into ``cfg``, in place of the tiny-only settings, which do not apply
    to it. Not shape keys for such a run (``MVDiffTask.shape_keys``), and a resume records the same values
    from the same folder, so a resume is not refused for them."""
    if cfg.init == "tiny":
        return
    cfg.size = int(pipe.resolution)
    cfg.channels = tuple(int(c) for c in pipe.unet.config.block_out_channels)
    cfg.view_classes = bool(pipe.unet.config.num_class_embeds)


def trainable_parameters(pipe, which: str) -> dict[str, torch.nn.Parameter]:
    """The parameters to train, by name ("unet.<name>", "views.<name>"); every other one frozen."""
    for m in pipe.modules().values():
        m.requires_grad_(False)
    if which not in ("all", "views"):
        raise InputError(None, f"trainable must be 'all' or 'views', not {which!r}")
    if which == "all":
        pipe.unet.requires_grad_(True)
    if pipe.views.config.mode != "fixed":
        pipe.views.requires_grad_(True)
    params = {f"{prefix}.{n}": p for prefix, m in (("unet", pipe.unet), ("views", pipe.views))
              for n, p in m.named_parameters() if p.requires_grad}  # fmt: skip
    if not params:
        raise InputError(None, "nothing to train: fixed view embeddings with trainable='views' "
                               "(use view_mode learned or camera)")  # fmt: skip
    return params


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str | None = None,
                weighting: str = "minsnr") -> torch.Tensor:  # fmt: skip
    """Min-SNR-gamma loss weights (Hang et al. 2023) of the MSE to the scheduler's prediction target.

    With SNR = alpha_bar / (1 - alpha_bar), the weight that makes every prediction type's loss the
    x0-loss weighted by min(SNR, gamma): epsilon min(SNR, gamma) / SNR, v_prediction min(SNR, gamma) /
    (SNR + 1), sample min(SNR, gamma) (diffusers' train_text_to_image.py). ``weighting="facelift"``:
    min(SNR, gamma) / SNR whatever the prediction type, as FaceLift's train_diffusion.py."""
    if weighting not in SNR_WEIGHTINGS:
        raise InputError(None, f"snr_weighting must be one of {', '.join(SNR_WEIGHTINGS)}, not {weighting!r}")
    kind = prediction_type or scheduler.config.prediction_type
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].double()
    snr = ac / (1.0 - ac)
    capped = torch.clamp(snr, max=gamma)
    if weighting == "facelift" or kind == "epsilon":
        w = capped / snr.clamp(min=1e-12)  # a schedule may reach alpha_bar = 0 at its last step
    elif kind == "v_prediction":
        w = capped / (snr + 1.0)
    elif kind == "sample":
        w = capped
    else:
        raise ValueError(f"unknown prediction type {kind!r}")
    return w.float()


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
    t_weights: the run's `timestep_weights` (built here when None). Every draw comes from ``gen``."""
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
        loss = loss * snr_weights(noise_sched, t, cfg.snr_gamma, kind, cfg.snr_weighting)
    return loss.mean()


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA decay for the ``updates``-th update (1-based), as diffusers' ``EMAModel`` (no
    ``update_after_step``, no ``use_ema_warmup``): ``min(decay, (1 + n) / (10 + n))`` with n = updates - 1.
    Without the cap a 0.999 EMA of a short run would still be mostly the random initial weights
    (0.999^600 = 55% of them after 600 steps)."""
    n = max(0, updates - 1)
    return 0.0 if n == 0 else min(decay, (1.0 + n) / (10.0 + n))


def split_condition(images: torch.Tensor):
    """[B, V, 3, H, W] -> (condition images: each object's view 0 for all its views, targets), [B*V, ...]."""
    b, v = images.shape[:2]
    return images[:, :1].expand(-1, v, -1, -1, -1).flatten(0, 1), images.flatten(0, 1)


class _Loss(torch.nn.Module):
    """The trainable modules (the UNet, the view embeddings) with FaceLift's loss as their forward: what
    DistributedDataParallel wraps under torchrun (their parameters that require grad are the ones it
    averages). The pipeline, whose other modules are frozen, is held in a list: not a submodule."""

    def __init__(self, pipe, noise_sched, cfg: MVDiffTrainConfig, t_weights: torch.Tensor):
        super().__init__()
        self.unet, self.views = pipe.unet, pipe.views
        self.pipe, self.noise_sched, self.cfg, self.t_weights = [pipe], noise_sched, cfg, t_weights

    def forward(self, inputs, targets, gen: torch.Generator, angles=None):
        return training_loss(self.pipe[0], self.noise_sched, inputs, targets, self.cfg, gen, angles,
                             self.t_weights)  # fmt: skip


class MVDiffTask(Task):
    """mvdiff training as a :class:`gausslift.train.loop.Task`: the trainable weights, their EMA, a batch
    and FaceLift's loss."""

    name = "mvdiff"
    columns = ("step", "loss", "seconds", "grad_norm")
    time_key = "seconds"

    def __init__(self, cfg: MVDiffTrainConfig):
        self.cfg = cfg
        self._iter, self._next_step = None, -1

    @property
    def shape_keys(self) -> tuple[str, ...]:  # the keys that decide the trainable parameters' names/shapes
        tiny = ("size", "channels", "view_classes") if self.cfg.init == "tiny" else ()
        return ("init", *tiny, "view_mode", "trainable")

    def config(self) -> MVDiffTrainConfig:
        return self.cfg

    # -- state ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        from diffusers import DDPMScheduler

        cfg, dev = self.cfg, self.dist.device
        timestep_weights(cfg, 1000)  # bad settings are refused before anything is built or written
        if cfg.snr_weighting not in SNR_WEIGHTINGS:
            raise InputError(None, f"snr_weighting must be minsnr or facelift, not {cfg.snr_weighting!r}")
        if cfg.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise InputError(None, f"precision must be auto, fp32, bf16 or fp16, not {cfg.precision!r}")
        pipe = build_pipeline(cfg).to(dev)
        record_loaded(cfg, pipe)  # before the loop writes config.yaml
        samples = mvdata.find_samples(cfg.data, pipe.num_views)
        shard = self.dist.shard(samples)
        if not shard:
            raise InputError(None, f"{len(samples)} sample(s) cannot be shared by {self.dist.world} ranks")
        camera = pipe.views.config.mode == "camera"
        self.batches = mvdata.StepBatches(shard, pipe.num_views, pipe.resolution, cfg.batch, cfg.background,
                                          cfg.seed, self.dist.rank, camera)  # fmt: skip
        if cfg.grad_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        self.params = trainable_parameters(pipe, cfg.trainable)
        pipe.unet.train(cfg.trainable == "all")
        self.pipe, self.noise_sched = pipe, DDPMScheduler.from_config(pipe.scheduler.config)
        self.t_weights = timestep_weights(cfg, self.noise_sched.config.num_train_timesteps)
        plist = list(self.params.values())
        self.opt = torch.optim.AdamW(plist, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.amp = autocast_dtype(cfg.precision, dev)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp == torch.float16)
        self.ema = {n: p.detach().clone() for n, p in self.params.items()} if cfg.ema_decay > 0 else None
        self.ema_updates = 0
        self._iter = None
        self.net = _Loss(pipe, self.noise_sched, cfg, self.t_weights)
        if self.dist.world > 1:  # broadcasts rank 0's weights now; averages the gradients in backward
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.net, device_ids=[dev.index] if dev.type == "cuda" else None)

    def state_dict(self) -> dict:
        return {
            "params": {n: p.detach() for n, p in self.params.items()},
            "ema": self.ema,
            "ema_updates": self.ema_updates,
            "optim": self.opt.state_dict(),  # its parameters are self.params' values, in this (named) order
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Named and checked: a checkpoint whose trainable parameters differ in name or shape is refused."""
        saved = state["params"]
        missing = [n for n in self.params if n not in saved]
        extra = [n for n in saved if n not in self.params]
        shapes = [f"{n} {tuple(saved[n].shape)} -> {tuple(p.shape)}" for n, p in self.params.items()
                  if n in saved and saved[n].shape != p.shape]  # fmt: skip
        if missing or extra or shapes or list(saved) != list(self.params):
            found = (("not in the checkpoint", missing), ("only in the checkpoint", extra), ("shape", shapes))
            what = "; ".join(
                f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)})"
                for label, names in found
                if names
            )
            what = what or "the parameters' order differs"
            raise InputError(None, f"the checkpoint's trainable parameters do not fit this model ({what}); "
                                   "start a new run (another --out)")  # fmt: skip
        if (state["ema"] is None) != (self.ema is None):
            on = "on" if self.ema is not None else "off"
            raise InputError(None, f"cannot resume with the EMA turned {on} (ema_decay 0 means no EMA): it "
                                   "changes the saved state; start a new run (another --out)")  # fmt: skip
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(saved[n])
            if self.ema is not None:
                self.ema = {n: state["ema"][n].to(p.device, p.dtype).clone() for n, p in self.params.items()}
        self.opt.load_state_dict(state["optim"])
        self.ema_updates = int(state["ema_updates"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])

    def finite(self) -> bool:
        return all_finite(self.params.values())

    # -- one step ------------------------------------------------------------------------------------------
    def _batch(self, step: int) -> dict:
        """The batch of ``step`` from the DataLoader (restarted at ``step`` when it is not the next one)."""
        if self._iter is None or self._next_step != step:
            self._iter = None  # its workers exit
            pin = self.dist.device.type == "cuda"
            self._iter = iter(mvdata.batch_loader(self.batches, step, self.cfg.workers, pin_memory=pin))
        item = next(self._iter)
        if item["step"] != step:
            raise RuntimeError(f"the data loader gave step {item['step']}'s batch for step {step}")
        self._next_step = step + 1
        return item

    def loss(self, step: int):
        item = self._batch(step)
        dev = self.dist.device
        inputs, targets = split_condition(item["images"].to(dev, non_blocking=True))
        angles = item.get("angles")
        seed = mvdata.step_seed(self.cfg.seed, step, self.dist.rank, STREAM_NOISE)
        gen = torch.Generator().manual_seed(seed)
        with torch.autocast(dev.type, dtype=self.amp, enabled=self.amp is not None):
            loss = self.net(inputs, targets, gen, angles)
        self._last = (inputs, targets)
        return loss, {}

    def update(self, loss, step: int, lr_scale: float) -> dict:
        lr = self.cfg.lr * lr_scale
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        # under torchrun DDP averages the gradients in this backward, before unscaling: every rank then has
        # the same gradients (the same inf/NaN for the scaler, the same clipped norm, the same step)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema_updates += 1
            decay = ema_decay_at(self.cfg.ema_decay, self.ema_updates)
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.values()), [p.detach() for p in self.params.values()],
                                     1.0 - decay)  # fmt: skip
        return {"grad_norm": norm, "lr": lr}

    # -- outputs -------------------------------------------------------------------------------------------
    def after_step(self, step: int, log) -> None:
        every = self.cfg.image_every
        if log is None or not every or step % every:
            return
        inputs, targets = self._last
        with torch.no_grad():
            views = self.pipe(inputs[0].permute(1, 2, 0).float().cpu().numpy(), num_inference_steps=20,
                              generator=torch.Generator().manual_seed(0))[0]  # fmt: skip
        truth = targets[: self.pipe.num_views].permute(0, 2, 3, 1).float().cpu().numpy()
        log.log_images("views", np.concatenate([views, truth]), step)

    def save_outputs(self) -> None:
        """RUN/pipeline/ with the EMA weights (the live ones without an EMA), written atomically."""
        from gausslift.mvdiff.loading import save_pretrained

        live = [p.detach().clone() for p in self.params.values()] if self.ema is not None else []
        try:
            with torch.no_grad():
                for n, p in self.params.items() if self.ema is not None else ():
                    p.copy_(self.ema[n])
            save_pretrained(self.pipe, self.loop.out / PIPELINE)
        finally:
            with torch.no_grad():
                for p, q in zip(self.params.values(), live):
                    p.copy_(q)

    def finish(self, result: dict) -> dict:
        self._iter = None
        return result | {"run": str(self.loop.out), "pipeline": str(self.loop.out / PIPELINE)}


def options(cfg: MVDiffTrainConfig, **kw) -> LoopOptions:
    """LoopOptions: the config's checkpoint and log intervals, then ``kw`` (iters, minutes, resume, ...)."""
    return LoopOptions.from_config(cfg, **({"iters": 0, "minutes": 0.0, "replan_at": REPLAN_AT} | kw))


def train(cfg: MVDiffTrainConfig, out, opts: LoopOptions | None = None, device: str | None = "auto",
          dist: Dist | None = None) -> dict:  # fmt: skip
    """Train in the run folder ``out`` (or continue it: ``opts.resume``); returns the loop's result, with
    ``run`` and ``pipeline`` (RUN/pipeline: the EMA model in the FaceLift folder layout)."""
    timestep_weights(cfg, 1000)  # refused before a process group or anything else is set up
    opts = opts or options(cfg)
    if opts.iters <= 0 and opts.minutes <= 0:
        raise InputError(None, "give a training length: --iters N and/or --minutes M")
    dist = dist or setup_dist(device)
    return Loop(MVDiffTask(cfg), Path(out), opts, dist).run()
