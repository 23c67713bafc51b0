"""Train or fine-tune GS-LRM: ``train(cfg, data, out, ...)``, one process or DDP under ``torchrun``.

Per step every process takes its share of the global batch (``gausslift.lrm.data``: a pure function
of seed and step, so resumed and distributed runs see the same batches), predicts Gaussians from the
input views (bf16 autocast on CUDA), renders the target views through ``gausslift.render.rasterize``
(``cpu`` backend on CPU, ``gsplat`` on CUDA) over the sample's background, and minimises
``gausslift.lrm.losses.LRMLoss``. AdamW (decay on matrices only), linear warm-up then cosine decay
over the budget (steps, or the time fraction when only minutes are given), gradient norm clipped and
logged. A non-finite loss (on any process) skips the step on all of them; ``max_nonfinite`` in a row
roll back to the last checkpoint and halve the learning rate.

Distributed: ``torchrun --nproc_per_node N -m gausslift lrm train ...`` sets RANK/WORLD_SIZE;
``DistributedDataParallel`` with NCCL on CUDA (one device per LOCAL_RANK), gloo on CPU. Rank 0 writes
the run folder: ``config.yaml``, ``run.json``, ``checkpoint.pt`` (atomic: model, optimiser, scaler, RNG,
budget, step), ``log.jsonl`` / ``log.csv`` / ``tb/`` (scalars, image grids input | target | render) and
periodic validation on held-out samples (novel views only: PSNR, mask IoU).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist

from gausslift.config import save_config, to_dict
from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json
from gausslift.lrm.config import LRMTrainConfig, check_config, image_size
from gausslift.lrm.data import TrainData, held_out, validation_batches
from gausslift.lrm.losses import LRMLoss
from gausslift.models.gslrm import GSLRM, render_gaussians
from gausslift.train.budget import Budget
from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gausslift.train.device import resolve_device
from gausslift.train.guard import NonFiniteGuard
from gausslift.train.runlog import RunLog

CKPT = "checkpoint.pt"
FORMAT = "gausslift-lrm"
COLUMNS = ("step", "loss", "l2", "mask", "psnr", "grad_norm", "lr", "skipped", "seconds", "val_psnr",
           "val_iou")


# --------------------------------------------------------------------------------------------------
def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def setup(cfg: LRMTrainConfig, device_spec: str):
    """Resolve the device and rasteriser backend; start the process group under torchrun."""
    rank, world, local = dist_env()
    backend = cfg.backend
    device = resolve_device(device_spec, None if backend == "auto" else backend)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if backend == "auto":
        from gausslift.train.device import gsplat_installed

        backend = "cpu" if device.type == "cpu" else ("gsplat" if gsplat_installed() else "torch")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return rank, world, device, backend


def param_groups(model: GSLRM, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "gaussian_tokens" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(cfg: LRMTrainConfig, step: int, fraction: float) -> float:
    """Linear warm-up over ``warmup_steps``, cosine decay to 0 as ``fraction`` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def autocast_dtype(cfg: LRMTrainConfig, device: torch.device):
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def render_batch(g, batch, backend: str):
    """Render the batch's target views (float32, outside autocast) -> (rgb [B,V,H,W,3], alpha)."""
    H, W = batch.images.shape[2:4]
    with torch.autocast(batch.images.device.type, enabled=False):
        return render_gaussians(g, batch.Ks, batch.viewmats, W, H, background=batch.backgrounds,
                                backend=backend)  # fmt: skip


def triptych(inputs, targets, renders) -> torch.Tensor:
    """One image [1, H', W', 3]: a row of input views, a row of targets, a row of their renders."""
    from gausslift.train.runlog import image_grid

    v = min(inputs.shape[0], targets.shape[0])
    rows = torch.cat([inputs[:v], targets[:v], renders[:v]]).detach().float().cpu()
    return torch.from_numpy(image_grid(rows, cols=v))[None]


# --------------------------------------------------------------------------------------------------
def run_checkpoint(path) -> Path | None:
    """Our checkpoint for a run folder or a ``checkpoint.pt`` file (inside its run or copied out of it:
    the checkpoint carries its own config); None for anything else (e.g. FaceLift's ``ckpt_*.pt``)."""
    p = Path(path)
    if p.is_dir():
        if not (p / CKPT).is_file():
            raise InputError(p, f"not a GS-LRM run (no {CKPT})")
        return p / CKPT
    return p if p.is_file() and p.name == CKPT else None


def _read_run(path: Path) -> dict:
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(path, "not a GS-LRM run checkpoint")
    return state


