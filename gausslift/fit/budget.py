"""Budgeted, score-based densification (after Taming 3DGS, Mallick et al. 2024).

The default strategy's clone / split / prune, with the growth decided by a count schedule instead of
a gradient threshold: at each refinement the count may rise to

    target = n0 + (cap_max - n0) * t^budget_curve,  t = (step - refine_start) / (refine_stop - refine_start)

(n0: the count at the first refinement), and the Gaussians with the highest mean 2D gradient (the
score; Taming's richer score needs per-pixel statistics our rasteriser does not return) are cloned
(small) or split (large) to reach it. The count therefore grows steadily instead of early, keeping the
early steps cheap, and never exceeds ``min(cap_max, max_gaussians)``. Pruning and opacity resets are
the default's (a prune never removes every Gaussian).
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.fit.strategy import DefaultStrategy, Schedule, counts_after, refine_steps


def count_target(step: int, sch: Schedule, n0: int, cap: int, curve: float) -> int:
    """The count schedule at ``step``: n0 + (cap - n0) t^curve over the refine span."""
    t = (step - sch.refine_start) / max(1, sch.refine_stop - sch.refine_start)
    return int(n0 + (cap - n0) * min(max(t, 0.0), 1.0) ** curve)


class BudgetStrategy(DefaultStrategy):
    n0: int | None = None

    def meta_state(self) -> dict:
        return super().meta_state() | {"n0": self.n0}

    def load_meta_state(self, st: dict) -> None:
        super().load_meta_state(st)
        self.n0 = None if st.get("n0") is None else int(st["n0"])

    def _target(self, step: int, n: int) -> int:
        if self.n0 is None:  # the count at the first refinement
            self.n0 = min(n, self.cfg.cap)
        return count_target(step, self.schedule, self.n0, self.cfg.cap, self.cfg.budget_curve)

    def counts_ahead(self, n: int, step: int, total: int, ref_iters: int, growth: float = 1.0) -> np.ndarray:
        """The count of each step in ``[step, total)``: the count schedule (planned for ``total`` steps)
        at each refinement, an upper bound (growth needs seen candidates; pruning removes some;
        ``growth`` is not needed)."""
        sch, cap, curve = self.plan_schedule(total, ref_iters), self.cfg.cap, self.cfg.budget_curve
        n0 = self.n0 if self.n0 is not None else min(n, cap)
        return counts_after(n, step, total, refine_steps(sch, step, total),
                            lambda k, e: max(k, min(cap, count_target(e, sch, n0, cap, curve))))  # fmt: skip

    def _grow(self, params, optimizers, state, step: int = 0) -> tuple[int, int]:
        cfg = self.cfg
        n = len(params["means"])
        score = state["grad2d"] / state["count"].clamp_min(1) * self._grow_weights(state)
        room = min(self._target(step, n), cfg.cap) - n
        seen = state["count"] > 0
        k = min(room, int(seen.sum()))
        if k <= 0:
            return 0, 0
        pick = torch.zeros(n, dtype=torch.bool, device=score.device)
        pick[torch.topk(torch.where(seen, score, -1.0), k).indices] = True
        small = self._world_scales(params, state).max(-1).values <= cfg.grow_scale3d * self.scene_scale
        return self.grow_selected(params, optimizers, state, pick & small, pick & ~small)
