"""The per-scene fit as a :class:`gausslift.train.loop.Task`: its model, batch and loss.

Model: the Gaussians' raw parameters, one Adam each, and the density strategy's per-Gaussian state.
Batch: one training view per step (a shuffled pass over the views, drawn from the trainer's own CPU
generator) at the coarse-to-fine resolution of that step, on a random background when the views have
masks. Loss: :func:`gausslift.fit.losses.compute_loss`; SH degree rises 0 -> ``sh_degree``; the strategy
edits the Gaussians through its hooks after every update. Exports: ``splats.ply`` and ``run.json``,
written with every checkpoint (``run.json`` says ``"finished": true`` once the run has ended).

Everything else is :class:`gausslift.train.loop.Loop`'s: the length (``iters``, or a ``minutes`` budget
planned from the measured step time and :meth:`Trainer.steps_in`), checkpoints, resume, the
log, the non-finite guard with rollback (the learning rate scale arrives in :meth:`Trainer.update`),
Ctrl-C. :func:`loop_options` maps a :class:`FitConfig` to the loop's options. Every schedule
(densification, SH degree, coarse to fine, the means' learning-rate decay) is a function of the step
and the planned total alone, set by :meth:`Trainer.plan`, so a run does not depend on machine load and
a resumed run repeats an uninterrupted one bit for bit.

Device (``cfg.device``, see :func:`gausslift.train.device.resolve_device`): parameters, Adam and
strategy state, images and masks live there; each resolution level's images are uploaded once. In the
step loop the only host read is the loop's guard (one boolean per step; gsplat syncs inside every
rasterisation anyway) and, every ``log_every`` steps, the logged numbers. Checkpoints are saved on the
CPU and resume on any device; random draws (views, backgrounds, splits) come from CPU generators, so a
run draws the same numbers on every device.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.fit.config import FitConfig, background_rgb, check_config
from gausslift.fit.data import (
    check_consistent,
    composite,
    downscaled,
    load_views,
    on_device,
    pixels,
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
    uses_selective_adam,
)
from gausslift.fit.plan import COARSEST, PIXEL_EXP, stage_levels, step_cost, steps_within
from gausslift.fit.runs import LOG_COLUMNS, PLY, clean_partial, save_splats, write_info
from gausslift.fit.selective_adam import visible_rows
from gausslift.fit.strategies import make_strategy
from gausslift.fit.strategy import Schedule
from gausslift.scene import Scene
from gausslift.train.device import resolve_device
from gausslift.train.dist import Dist
from gausslift.train.guard import all_finite
from gausslift.train.loop import REPLAN_AT, Loop, LoopOptions, Task

NEVER = 1 << 40
GROWING = ("mcmc", "budget")  # strategy kinds whose count follows a schedule to a fixed cap
REPLAN_FIT = (*REPLAN_AT, 0.75)  # a budgeted fit re-plans here: counts predicted, step times re-timed


def loop_options(cfg: FitConfig, resume: bool = False, quiet: bool = False) -> dict:
    """The :class:`LoopOptions` fields a fit's config sets (a ``minutes`` budget overrides ``iters``)."""
    opts = LoopOptions.from_config(cfg, resume=resume, quiet=quiet, max_nonfinite=cfg.nan_skip_limit,
                                   extend=cfg.minutes > 0,  # time left after the plan: polish at its end
                                   replan_at=REPLAN_FIT if cfg.plan == "predict" else ())
    return dataclasses.asdict(opts)


