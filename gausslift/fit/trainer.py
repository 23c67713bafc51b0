"""The per-scene optimisation loop.

One training view per iteration; Adam per parameter; SH degree rises 0 -> ``sh_degree``; the density
strategy edits the Gaussians through its hooks. With a ``minutes`` budget the run first measures its
speed for ``warmup_seconds``, then plans its length (and so every schedule), re-planning the tail
once densification has stopped. A non-finite loss skips its step; ``nan_skip_limit`` of them in a row
(or non-finite parameters at a snapshot) roll back to the last good in-memory state with a lower
learning rate. Checkpoints are written every ``checkpoint_minutes`` (at least 6 times in a budgeted
run) and on Ctrl-C.

Device (``cfg.device``, see :func:`gausslift.train.device.resolve_device`): parameters, Adam and
strategy state, images and masks live there; each resolution level's images are uploaded once. In the
step loop the only host reads are the loss's finiteness (one boolean; gsplat syncs inside every
rasterisation anyway) and, every ``log_every`` steps, the logged numbers. Checkpoints are saved on the
CPU and resume on any device; random draws (views, backgrounds, splits) come from CPU generators, so a
run draws the same numbers on every device.
"""

from __future__ import annotations

import collections
import copy
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch

from gausslift.config import save_config
from gausslift.errors import GaussliftError
from gausslift.fit import checkpoint as ckpt
from gausslift.fit.config import FitConfig, background_rgb
from gausslift.fit.data import (
    check_consistent,
    composite,
    downscaled,
    load_views,
    on_device,
    stacked_cameras,
    train_views,
)
from gausslift.fit.init import init_params, scene_extent
from gausslift.fit.losses import Perceptual, compute_loss
from gausslift.fit.model import render_params
from gausslift.fit.optim import (
    base_lrs,
    load_optimizer_state,
    make_optimizers,
    means_lr,
    optimizer_state,
    set_lr,
)
from gausslift.fit.runs import CONFIG, PLY, clean_partial, run_log, save_splats, write_info
from gausslift.fit.strategy import DefaultStrategy, Schedule, scaled_schedule
from gausslift.progress import progress as progress_bar
from gausslift.scene import Scene
from gausslift.train.budget import Budget
from gausslift.train.device import resolve_device
from gausslift.train.guard import NonFiniteGuard, all_finite
from gausslift.train.runlog import to_scalars

NEVER = 1 << 40


