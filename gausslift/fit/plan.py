"""The step-time model a budgeted fit plans its step count with (``--minutes``).

A fit step's time is modelled as proportional to ``count x pixels^PIXEL_EXP`` (plus a share
``FIXED_COST`` that does not scale with the count), where ``count`` is the number of Gaussians and
``pixels`` those of the coarse-to-fine level trained at. Measured 2026-12-07 (docs/fit_speed.md, "Fifth
session"): a fit step at 1/4, 1/2 and full resolution of FaceLift (512^2) and the statue (500^2), 30k and
60k Gaussians, 2 threads: time ~ pixels^0.21-0.50 (0.35 typical) and ~ count^0.85-1.2.

For the strategies whose count follows a schedule (``mcmc``, ``budget``), :func:`steps_within` finds
the step count whose predicted time fills the time left: the count each future step will have comes
from the strategy's own growth rule under the schedule planned for that length
(:meth:`~gausslift.fit.mcmc.MCMCStrategy.counts_ahead`), and the level from the coarse-to-fine stages.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FIXED_COST = 0.0  # share of a full model's step time that does not scale with the Gaussian count
PIXEL_EXP = 0.35  # a step's time ~ pixels^PIXEL_EXP
COARSEST = 4  # coarse to fine: the first stage's downscale factor (then 2, then 1)


def step_cost(counts, levels, cap: int) -> np.ndarray:
    """Relative step times for Gaussian ``counts`` at downscale ``levels`` (arrays or scalars; the
    unit is a step of ``cap`` Gaussians at full resolution)."""
    counts = np.asarray(counts, dtype=np.float64)
    pix = np.asarray(levels, dtype=np.float64) ** (-2.0 * PIXEL_EXP)  # pixels ~ (1/level)^2
    return (FIXED_COST + (1.0 - FIXED_COST) * counts / max(cap, 1)) * pix


def stage_levels(step: int, total: int, half: float, full: float, floor: int) -> np.ndarray:
    """Coarse to fine: the downscale factor of each step in ``[step, total)`` of a ``total``-step run
    (``COARSEST`` before ``half`` of it, 2 before ``full``, then 1), never coarser than ``floor``."""
    done = np.arange(step, max(total, step)) / max(total, 1)
    levels = np.where(done >= full, 1, np.where(done >= half, 2, COARSEST))
    return np.minimum(levels, floor)


def steps_within(steps: float, ref_cost: float, cost_of: Callable[[int], float], now_cost: float) -> int:
    """The number ``r`` of steps to come whose predicted time fills the time left.

    ``steps`` steps of the timed kind (each costing ``ref_cost``) fit in the time left;
    ``cost_of(r)`` is the summed cost of the next ``r`` steps when the run is planned ``r`` steps longer.
    No step ahead is cheaper than ``now_cost`` (counts do not fall, levels only get finer), which bounds
    the search. The result, at least 1, is an ``r`` found by bisection with ``cost_of(r) <= steps x
    ref_cost`` (never more than the time holds). ``cost_of`` is not strictly monotone (a longer plan
    rounds its schedule's events to other steps), so it need not be the largest such ``r``: it can
    leave a few tens of steps unused (under 1 %, estimated by reading the code)."""
    budget = steps * ref_cost
    hi = max(1, int(budget / max(now_cost, 1e-12)) + 1)
    lo = 1
    if cost_of(hi) <= budget:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost_of(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo
