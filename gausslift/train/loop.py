"""The one training loop. A trainer is a :class:`Task` (its model, batch and loss); the loop owns the rest.

    class MyTask(Task):
        name, columns, shape_keys = "mytrainer", ("step", "loss"), ("model.width",)
        def config(self): return self.cfg                     # a dataclass (or dict): RUN/config.yaml
        def start(self): ...                                  # fresh weights, optimiser, generators
        def state_dict(self): return {"model": ..., "optim": ..., "gen": ...}   # named state
        def load_state_dict(self, state): ...
        def loss(self, step): return loss, {"l1": l1}         # forward only
        def update(self, loss, step, lr_scale): ...; return {"grad_norm": g}   # backward + step

    result = Loop(task, RUN, LoopOptions(iters=1000 or minutes=10, resume=False)).run()

What the loop gives every trainer:

* **Budget.** ``iters`` steps, or ``minutes`` of wall clock: the loop times the first steps (after
  ``warmup_seconds``, JIT steps left out), plans the step count once from the median step time and the
  task's :meth:`Task.speed_factor`, calls :meth:`Task.plan` and keeps that count, so every schedule is a
  function of the step alone, not of the machine's load. A trainer may ask for re-plans at fractions of
  the planned steps (``replan_at``): where the step time since the plan differs enough (the load fell
  or rose) the count is planned again and :meth:`Task.plan` called with it. The budget is still a
  promise: a run whose time is spent stops there (``stopped_by: "time"``). The plan, the re-plans done
  and the time spent survive a resume.
* **Run folder.** A fresh run refuses a non-empty ``RUN`` (one line: add ``--resume`` or choose another
  ``--out``). ``resume`` continues from ``RUN/checkpoint.pt`` and refuses, before writing anything, a
  config that differs from the saved one in a key of :attr:`Task.shape_keys` (keys that change the
  shapes of the saved state). Other keys may change; ``config.yaml`` is rewritten only after the state
  has loaded.
* **Checkpoints**, atomic and device-independent, with named state: ``{"format", "task", "step",
  "total", "config", "loop": {...}, "state": task.state_dict()}`` at step 0, every ``checkpoint_every``
  steps / ``checkpoint_minutes`` (at least 6 times in a budgeted run), on Ctrl-C and at the end; the
  task's exports (:meth:`Task.save_outputs`) are written with each one.
* **Logs**: ``RunLog`` (``log.jsonl``, ``log.csv``, TensorBoard) with the rows after the resumed step
  dropped first, so a resumed run has no duplicated lines; a progress bar unless ``quiet``.
* **Non-finite guard.** A non-finite loss (on any rank) skips the step everywhere and is logged;
  ``max_nonfinite`` in a row roll back to the last good state (an in-memory snapshot taken every
  ``snapshot_every`` steps when the task's parameters are finite, else the last checkpoint) and scale
  the learning rate by ``nan_lr_factor`` (handed to :meth:`Task.update` as ``lr_scale``). The step count
  goes on, so the batches that follow are new. For tests, ``GAUSSLIFT_FAULT_NAN=k`` makes the loss
  non-finite at steps k .. k + max_nonfinite - 1 (the rollback path, end to end).
* **Device, threads, torchrun**: ``task.dist`` (:mod:`gausslift.train.dist`) is set before
  :meth:`Task.start`; rank 0 writes, collectives use device tensors, all ranks stop at the same step.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gausslift.errors import GaussliftError, InputError
from gausslift.ioutil import atomic_write_text
from gausslift.progress import progress
from gausslift.train.budget import Budget
from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, to_cpu
from gausslift.train.dist import Dist
from gausslift.train.guard import NonFiniteGuard
from gausslift.train.runlog import RunLog
from gausslift.train.task import REPLAN_AT, LoopOptions, Task, config_dict, shape_changes

__all__ = ["CHECKPOINT", "CONFIG", "FAULT_ENV", "FORMAT", "REPLAN_AT", "Loop", "LoopOptions", "Task",
           "config_dict", "shape_changes"]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
FORMAT = "gausslift-run"
FAULT_ENV = "GAUSSLIFT_FAULT_NAN"

class Loop:
    def __init__(self, task: Task, out: str | Path, opts: LoopOptions, dist: Dist | None = None):
        self.task, self.out, self.opts = task, Path(out), opts
        self.dist = dist or Dist()
        task.dist, task.loop = self.dist, self
        self.step, self.total = 0, 0  # total 0: not planned yet
        self.lr_scale, self.rollbacks, self.events = 1.0, 0, []
        self.replans, self._planned_at = 0, 0  # re-plan points passed; index in ``times`` of the last plan
        self.anchor = (0, 0.0)  # (step, fraction done) where the current plan took over: see progress()
        self.budget = Budget(minutes=opts.minutes, steps=0)
        self.guard = NonFiniteGuard(opts.max_nonfinite)
        self.good: dict | None = None
        self._stop = False
        fault = os.environ.get(FAULT_ENV, "")
        self.fault = int(fault) if fault.strip().isdigit() else -1

    # -- the run folder ----------------------------------------------------------------------------------
    def _open(self) -> bool:
        """Check the folder, then load or start the state; True when resuming."""
        out, o = self.out, self.opts
        if o.iters < 0 or o.minutes < 0:
            raise InputError(None, f"a training length cannot be negative (--iters {o.iters}, --minutes "
                                   f"{o.minutes:g})")  # fmt: skip
        if o.iters <= 0 and o.minutes <= 0:
            raise InputError(None, "give a training length: --iters N and/or --minutes M")
        ckpt = out / CHECKPOINT
        if not o.resume:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise InputError(
                    out, "is not empty: add --resume to continue the run there, or choose another --out"
                )
            self.dist.barrier()  # every rank has looked before rank 0 writes (else a late one sees its files)
            self.task.start()
            self._plan(o.iters)  # 0 with a minutes budget alone: planned after the warm-up
            return False
        if not ckpt.is_file():
            raise InputError(out, f"nothing to resume (no {CHECKPOINT})")
        state = load_checkpoint(ckpt)
        if (
            not isinstance(state, dict)
            or state.get("format") != FORMAT
            or state.get("task") != self.task.name
        ):
            raise InputError(ckpt, f"not a checkpoint of this trainer ({self.task.name})")
        new = config_dict(self.task.config())
        changed = shape_changes(state["config"], new, self.task.shape_keys)
        if changed:
            raise InputError(
                out,
                f"cannot resume with a changed {', '.join(changed)}: these change the "
                "saved state's shapes; start a new run (another --out)",
            )
        self.task.start()
        self.task.load_state_dict(state["state"])
        lp = state["loop"]
        self.step, self.lr_scale, self.rollbacks = (
            int(state["step"]),
            float(lp["lr_scale"]),
            int(lp["rollbacks"]),
        )
        self.events = list(lp["events"])
        self.replans = int(lp.get("replans", 0))
        self.anchor = tuple(lp.get("anchor", (0, 0.0)))  # checkpoints before it: step / total
        self.budget.restore(lp["budget"])
        self.guard.restore(lp["guard"])
        set_rng_state(lp["rng"])
        total = int(state["total"])
        if o.iters > 0 and o.iters != total and (o.minutes <= 0 or total == 0):  # resumed with a new length
            total = o.iters
        if total:
            self._plan(total)
        return True

    def _write_config(self) -> None:
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(config_dict(self.task.config()), sort_keys=False)
            atomic_write_text(self.out / CONFIG, text)

    def _plan(self, total: int) -> None:
        if total > 0:
            self.total = int(total)
            self.task.plan(self.total)

    def progress(self, step: int) -> float:
        """The run's fraction done at ``step``, in [0, 1]: step / total, except that a re-plan re-anchors
        it where it stood, so that a schedule of it (a learning-rate decay) goes on from there to its end
        at the new total instead of jumping. 0 before the first plan."""
        if not self.total:
            return 0.0
        s0, t0 = self.anchor
        return min(max(t0 + (1.0 - t0) * (step - s0) / max(self.total - s0, 1), 0.0), 1.0)

    # -- checkpoints and rollback ------------------------------------------------------------------------
    def _loop_state(self) -> dict:
        return {
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "events": self.events,
            "replans": self.replans,
            "anchor": list(self.anchor),
            "budget": self.budget.state(),
            "guard": self.guard.state(),
            "rng": rng_state(),
        }

    def checkpoint(self) -> None:
        if self.dist.main:
            data = {
                "format": FORMAT,
                "task": self.task.name,
                "step": self.step,
                "total": self.total,
                "config": config_dict(self.task.config()),
                "loop": self._loop_state(),
                "state": self.task.state_dict(),
            }
            save_checkpoint(self.out / CHECKPOINT, data)
            self.task.save_outputs()
        self.dist.barrier()
        self._saved_at, self._saved_t = self.step, time.perf_counter()

    def _snapshot(self) -> None:
        if self.opts.snapshot_every > 0 and self.task.finite():
            self.good = copy.deepcopy(to_cpu(self.task.state_dict()))

    def _rollback(self, log: RunLog | None) -> None:
        self.rollbacks += 1
        if self.rollbacks > self.opts.max_rollbacks:
            raise GaussliftError(
                f"training diverged: the loss stays non-finite after {self.opts.max_rollbacks} "
                "rollbacks with lower learning rates (lower the learning rate?)"
            )
        good = self.good if self.good is not None else load_checkpoint(self.out / CHECKPOINT)["state"]
        self.task.load_state_dict(copy.deepcopy(good))
        self.lr_scale *= self.opts.nan_lr_factor
        self.guard.reset()
        msg = (
            f"non-finite loss {self.opts.max_nonfinite} steps in a row at step {self.step}: rolled back, "
            f"learning rate x{self.lr_scale:g}"
        )
        self.events.append(msg)
        if log is not None:
            log.write({"step": self.step + 1, "rollback": 1, "lr_scale": self.lr_scale})

    # -- time planning -----------------------------------------------------------------------------------
    def _reserve(self) -> float:
        return min(10.0, 0.03 * self.budget.seconds)

    def _time_up(self) -> bool:
        return self.opts.minutes > 0 and self.budget.left() <= self._reserve()

    def _plan_ready(self, times: list[float]) -> bool:
        """Budgeted runs without a step count: whether the warm-up has been timed (this rank's clock)."""
        if self.total or len(times) < 13:
            return False
        span = min(self.opts.warmup_seconds, 0.1 * self.budget.seconds)
        return times[-1] - times[2] >= span

    def _steps_for(self, dt: float, timed_from: int) -> int:
        """The run's step count when the time left would go at ``dt`` seconds a step, the median of steps
        ``timed_from`` up to now (the task's :meth:`Task.steps_in` says how many steps that time holds);
        under torchrun every rank gets the same count, the smallest."""
        left = max(self.budget.left() - self._reserve(), 0.0)
        total = torch.tensor(
            float(self.step + max(1, self.task.steps_in(left / max(dt, 1e-9), timed_from))),
            device=self.dist.device,
        )
        if self.dist.world > 1:
            self.dist.all_reduce(total, torch.distributed.ReduceOp.MIN)
        return int(total.item())

    def _timed_step(self, times: list[float], first: int) -> int:
        """The first step whose duration ``np.diff(times[first:])`` holds (``times[i]``: the clock after
        the ``i``-th step this process ran)."""
        return self.step - len(times) + first + 1

    def _maybe_plan(self, times: list[float], ready: bool | None = None) -> None:
        """Plan the step count once the warm-up has been timed. Under torchrun every rank must call this
        at the same step: ``ready`` is then the ranks' joint decision (see :meth:`run`)."""
        if self.total or not (self._plan_ready(times) if ready is None else ready):
            return
        dt = float(np.median(np.diff(times[2:])))  # the first steps (JIT) left out
        self._plan(self._steps_for(dt, self._timed_step(times, 2)))
        self._planned_at = len(times)
        self.events.append(f"planned {self.total} steps from {dt:.3f} s per step")

    def _replan_due(self) -> bool:
        """Whether this step is a re-plan point (a function of the step and the plan: the same on every
        rank)."""
        o = self.opts
        if not (self.total and o.minutes > 0 and o.iters <= 0) or self.replans >= len(o.replan_at):
            return False
        return self.step >= max(1, int(o.replan_at[self.replans] * self.total))

    def _replan(self, times: list[float]) -> None:
        """Re-plan from the step time of the later half of the steps since the last plan (the task's
        :meth:`Task.steps_in` is told which steps those were; every rank calls this at the same step)."""
        self.replans += 1
        first = max(self._planned_at, 1)
        if len(times) - first < 5:  # resumed just before the point: too few steps timed here, keep the plan
            return
        if len(times) - first >= 12:
            first += (len(times) - first) // 2 - 1
        dt = float(np.median(np.diff(times[first:])))
        new_total = self._steps_for(dt, self._timed_step(times, first))
        self._planned_at = len(times)
        if abs(new_total - self.total) > 0.1 * (self.total - self.step):  # 10 % of the steps left
            self.events.append(f"re-planned {self.total} -> {new_total} steps at step {self.step} "
                               f"from {dt:.3f} s per step")  # fmt: skip
            self.anchor = (self.step, self.progress(self.step))
            self._plan(new_total)
            at = self.opts.replan_at
            while self.replans < len(at) and int(at[self.replans] * self.total) <= self.step:
                self.events.append(f"re-plan point {at[self.replans]:.0%} is behind the new plan: skipped")
                self.replans += 1
        else:
            self.events.append(f"kept the plan at step {self.step} ({new_total} steps from {dt:.3f} s "
                               "per step)")  # fmt: skip

    def _extend(self) -> bool:
        """Whether a budgeted run that has done its planned steps goes on (``LoopOptions.extend``)."""
        o = self.opts
        if not (o.extend and o.minutes > 0 and o.iters <= 0 and self.dist.world == 1) or self._time_up():
            return False
        if self.step == self.total:
            self.events.append(f"planned {self.total} steps done with {self.budget.left():.0f} s left: "
                               "going on at the schedules' end values")  # fmt: skip
        return True

    # -- the loop ----------------------------------------------------------------------------------------
    def _on_sigint(self, signum, frame) -> None:
        self._stop = True

    def _sigint(self):
        """Ctrl-C stops between steps (checkpoint first); left alone where SIGINT is ignored (nohup)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
            return None
        return signal.signal(signal.SIGINT, self._on_sigint)

    def run(self) -> dict:
        resumed = self._open()
        if not resumed:
            self._write_config()
        self._snapshot()
        main = self.dist.main
        log = (
            RunLog(self.out, self.task.columns, resume_step=self.step if resumed else None) if main else None
        )
        if resumed:
            self._write_config()  # the state loaded: the config it now runs with
        else:
            self.checkpoint()  # step 0: what a rollback before the first periodic checkpoint returns to
        self._saved_at, self._saved_t = self.step, time.perf_counter()
        o = self.opts
        every_s = o.checkpoint_minutes * 60 if o.checkpoint_minutes > 0 else math.inf
        if o.minutes > 0:
            every_s = min(every_s, o.minutes * 60 / 6)
        bar = progress(
            total=self.total or None, initial=self.step, desc=self.task.name, disable=o.quiet or not main
        )
        old = self._sigint()
        times: list[float] = []
        stopped_by = "steps"
        try:
            while not self.total or self.step < self.total or self._extend():
                if self._stop:
                    self.checkpoint()
                    raise KeyboardInterrupt
                loss, terms = self.task.loss(self.step)
                if 0 <= self.fault <= self.step < self.fault + o.max_nonfinite:
                    loss = loss * float("nan")
                # decisions that read a clock are made by every rank together (their clocks differ: a
                # checkpoint or a plan on one rank alone would pair its collective with another's)
                save_due = time.perf_counter() - self._saved_t >= every_s
                plan_due = self._plan_ready(times)
                finite = torch.isfinite(loss.detach()).all().float().to(self.dist.device)
                host = (0.0 if self._time_up() else 1.0, 0.0 if save_due else 1.0, 0.0 if plan_due else 1.0)
                if self.dist.world > 1:  # one collective: skip / stop / checkpoint / plan together
                    # (full_like fills on the device: no host-to-device copy, which would sync on CUDA)
                    flags = torch.stack([finite, *(torch.full_like(finite, v) for v in host)])
                    self.dist.all_reduce(flags, torch.distributed.ReduceOp.MIN)
                    vals = flags.tolist()  # the step's one host read
                else:
                    vals = [finite.item(), *host]  # the step's one host read
                ok, time_left = vals[0] > 0.5, vals[1] > 0.5
                save_due, plan_due = vals[2] < 0.5, vals[3] < 0.5
                self.guard.record(ok)
                if ok:
                    stats = self.task.update(loss, self.step, self.lr_scale)
                else:
                    self.events.append(f"non-finite loss at step {self.step}: step skipped")
                    if log is not None:
                        log.write({"step": self.step + 1, "nonfinite": 1, "skipped": self.guard.skipped})
                    if self.guard.rollback:
                        self._rollback(log)
                self.step += 1
                bar.update(1)
                times.append(time.perf_counter())
                if not self.total:
                    self._maybe_plan(times, plan_due)
                    if self.total:
                        bar.total = self.total
                elif self._replan_due():
                    self._replan(times)
                    bar.total = self.total
                if ok:
                    if o.snapshot_every > 0 and self.step % o.snapshot_every == 0:
                        if self.task.finite():
                            self._snapshot()
                        else:
                            self._rollback(log)
                    if log is not None and (self.step % o.log_every == 0 or self.step in (1, self.total)):
                        row = log.write(
                            {
                                "step": self.step,
                                self.task.time_key: round(self.budget.elapsed(), 3),
                                "loss": loss.detach(),
                                **terms,
                                **stats,
                            }
                        )
                        bar.set_postfix(loss=f"{row['loss']:.4f}")
                    self.task.after_step(self.step, log)
                if (o.checkpoint_every > 0 and self.step % o.checkpoint_every == 0) or save_due:
                    self.checkpoint()
                if not time_left:
                    stopped_by = "time"
                    self.events.append(f"time budget spent at step {self.step} of {self.total or '?'}")
                    break
            if not self.task.finite():  # non-finite parameters the loss did not show (e.g. an unseen
                self._rollback(log)  # Gaussian's): the run's result is the last good state, not them
                self._saved_at = -1
            if self.step > self._saved_at:
                self.checkpoint()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
            bar.close()
            if log is not None:
                log.close()
        result = {
            "steps": self.step,
            "planned_steps": self.total,
            "seconds": round(self.budget.elapsed(), 2),
            "stopped_by": stopped_by,
            "nonfinite_skipped": self.guard.skipped,
            "rollbacks": self.rollbacks,
            "device": str(self.dist.device),
            "world_size": self.dist.world,
            "events": list(self.events),
        }
        return self.task.finish(result)