class Trainer:
    def __init__(self, scene: Scene, cfg: FitConfig, out: str | Path, run_info: dict | None = None):
        """Loads and checks the training views; writes nothing."""
        self.clock = Budget(minutes=cfg.minutes)
        self.cfg, self.out, self.scene = cfg, Path(out), scene
        self.device = resolve_device(cfg.device, cfg.backend)
        self.bg = torch.tensor(background_rgb(cfg.background), dtype=torch.float32, device=self.device)
        self.data = load_views(train_views(scene), cfg.downscale)
        self.has_masks = check_consistent(self.data)
        self.cams = stacked_cameras(self.data)
        self.extent = scene_extent(self.cams)
        self.perceptual = Perceptual(cfg, self.device) if cfg.lambda_perceptual > 0 else None
        self.run_info = dict(run_info or {})
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.reserve = min(10.0, 0.03 * self.budget)
        self.strategy = DefaultStrategy(cfg.strategy, Schedule(NEVER, NEVER, NEVER, NEVER), self.extent)
        self._stop = False
        self.levels: dict[int, list] = {}  # downscale factor -> the views on self.device
        self.guard = NonFiniteGuard(cfg.nan_skip_limit)

    # -- state ----------------------------------------------------------------------------------------
    def _fresh(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        images = [d.image for d in self.data]
        masks = [d.mask for d in self.data] if self.has_masks else None
        pts = self.scene.points3d
        params = init_params(self.cams, images, masks, cfg, self.gen, pts, self.scene.points_rgb)
        self.params = {k: torch.nn.Parameter(v.detach().to(self.device)) for k, v in params.items()}
        self.lr_factor = 1.0
        self.optimizers = make_optimizers(self.params, base_lrs(cfg, self.extent))
        self.sstate = self.strategy.initialize_state(len(self.params["means"]), self.device)
        self.step, self.nans = 0, 0  # the clock started with the trainer: loading counts too
        self.perm, self.pos = torch.randperm(len(self.data), generator=self.gen, device="cpu"), 0
        self.planned = self.budget <= 0
        self._plan(cfg.iters if self.planned else NEVER)

    def _plan(self, total: int, schedule: bool = True) -> None:
        self.total = int(total)
        if schedule:
            ref = self.cfg.schedule_ref_iters
            if total < NEVER:
                self.strategy.schedule = scaled_schedule(self.cfg.strategy, total, ref)
            self.sh_interval = max(1, round(self.cfg.sh_degree_interval * total / ref))

    def _state(self) -> dict:
        return {
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "optim": copy.deepcopy(optimizer_state(self.optimizers)),
            "strategy": {k: v.clone() for k, v in self.sstate.items()},
        }

    def _load_state(self, st: dict) -> None:
        """An in-memory snapshot or a loaded checkpoint (on any device) onto self.device."""
        dev = self.device
        self.params = {k: torch.nn.Parameter(v.to(dev, copy=True)) for k, v in st["params"].items()}
        self.optimizers = make_optimizers(self.params, base_lrs(self.cfg, self.extent))
        load_optimizer_state(self.optimizers, copy.deepcopy(st["optim"]))  # Adam moves it to dev
        self.sstate = {k: v.to(dev, copy=True) for k, v in st["strategy"].items()}
        self._apply_lr()

    def elapsed(self) -> float:
        return self.clock.elapsed()

    @property
    def budget(self) -> float:
        """The time budget in seconds (0: none), as the clock holds it."""
        return self.clock.seconds

    def save_checkpoint(self) -> None:
        s = self.strategy.schedule
        data = self._state() | {
            "step": self.step,
            "elapsed": self.elapsed(),
            "total": self.total,
            "planned": self.planned,
            "schedule": [s.refine_start, s.refine_stop, s.refine_every, s.reset_every],
            "sh_interval": self.sh_interval,
            "lr_factor": self.lr_factor,
            "nans": self.nans,
            "guard": self.guard.state(),
            "perm": self.perm,
            "pos": self.pos,
            "rng": ckpt.rng_state(self.gen),
        }
        ckpt.save_checkpoint(self.out / ckpt.CHECKPOINT, data)

    def _restore(self, d: dict) -> None:
        self.lr_factor = d["lr_factor"]
        self.step, self.total, self.planned = d["step"], d["total"], d["planned"]
        self._load_state(d)
        self.strategy.schedule = Schedule(*d["schedule"])
        self.sh_interval, self.nans = d["sh_interval"], d["nans"]
        if self.budget <= 0 and self.cfg.iters != self.total:  # resumed with another length
            self._plan(self.cfg.iters)
        self.perm, self.pos = d["perm"], d["pos"]
        ckpt.set_rng_state(d["rng"], self.gen)
        if "guard" in d:
            self.guard.restore(d["guard"])
        self.clock.restore({"elapsed": d["elapsed"]})

    # -- learning rates and NaN rollback -----------------------------------------------------------
    def _apply_lr(self) -> None:
        lrs = base_lrs(self.cfg, self.extent)
        lrs["means"] = means_lr(self.cfg, self.extent, self.step, self.total)
        for k, o in self.optimizers.items():
            set_lr(o, lrs[k] * self.lr_factor)

    def _rollback(self) -> None:
        self.nans += 1
        if self.nans > 8:
            raise GaussliftError("training diverged: NaN after 8 rollbacks with lower learning rates")
        self.lr_factor *= self.cfg.nan_lr_factor
        self._load_state(self.good)
        self.guard.reset()
        self.events.append(f"NaN at step {self.step}: rolled back, lr x{self.lr_factor:g}")

    def _finite(self) -> bool:
        return all_finite(self.params.values())

    # -- the loop -------------------------------------------------------------------------------------
    def _next_view(self) -> int:
        if self.pos >= len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.data), generator=self.gen, device="cpu"), 0
        i = int(self.perm[self.pos])
        self.pos += 1
        return i

    def _c2f(self) -> bool:
        h, w = self.data[0].image.shape[:2]
        return self.cfg.c2f_min_size > 0 and min(h, w) >= self.cfg.c2f_min_size

    def _level(self) -> int:
        """Coarse to fine: the downscale factor of the training images now."""
        if not self._c2f():
            return 1
        done = self.elapsed() / self.budget if self.budget > 0 else self.step / max(self.total, 1)
        return 1 if done >= self.cfg.c2f_full else 2 if done >= self.cfg.c2f_half else 4

    def _views(self, level: int) -> list:
        """The training views at 1/level resolution on self.device (uploaded once per level)."""
        if level not in self.levels:
            self.levels[level] = [on_device(downscaled(d, level), self.device) for d in self.data]
        return self.levels[level]

    def _speed_factor(self) -> float:
        """Mean speed over the rest of the run relative to now: the model grows (x0.6) and, coarse
        to fine, later stages have more pixels (time ~ pixels^0.7)."""
        f = 0.6
        if self._c2f() and self._level() > 1:
            c = self.cfg
            f *= c.c2f_half + (c.c2f_full - c.c2f_half) * 0.25**0.7 + (1 - c.c2f_full) * 0.0625**0.7
        return f

    def _warmed_up(self, rates: collections.deque) -> bool:
        """Enough steps timed to plan: the first steps (JIT compilation) are left out."""
        if len(rates) < 3:
            return False
        if len(rates) == 3:
            self.warm_from = rates[-1]
        t0, s0 = self.warm_from
        span = min(self.cfg.warmup_seconds, 0.1 * self.budget)
        return self.step - s0 >= 10 and time.perf_counter() - t0 >= span

    def _replan(self, rates: collections.deque) -> None:
        """Budgeted runs: set the length from the measured speed (schedules only the first time)."""
        times = np.array([t for t, s in rates if self.planned or s >= self.warm_from[1]])
        if len(times) < 3:
            return
        rate = 1.0 / max(float(np.median(np.diff(times))), 1e-6)  # median: robust to JIT pauses
        left = max(self.budget - self.reserve - self.elapsed(), 0.0)
        if not self.planned:
            # densification will grow the model and slow it down: plan for a mean speed below now
            self._plan(self.step + max(1, int(rate * left * self._speed_factor())))
            self.planned = True
            return
        new = self.step + max(1, int(rate * left))
        if new > 2 * self.total and self.elapsed() < 0.5 * self.budget:
            # the first plan was far too short (a slow warm-up): plan the schedules again from here
            self._plan(self.step + max(1, int(rate * left * self._speed_factor())))
        else:
            self._plan(new, schedule=False)

    def _extend(self, rates: collections.deque) -> bool:
        """A budgeted run that reached its planned length early plans more steps (True if it did)."""
        if self.budget <= 0 or not self.planned:
            return False
        if self.budget - self.reserve - self.elapsed() < max(5.0, 0.02 * self.budget):
            return False
        self._replan(collections.deque(list(rates)[-50:]))
        return self.step < self.total

    def train_step(self) -> dict:
        cfg, v = self.cfg, self._views(self._level())[self._next_view()]
        bg = self.bg
        if cfg.random_background and v.mask is not None:  # drawn on the CPU: the same on every device
            bg = torch.rand(3, generator=self.gen, device="cpu").to(self.device, non_blocking=True)
        sh = min(self.step // self.sh_interval, cfg.sh_degree) if self.planned else 0
        self._apply_lr()
        h, w = v.image.shape[:2]
        renders, alphas, meta = render_params(
            self.params, v.viewmat[None], v.K[None], w, h, sh, bg, cfg.backend
        )
        gt = composite(v.image, v.mask, bg)
        loss, parts = compute_loss(cfg, renders[0], alphas[0], gt, v.mask, self.params, self.perceptual)
        info = dict(meta, width=w, height=h, n_cameras=1)
        self.strategy.step_pre_backward(self.params, self.optimizers, self.sstate, self.step, info)
        if not self.guard.check(loss):  # skip this step; several in a row: roll back
            if self.guard.rollback:
                self._rollback()
            else:
                self.events.append(f"non-finite loss at step {self.step}: step skipped")
            return {}
        loss.backward()
        for o in self.optimizers.values():
            o.step()
            o.zero_grad(set_to_none=True)
        edits = self.strategy.step_post_backward(self.params, self.optimizers, self.sstate, self.step, info)
        mse = ((renders[0].detach() - gt) ** 2).mean()  # tensors: read back only when logged
        return {"loss": loss.detach(), "mse": mse, "sh": sh, **parts, **edits}

    def fit(self, resume: bool = False, progress: bool = True) -> dict:
        cfg = self.cfg
        if resume:
            self._restore(ckpt.load_checkpoint(self.out / ckpt.CHECKPOINT))
        else:
            self._fresh()  # may still reject the input (e.g. masks that carve nothing): before writing
        self.out.mkdir(parents=True, exist_ok=True)
        clean_partial(self.out)
        save_config(cfg, self.out / CONFIG)
        write_info(self.out, self.run_info | {"finished": False})
        log = run_log(self.out, resume_step=self.step if resume else -1)
        self.good, self.events = self._state(), []
        rates: collections.deque = collections.deque(maxlen=10_000)
        last_ckpt = time.perf_counter()
        every = cfg.checkpoint_minutes * 60  # and at least 6 times in a budgeted run
        every = min(every, self.budget / 6) if self.budget > 0 else every
        old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        total = self.total if self.total < NEVER else None
        bar = progress_bar(total=total, initial=self.step, disable=not progress, desc="fit")
        try:
            while self.step < self.total or self._extend(rates):
                if self._stop:  # Ctrl-C: keep everything so far, resumable with --resume
                    save_splats(self.params, self.out / PLY)
                    self.save_checkpoint()
                    raise KeyboardInterrupt
                if self.budget > 0:
                    e = self.elapsed()
                    if e >= self.budget - self.reserve:
                        break
                    if not self.planned and self._warmed_up(rates):
                        self._replan(rates)
                        bar.total = self.total
                    sch = self.strategy.schedule
                    if self.planned and self.step < sch.refine_stop and e >= 0.6 * self.budget:
                        sch.refine_stop = self.step  # out of time to grow: freeze the model now
                    if self.planned and self.step >= sch.refine_stop and self.step % 100 == 0:
                        self._replan(collections.deque(list(rates)[-50:]))
                        bar.total = self.total
                stats = self.train_step()
                self.step += 1
                bar.update(1)
                rates.append((time.perf_counter(), self.step))
                if self.step % cfg.snapshot_every == 0:  # a NaN loss is caught at once; NaN
                    if self._finite():  # parameters at the latest here, before they become 'good'
                        self.good = self._state()
                    else:
                        self._rollback()
                n = len(self.params["means"])
                if stats and (self.step % cfg.log_every == 0 or self.step == self.total):
                    row = log.write(self._row(stats, n))  # the one host read of the logged numbers
                    bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}", n=n)
                if time.perf_counter() - last_ckpt >= every:
                    self.save_checkpoint()
                    last_ckpt = time.perf_counter()
        finally:
            signal.signal(signal.SIGINT, old_handler)
            bar.close()
            log.close()
        return self.finish()

    def _row(self, stats: dict, n: int) -> dict:
        stats = to_scalars(stats)  # device tensors -> numbers, in one transfer
        row = {"step": self.step, "elapsed_s": round(self.elapsed(), 2), "num_gaussians": n}
        row["loss"] = stats.pop("loss")
        row["psnr"] = -10 * math.log10(max(stats.pop("mse"), 1e-10))
        row["sh_degree"] = stats.pop("sh")
        row["lr_means"] = self.optimizers["means"].param_groups[0]["lr"]
        return row | stats

    def _on_sigint(self, signum, frame) -> None:
        self._stop = True

    def finish(self) -> dict:
        if not self._finite():
            self._rollback()
        save_splats(self.params, self.out / PLY)
        self.save_checkpoint()
        result = {
            "finished": True,
            "iters": self.step,
            "train_seconds": round(self.elapsed(), 2),
            "num_gaussians": len(self.params["means"]),
            "nan_rollbacks": self.nans,
            "nan_skipped_steps": self.guard.skipped,
            "device": str(self.device),
            "events": self.events,
        }
        write_info(self.out, self.run_info | result)
        return result
