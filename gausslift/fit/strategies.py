"""``make_strategy``: the density-control strategy ``StrategyConfig.kind`` names (``default``:
:mod:`gausslift.fit.strategy`, ``mcmc``: :mod:`gausslift.fit.mcmc`, ``budget``:
:mod:`gausslift.fit.budget`)."""

from __future__ import annotations

from gausslift.errors import InputError
from gausslift.fit.budget import BudgetStrategy
from gausslift.fit.config import StrategyConfig
from gausslift.fit.mcmc import MCMCStrategy
from gausslift.fit.strategy import DefaultStrategy, Schedule

KINDS = {"default": DefaultStrategy, "mcmc": MCMCStrategy, "budget": BudgetStrategy}


def make_strategy(cfg: StrategyConfig, schedule: Schedule, scene_scale: float) -> DefaultStrategy:
    """The strategy ``cfg.kind`` names: default | mcmc | budget."""
    if cfg.kind not in KINDS:
        raise InputError(None, f"strategy.kind must be default, mcmc or budget, got '{cfg.kind}'")
    return KINDS[cfg.kind](cfg, schedule, scene_scale)
