"""What a trainer gives the loop and how a run is set up: :class:`Task` (the interface every trainer
implements: its model, batch and loss), :class:`LoopOptions` (budget, resume, checkpoint and log
intervals, the non-finite guard, re-plans) and the config helpers a resume checks shapes with. The loop
itself is :mod:`gausslift.train.loop`, which re-exports these names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from gausslift.train.dist import Dist
from gausslift.train.runlog import RunLog

REPLAN_AT = (0.25, 0.5)  # the re-plan points trainers with step-scheduled learning rates ask for


@dataclass
class LoopOptions:
    iters: int = 0  # step limit (0: none)
    minutes: float = 0.0  # wall-clock budget (0: none); plans the step count once when iters is 0
    resume: bool = False
    quiet: bool = False
    log_every: int = 50
    checkpoint_every: int = 0  # steps (0: by time only)
    checkpoint_minutes: float = 3.0  # (0: by steps only)
    snapshot_every: int = 0  # in-memory rollback state every N steps (0: roll back to the checkpoint)
    max_nonfinite: int = 3
    nan_lr_factor: float = 0.5
    max_rollbacks: int = 8
    warmup_seconds: float = 20.0
    # a minutes budget whose planned steps end early goes on at the schedules' end values (step >= total)
    # until the time is spent; the plan, and so every schedule, stays as it was (one process only)
    extend: bool = False
    # a minutes budget re-plans the step count when it reaches these fractions of its planned steps, from
    # the step time measured since the last plan, if the new count differs by more than 10% (a load that
    # fell or rose after the warm-up); schedules follow the new count from there on
    replan_at: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, cfg: Any, **kw) -> LoopOptions:
        """The options a trainer's config sets by the same names (``iters``, ``minutes``, ``log_every``,
        ``checkpoint_every``, ``checkpoint_minutes``, ``snapshot_every``, ``warmup_seconds``, ...; a
        ``minutes`` budget there overrides its ``iters``), then ``kw``."""
        own = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
        if own.get("minutes", 0) > 0:
            own["iters"] = 0
        return cls(**(own | kw))


class Task:
    """What a trainer gives the loop. Override the methods marked *required*."""

    name = "run"  # the checkpoint's task tag (a run of another trainer is refused on resume)
    columns: tuple[str, ...] = ("step", "loss")  # log.csv columns (log.jsonl keeps every key)
    shape_keys: tuple[str, ...] = ()  # dotted config keys that change the saved state's shapes
    time_key = "elapsed_s"  # the log's column for the run's seconds
    dist: Dist = Dist()
    loop: Any = None  # the gausslift.train.loop.Loop running this task (set by it)

    def progress(self, step: int) -> float:
        """The fraction of the run done at ``step`` for schedules: the loop's, continuous across
        re-plans; step / ``self.total`` without a loop, or while the task's own stand-in length is not
        the loop's plan (a budget's warm-up)."""
        total = getattr(self, "total", None)
        if self.loop is not None and (total is None or self.loop.total == total):
            return self.loop.progress(step)
        total = int(total or 0)
        return min(max(step / total, 0.0), 1.0) if total > 0 else 0.0

    def config(self) -> Any:  # required: a dataclass or a dict
        raise NotImplementedError

    def start(self) -> None:  # required: fresh state (seeded)
        raise NotImplementedError

    def state_dict(self) -> dict:  # required: named state (model, optimiser, generators, ...)
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:  # required
        raise NotImplementedError

    def loss(self, step: int) -> tuple[torch.Tensor, dict]:  # required: forward of one step
        raise NotImplementedError

    def update(self, loss: torch.Tensor, step: int, lr_scale: float) -> dict:  # required
        raise NotImplementedError

    def plan(self, total: int) -> None:
        """The run's length is known (set once; schedules follow it)."""

    def speed_factor(self) -> float:
        """Mean speed over the rest of the run relative to the steps just timed: the warm-up's for the plan,
        those since the last plan for a re-plan (e.g. < 1 when the model grows)."""
        return 1.0

    def steps_in(self, steps: float, timed_from: int) -> int:
        """How many steps the time left holds when it holds ``steps`` steps of the kind just timed (steps
        ``timed_from`` up to the loop's step): ``steps x speed_factor()`` unless a task predicts its
        steps' times itself."""
        return int(steps * self.speed_factor())

    def finite(self) -> bool:
        """Whether the parameters are finite (checked before a snapshot becomes the rollback state)."""
        return True

    def after_step(self, step: int, log: RunLog | None) -> None:
        """Periodic extras after step ``step`` (validation, images); ``log`` on rank 0 only."""

    def save_outputs(self) -> None:
        """Exports written with every checkpoint, on rank 0 (e.g. splats.ply, pipeline/)."""

    def finish(self, result: dict) -> dict:
        """After the last step and checkpoint; returns the run's result."""
        return result


def config_dict(cfg: Any) -> dict:
    if dataclasses.is_dataclass(cfg):
        from gausslift.config import to_dict

        return to_dict(cfg)
    return dict(cfg)


def _get(d: dict, key: str):
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def shape_changes(saved: dict, new: dict, keys) -> list[str]:
    """``key (old -> new)`` for every shape key whose value differs."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return [
        f"{k} ({_get(saved, k)!r} -> {_get(new, k)!r})"
        for k in keys
        if norm(_get(saved, k)) != norm(_get(new, k))
    ]