class Trainer(Task):
    name = "fit"
    columns = LOG_COLUMNS
    shape_keys = ("sh_degree",)  # shN's width; everything else is sized by the saved state itself

    def __init__(self, scene: Scene, cfg: FitConfig, out: str | Path, run_info: dict | None = None):
        """Loads and checks the training views and the device; writes nothing."""
        check_config(cfg)
        self.cfg, self.out, self.scene = cfg, Path(out), scene
        self.device = resolve_device(cfg.device, cfg.backend)
        self.bg = torch.tensor(background_rgb(cfg.background), dtype=torch.float32, device=self.device)
        self.data = load_views(train_views(scene), cfg.downscale, compact=True)  # 8/16-bit: uint8/16
        self.has_masks = check_consistent(self.data)
        self.cams = stacked_cameras(self.data)
        self.extent = scene_extent(self.cams)
        self.perceptual = Perceptual(cfg, self.device) if cfg.lambda_perceptual > 0 else None
        self.run_info = dict(run_info or {})
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.selective = uses_selective_adam(cfg)
        self.strategy = make_strategy(cfg.strategy, Schedule(NEVER, NEVER, NEVER, NEVER), self.extent)
        self.levels: dict[int, list] = {}  # downscale factor -> the views on self.device
        self.finest = COARSEST  # the finest coarse-to-fine level trained so far: a re-plan never goes back
        self.total, self.sh_interval = 0, 1  # 0: not planned yet (a minutes budget's warm-up)
        self.sh_reached = 0  # the highest SH degree trained so far: a re-plan never lowers it
        self._batch: tuple | None = None
        self._drawing = False  # batches drawn in this process: a state loaded now is a rollback
        self._counts: list[int] = []  # each step's Gaussian count (this process's, from _timed_from on)
        self._levels: list[int] = []  # and its coarse-to-fine level
        self._timed_from = 0

    # -- the loop's interface -------------------------------------------------------------------------
    def config(self) -> FitConfig:
        return self.cfg

    def fit(self, resume: bool = False, progress: bool = True) -> dict:
        """Run this fit on the loop into ``out`` (what ``gausslift fit`` does after parsing)."""
        opts = LoopOptions(**loop_options(self.cfg, resume=resume, quiet=not progress))
        return Loop(self, self.out, opts, Dist(device=self.device)).run()

    def start(self) -> None:
        """Fresh state (seeded). On a resume the loop loads the saved state next: no initialisation."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.gen.manual_seed(cfg.seed)
        self.finest, self.sh_reached = COARSEST, 0
        if self.out.is_dir():  # a resumed run: temporary files a killed writer left
            clean_partial(self.out)
        if self.loop is not None and self.loop.opts.resume:
            return
        images = [d.image for d in self.data]  # as stored: init converts only the pixels it reads
        masks = [d.mask for d in self.data] if self.has_masks else None
        pts = self.scene.points3d
        icfg = cfg
        if cfg.strategy.kind == "mcmc":  # gsplat's MCMC initial opacity and scale
            icfg = dataclasses.replace(cfg, init_opacity=cfg.strategy.mcmc_init_opacity,
                                       init_scale=cfg.strategy.mcmc_init_scale)  # fmt: skip
        params = init_params(self.cams, images, masks, icfg, self.gen, pts, self.scene.points_rgb)
        self.params = {k: torch.nn.Parameter(v.detach().to(self.device)) for k, v in params.items()}
        self.optimizers = make_optimizers(self.params, base_lrs(cfg, self.extent), self.selective)
        self.sstate = self.strategy.initialize_state(len(self.params["means"]), self.device)
        self.perm, self.pos = torch.randperm(len(self.data), generator=self.gen, device="cpu"), 0

    def plan(self, total: int) -> None:
        """The run's length: scale the reference schedules to it (the first plan, every re-plan, and a
        resume, which plans the saved length)."""
        ref = self.cfg.schedule_ref_iters
        self.total = int(total)
        self.strategy.schedule = self.strategy.plan_schedule(self.total, ref)
        self.sh_interval = max(1, round(self.cfg.sh_degree_interval * self.total / ref))

    def state_dict(self) -> dict:
        return {
            "params": {k: v.detach() for k, v in self.params.items()},
            "optim": optimizer_state(self.optimizers),
            "strategy": dict(self.sstate),
            "gen": self.gen.get_state(),
            "perm": self.perm,
            "pos": self.pos,
            "c2f_finest": self.finest,
            "sh_reached": self.sh_reached,
            "strategy_meta": self.strategy.meta_state(),
        }

    def load_state_dict(self, st: dict) -> None:
        """A snapshot or a loaded checkpoint (saved on any device) onto self.device."""
        if len(st["perm"]) != len(self.data):
            raise InputError(
                self.out,
                f"the run was fitted on {len(st['perm'])} training views, this capture gives "
                f"{len(self.data)} (another DATA or --holdout-every?)",
            )
        dev = self.device
        self.params = {k: torch.nn.Parameter(v.to(dev, copy=True)) for k, v in st["params"].items()}
        self.optimizers = make_optimizers(self.params, base_lrs(self.cfg, self.extent), self.selective)
        load_optimizer_state(self.optimizers, st["optim"])  # Adam moves it to dev
        self.sstate = {k: v.to(dev, copy=True) for k, v in st["strategy"].items()}
        self.finest = int(st.get("c2f_finest", COARSEST))  # checkpoints before it: no floor
        self.sh_reached = int(st.get("sh_reached", 0))
        self.strategy.load_meta_state(st.get("strategy_meta", {}))  # before it: counted from here
        if not self._drawing:  # a resume continues the saved draws; a rollback goes on to new batches
            self.gen.set_state(st["gen"].cpu())
            self.perm, self.pos = st["perm"].cpu(), int(st["pos"])

    def finite(self) -> bool:
        return all_finite(self.params.values())

    def speed_factor(self) -> float:
        """``default``'s first plan: mean speed over the rest of the run relative to the warm-up's.
        The model grows (x0.6) and, coarse to fine, later stages have more pixels (time ~
        pixels^PIXEL_EXP; the warm-up runs at 1/4). Times add up over the stages, so the mean speed is
        their harmonic mean weighted by the stages' shares of the steps. ``plan=once`` keeps the plan
        before issue 26 as it was: pixels^0.7 and the arithmetic mean."""
        c, f = self.cfg, 0.6
        if self._c2f():
            half, full = c.c2f_full - c.c2f_half, 1 - c.c2f_full
            if c.plan == "once":
                return f * (c.c2f_half + half * 0.25**0.7 + full * 0.0625**0.7)
            f /= c.c2f_half + half / 0.25**PIXEL_EXP + full / 0.0625**PIXEL_EXP
        return f

    def steps_in(self, steps: float, timed_from: int) -> int:
        """How many steps the time left holds (``steps`` of those timed from step ``timed_from``).

        Each step ahead is predicted (:mod:`gausslift.fit.plan`): its count from the strategy's
        :meth:`counts_ahead` under the schedule a run of that length gets (``mcmc``/``budget``: their
        growth rules; ``default``: the count's growth over the timed steps, extrapolated to the end of
        refinement), its level from the coarse-to-fine stages; the timed steps' own counts and levels
        were recorded. ``default``'s first plan has seen no growth yet: ``steps x`` :meth:`speed_factor`."""
        if self.cfg.plan == "once" or (self.cfg.strategy.kind not in GROWING and not self.total):
            return int(steps * self.speed_factor())
        c, cap = self.cfg, self.cfg.strategy.cap
        step = self.loop.step if self.loop is not None else 0
        n = len(self.params["means"])
        now = float(step_cost(n, self._level(step), cap))
        i = max(0, timed_from - self._timed_from)
        counts = self._counts[i:]
        ref = float(step_cost(counts, self._levels[i:], cap).mean()) if counts else now
        growth = (n / counts[0]) ** (1.0 / (step - timed_from)) if counts and step > timed_from else 1.0

        def cost_of(r: int) -> float:
            total = step + r
            ahead = self.strategy.counts_ahead(n, step, total, c.schedule_ref_iters, growth=growth)
            levels = stage_levels(step, total, c.c2f_half, c.c2f_full, self.finest) if self._c2f() else 1
            return float(step_cost(ahead, levels, cap).sum())

        return steps_within(steps, ref, cost_of, now)

    # -- batch, loss, update --------------------------------------------------------------------------
    def _next_view(self) -> int:
        if self.pos >= len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.data), generator=self.gen, device="cpu"), 0
        i = int(self.perm[self.pos])
        self.pos += 1
        return i

    def _c2f(self) -> bool:
        h, w = self.data[0].image.shape[:2]
        return self.cfg.c2f_min_size > 0 and min(h, w) >= self.cfg.c2f_min_size

    def _level(self, step: int) -> int:
        """Coarse to fine: the downscale factor of the training images at ``step`` (of the planned
        total; the coarsest before a minutes budget is planned), never coarser than a level already
        trained at (a re-plan that lengthens the run moves the stage boundaries past the step, and
        would otherwise send the fit back to a coarser level)."""
        if not self._c2f():
            return 1
        done = step / self.total if self.total else 0.0
        level = 1 if done >= self.cfg.c2f_full else 2 if done >= self.cfg.c2f_half else COARSEST
        return min(level, self.finest)

    def _views(self, level: int) -> list:
        """The training views at 1/level resolution on self.device (uploaded once per level)."""
        if level not in self.levels:
            self.levels[level] = [on_device(downscaled(d, level), self.device) for d in self.data]
        return self.levels[level]

    def _sh(self, step: int) -> int:
        """The SH degree at ``step`` (one more every ``sh_interval`` steps), never below a degree already
        trained at (a re-plan that lengthens the run lengthens the interval)."""
        return max(min(step // self.sh_interval, self.cfg.sh_degree), self.sh_reached) if self.total else 0

    def _lr_means(self, step: int) -> float:
        return means_lr(self.cfg, self.extent, self.progress(step))

    def loss(self, step: int) -> tuple[torch.Tensor, dict]:
        self._drawing = True
        level = self._level(step)
        self.finest = min(self.finest, level)
        if not self._counts:
            self._timed_from = step
        self._counts.append(len(self.params["means"]))
        self._levels.append(level)
        cfg, v = self.cfg, self._views(level)[self._next_view()]
        bg = self.bg
        if cfg.random_background and v.mask is not None:  # drawn on the CPU: the same on every device
            bg = torch.rand(3, generator=self.gen, device="cpu").to(self.device, non_blocking=True)
        sh = self.sh_reached = self._sh(step)
        h, w = v.image.shape[:2]
        renders, alphas, meta = render_params(
            self.params, v.viewmat[None], v.K[None], w, h, sh, bg, cfg.backend
        )
        mask = pixels(v.mask)
        gt = composite(pixels(v.image), mask, bg)
        loss, parts = compute_loss(cfg, renders[0], alphas[0], gt, mask, self.params, self.perceptual)
        for k, term in self.strategy.regularizer(self.params).items():  # e.g. MCMC's penalties
            loss = loss + term
            parts[f"strategy_{k}"] = term.detach()
        info = dict(meta, width=w, height=h, n_cameras=1)
        self.strategy.step_pre_backward(self.params, self.optimizers, self.sstate, step, info)
        self._batch = (renders[0].detach(), gt, info, sh)
        return loss, parts  # parts: detached device tensors, read back only when logged

    def update(self, loss: torch.Tensor, step: int, lr_scale: float) -> dict:
        render, gt, info, sh = self._batch
        self._batch = None
        lrs = base_lrs(self.cfg, self.extent) | {"means": self._lr_means(step)}
        for k, o in self.optimizers.items():
            set_lr(o, lrs[k] * lr_scale)
        loss.backward()
        if self.selective:  # only the Gaussians this view saw move (SelectiveAdam)
            rows = visible_rows(info["radii"])
            for o in self.optimizers.values():
                o.visible = rows
        for o in self.optimizers.values():
            o.step()
            o.zero_grad(set_to_none=True)
        edits = self.strategy.step_post_backward(self.params, self.optimizers, self.sstate, step, info)
        mse = ((render - gt) ** 2).mean()
        return {
            "psnr": -10 * torch.log10(mse.clamp_min(1e-10)),  # a device tensor: read back when logged
            "num_gaussians": len(self.params["means"]),
            "sh_degree": sh,
            "lr_means": lrs["means"] * lr_scale,
            **edits,
        }

    # -- exports --------------------------------------------------------------------------------------
    def save_outputs(self) -> None:
        save_splats(self.params, self.out / PLY)
        step = self.loop.step if self.loop is not None else 0
        n = len(self.params["means"])
        write_info(self.out, self.run_info | {"finished": False, "iters": step, "num_gaussians": n})

    def finish(self, result: dict) -> dict:
        summary = {
            "finished": True,
            "iters": result["steps"],
            "planned_iters": result["planned_steps"],
            "stopped_by": result["stopped_by"],
            "train_seconds": result["seconds"],
            "num_gaussians": len(self.params["means"]),
            "nan_rollbacks": result["rollbacks"],
            "nan_skipped_steps": result["nonfinite_skipped"],
            "device": result["device"],
            "events": result["events"],
        }
        write_info(self.out, self.run_info | summary)
        return result | summary
