"""``finetune``: runs the fine-tuning task that ``FinetuneConfig.style_model`` names (``field``: the
offset field of :mod:`gausslift.stylize.finetune`; ``jacobian``: per-triangle Jacobians and a Poisson
solve, :mod:`gausslift.stylize.finetune_jacobian`) on the one training loop."""

from __future__ import annotations

from gausslift.errors import InputError
from gausslift.stylize.finetune import FinetuneConfig, FinetuneTask
from gausslift.stylize.finetune_jacobian import JacobianTask
from gausslift.train.loop import Loop, LoopOptions


def finetune(cfg: FinetuneConfig, base: dict, subject, neutral, styled, out, opts: LoopOptions) -> dict:
    tasks = {"field": FinetuneTask, "jacobian": JacobianTask}
    if cfg.style_model not in tasks:
        raise InputError(None, f"style_model must be 'field' or 'jacobian', got {cfg.style_model!r}")
    task = tasks[cfg.style_model](cfg, base, subject, neutral, styled, out)
    return Loop(task, out, opts).run()