def load_model(path, device="cpu") -> tuple[GSLRM, dict]:
    """A model from a run folder, a run checkpoint or FaceLift's ``ckpt_*.pt``; (model, info)."""
    from gausslift.config import from_dict
    from gausslift.models.gslrm import GSLRMConfig

    ours = run_checkpoint(path)
    if ours is not None:
        state = _read_run(ours)
        model = GSLRM(from_dict(GSLRMConfig, state["config"]["model"]))
        model.load_state_dict(state["model"])
        info = {"source": str(ours), "step": state["step"], "kind": "run"}
    else:
        from gausslift.lrm.facelift_ckpt import load_facelift_model

        model, info = load_facelift_model(path), {"source": str(path), "kind": "facelift"}
    return model.to(device).eval(), info


def init_weights(model: GSLRM, path) -> None:
    """``--init``: FaceLift's checkpoint (through the key map) or one of our runs / checkpoints."""
    ours = run_checkpoint(path)
    if ours is not None:
        try:
            model.load_state_dict(_read_run(ours)["model"])
        except RuntimeError as e:
            raise InputError(ours, f"does not fit this config: {str(e).splitlines()[0]}") from None
        return
    from gausslift.lrm.facelift_ckpt import load_facelift_checkpoint

    load_facelift_checkpoint(model, path)


@torch.no_grad()
def validate(model: GSLRM, samples, cfg: LRMTrainConfig, device, backend: str, n: int):
    """Mean PSNR and mask IoU over the novel views of the first ``n`` held-out samples; also the
    image grid (input | target | render) of the first one."""
    from gausslift.metrics import mask_iou, psnr

    was = model.training
    model.eval()
    ps, ious, grid = [], [], None
    for batch in validation_batches(samples[:n], cfg.data, image_size(cfg), cfg.model.patch_size, cfg.seed):
        batch = batch.to(device)
        g = model(batch.in_images, batch.in_Ks, batch.in_viewmats, batch.in_masks)
        rgb, alpha = render_batch(g, batch, backend)
        rgb = rgb.clamp(0, 1)
        ps.append(psnr(rgb, batch.images).mean())
        ious.append(mask_iou(alpha, batch.masks).float().mean())
        if grid is None:
            grid = triptych(batch.in_images[0], batch.images[0], rgb[0])
    model.train(was)
    if not ps:
        return None
    return float(torch.stack(ps).mean()), float(torch.stack(ious).mean()), grid


# --------------------------------------------------------------------------------------------------
def train(cfg: LRMTrainConfig, data, out, *, val=None, steps: int = 0, minutes: float = 0.0,
          resume: bool = False, init: str | None = None, device: str = "auto",
          progress_bar: bool = True) -> Path:  # fmt: skip
    """Train (or resume) a run in ``out``; returns the run folder. ``data``: DATA arguments
    (``gausslift.lrm.data.find_samples``); ``val``: held-out samples (default: the data folders'
    ``data_val.txt``)."""
    from gausslift.lrm.data import find_samples
    from gausslift.progress import progress

    run = Path(out)
    ckpt = run / CKPT
    if resume:
        if not ckpt.is_file():
            raise InputError(run, f"nothing to resume (no {CKPT})")
        cfg = _saved_config(run)
    elif ckpt.exists():
        raise InputError(run, "already holds a run: add --resume to continue it, or choose another --out")
    if steps <= 0 and minutes <= 0:
        raise InputError(None, "give a training length: --steps N and/or --minutes M")
    check_config(cfg)
    rank, world, dev, backend = setup(cfg, device)
    if cfg.batch % world:
        raise InputError(None, f"batch {cfg.batch} does not split over {world} processes")
    samples = find_samples(data)
    val_samples = find_samples(val) if val else held_out(data)
    size, patch = image_size(cfg), cfg.model.patch_size
    tdata = TrainData(samples, cfg.data, size, patch, cfg.batch, cfg.seed)

    torch.manual_seed(cfg.seed)
    model = GSLRM(cfg.model)
    if init and not resume:
        init_weights(model, init)
    model = model.to(dev).train()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    loss_fn = LRMLoss(cfg.loss).to(dev)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    scaler = torch.amp.GradScaler(dev.type, enabled=False)  # bf16/fp32: kept for the checkpoint layout
    amp = autocast_dtype(cfg, dev)
    budget = Budget(minutes=minutes, steps=steps)
    guard = NonFiniteGuard(cfg.max_nonfinite)
    step, lr_scale = 0, 1.0

    def restore(state):
        nonlocal step, lr_scale
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        scaler.load_state_dict(state["scaler"])
        step, lr_scale = int(state["step"]), float(state.get("lr_scale", 1.0))

    if resume:
        state = load_checkpoint(ckpt)
        restore(state)
        budget.restore(state["budget"])
        guard.restore(state["guard"])
        set_rng_state(state["rng"])
    elif rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run / "config.yaml")
        atomic_write_json(run / "run.json", dict(
            data=[str(d) for d in ([data] if isinstance(data, (str, Path)) else data)],
            n_train=len(samples), n_val=len(val_samples), init=str(init or ""), world_size=world,
            device=str(dev), backend=backend, steps=steps, minutes=minutes))  # fmt: skip

    def checkpoint():
        if rank == 0:
            state = dict(format=FORMAT, step=step, model=model.state_dict(), opt=opt.state_dict(),
                         scaler=scaler.state_dict(), budget=budget.state(), guard=guard.state(),
                         rng=rng_state(), lr_scale=lr_scale, config=to_dict(cfg), world_size=world)
            save_checkpoint(ckpt, state)
        if world > 1:
            dist.barrier()

    log = RunLog(run, COLUMNS, resume_step=step if resume else None) if rank == 0 else None
    if not resume:
        checkpoint()  # step 0: what a rollback before the first periodic checkpoint returns to
    show = rank == 0 and progress_bar
    bar = progress(total=steps or None, desc="lrm train", initial=step) if show else None
    pool = ThreadPoolExecutor(1) if cfg.workers > 0 else None
    fetch = lambda s: tdata.batch(s, rank, world)
    pending = pool.submit(fetch, step) if pool else None
    last_saved, last_val = step, -1
    try:
        while not (steps > 0 and step >= steps):
            batch = pending.result() if pool else fetch(step)
            pending = pool.submit(fetch, step + 1) if pool else None
            batch = batch.to(dev)
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                g = net(batch.in_images, batch.in_Ks, batch.in_viewmats, batch.in_masks)
            rgb, alpha = render_batch(g, batch, backend)
            loss, terms = loss_fn(rgb, alpha, batch.images, batch.masks, step)
            # one sync for the whole group: the loss (skip everywhere if any is bad) and the budget
            flags = torch.stack([loss.detach().float(), torch.tensor(budget.fraction(step), device=dev),
                                 torch.tensor(float(budget.done(step + 1)), device=dev)])  # fmt: skip
            if world > 1:
                dist.all_reduce(flags)
                flags = flags / world
            if not guard.check(flags[0]):
                if rank == 0:
                    log.write({"step": step, "skipped": guard.skipped, "nonfinite": 1})
                if guard.rollback:  # weights and optimiser from the checkpoint; the step count goes on
                    at, scale = step, lr_scale
                    restore(load_checkpoint(ckpt))
                    step, lr_scale = at, scale * 0.5
                    guard.reset()
                    if rank == 0:
                        log.write({"step": step, "rollback": 1, "lr_scale": lr_scale})
                step += 1  # the batch is used up; the step count goes on
                if flags[2] > 0:
                    break
                continue
            lr = lr_at(cfg, step, float(flags[1])) * lr_scale
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            if bar is not None:
                bar.update(1)
            if rank == 0 and (step % cfg.log_every == 0 or step == 1):
                row = {"step": step, "loss": flags[0], "grad_norm": gnorm, "lr": lr, "skipped": guard.skipped,
                       "seconds": budget.elapsed(), **terms}  # fmt: skip
                if "l2" in terms:
                    row["psnr"] = -10.0 * torch.log10(terms["l2"].clamp_min(1e-10))
                log.write(row)
            if rank == 0 and cfg.image_every and step % cfg.image_every == 0:
                grid = triptych(batch.in_images[0], batch.images[0], rgb[0].detach().clamp(0, 1))
                log.log_images("train/input|target|render", grid, step)
            if cfg.val_every and step % cfg.val_every == 0 and rank == 0 and val_samples:
                _val(log, model, val_samples, cfg, dev, backend, step, budget)
                last_val = step
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
                last_saved = step
            if flags[2] > 0:
                break
    finally:
        if pool:
            pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    if step > last_saved:
        checkpoint()
    if rank == 0:
        if val_samples and (last_val != step or len(val_samples) > cfg.val_samples):
            _val(log, model, val_samples, cfg, dev, backend, step, budget, final=True)
        log.close()
    if world > 1:
        dist.barrier()
    return run


def _val(log, model, samples, cfg, dev, backend, step, budget, final=False):
    res = validate(model, samples, cfg, dev, backend, len(samples) if final else cfg.val_samples)
    if res is None:
        return
    p, iou, grid = res
    log.write({"step": step, "val_psnr": p, "val_iou": iou, "seconds": budget.elapsed(),
               "val_samples": len(samples) if final else min(len(samples), cfg.val_samples)})  # fmt: skip
    if cfg.image_every:
        log.log_images("val/input|target|render", grid, step)


def _saved_config(run: Path) -> LRMTrainConfig:
    from gausslift.config import load_config

    return load_config(LRMTrainConfig, run / "config.yaml")


def read_log(run) -> list[dict]:
    """The rows of a run's ``log.jsonl``."""
    p = Path(run) / "log.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []
