"""Adaptive density control with gsplat ``DefaultStrategy`` semantics, as an object with hooks.

The trainer calls ``step_pre_backward`` (keeps the 2D-mean gradients) and ``step_post_backward``
(accumulates them; every ``refine_every`` steps clones small / splits large Gaussians whose mean 2D
gradient is high, prunes transparent and over-large ones; periodically resets opacities). Every edit
changes the parameters, their Adam moments and the strategy's own per-Gaussian state together.
Gradients are in gsplat's normalised units: pixel gradients times (image size / 2) times cameras.

Device: the state lives on the parameters' device; the per-step statistics are dense tensor ops (no
host sync); only the refinement steps (every ``refine_every``) read counts back to the host. Random
split offsets are drawn on the CPU from torch's global generator and moved, so a run draws the same
numbers on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gausslift.fit.config import StrategyConfig
from gausslift.fit.optim import edit_rows


@dataclass
class Schedule:
    """Densification iterations for one run (already scaled to its length)."""

    refine_start: int
    refine_stop: int
    refine_every: int
    reset_every: int


def refine_steps(sch: Schedule, lo: int, hi: int) -> range:
    """The refinement steps in ``[lo, hi)``: ``refine_start < step < refine_stop``, multiples of
    ``refine_every`` (where ``step_post_backward`` grows and prunes)."""
    every = max(1, sch.refine_every)
    first = max(lo, sch.refine_start + 1)
    return range(-(-first // every) * every, min(hi, sch.refine_stop), every)


def counts_after(n: int, step: int, total: int, events, grow) -> np.ndarray:
    """The count of each step in ``[step, total)`` when the count ``n`` becomes ``grow(n, e)`` after each
    refinement step ``e`` of ``events`` (ascending, inside the span)."""
    values, bounds = [n], [step]
    for e in events:
        n = grow(n, e)
        values.append(n)
        bounds.append(e + 1)
    bounds.append(max(total, step))
    lengths = np.diff(np.minimum(np.asarray(bounds), max(total, step)))
    return np.repeat(np.asarray(values, dtype=np.int64), lengths)


def scaled_schedule(cfg: StrategyConfig, total: int, ref_iters: int) -> Schedule:
    s = total / ref_iters
    every = max(cfg.min_refine_every, round(cfg.refine_every * s))
    stop = max(1, round(cfg.refine_stop_iter * s))
    reset = max(every * 5, round(cfg.reset_every * s))
    if cfg.max_resets >= 0:  # at most max_resets resets before refine_stop
        reset = max(reset, -(-stop // (cfg.max_resets + 1)))
    return Schedule(max(every, round(cfg.refine_start_iter * s)), stop, every, reset)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))  # fmt: skip


class DefaultStrategy:
    def __init__(self, cfg: StrategyConfig, schedule: Schedule, scene_scale: float):
        self.cfg = cfg
        self.schedule = schedule
        self.scene_scale = float(scene_scale)
        self.resets = 0  # opacity resets done: at most cfg.max_resets, whatever re-plans do to the interval

    def meta_state(self) -> dict:
        """The strategy's own counters (saved with the run; tensors per Gaussian are the trainer's)."""
        return {"resets": self.resets}

    def load_meta_state(self, st: dict) -> None:
        self.resets = int(st.get("resets", 0))

    def plan_schedule(self, total: int, ref_iters: int) -> Schedule:
        """This strategy's schedule for a run of ``total`` steps."""
        return scaled_schedule(self.cfg, total, ref_iters)

    def counts_ahead(self, n: int, step: int, total: int, ref_iters: int, growth: float = 1.0) -> np.ndarray:
        """The predicted count of each step in ``[step, total)`` of a ``total``-step run, from ``n`` now.

        Growth by gradient thresholds has no rule to follow: it is extrapolated at ``growth``, the count's
        observed factor per step (at least 1), until the refinement span planned for ``total`` steps
        ends, under ``max_gaussians`` (``mcmc`` and ``budget`` follow their own rules instead)."""
        stop = self.plan_schedule(total, ref_iters).refine_stop
        ahead = np.clip(np.minimum(np.arange(step, max(total, step)), stop) - step, 0, None)
        grown = n * np.exp(np.minimum(ahead * np.log(max(growth, 1.0)), 50.0))
        return np.minimum(grown, max(n, self.cfg.max_gaussians)).astype(np.int64)

    def regularizer(self, params) -> dict:
        """Loss terms the strategy needs (none here; MCMC's opacity and scale penalties)."""
        return {}

    def initialize_state(self, n: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {"grad2d": torch.zeros(n, device=device), "count": torch.zeros(n, device=device)}

    # -- hooks --------------------------------------------------------------------------------------
    def step_pre_backward(self, params, optimizers, state, step: int, info: dict) -> None:
        if step < self.schedule.refine_stop and info["means2d"].requires_grad:
            info["means2d"].retain_grad()

    def step_post_backward(self, params, optimizers, state, step: int, info: dict) -> dict:
        sch, out = self.schedule, {}
        if step >= sch.refine_stop:
            return out
        self._update_state(state, info)
        if step > sch.refine_start and step % sch.refine_every == 0:
            out["dupli"], out["split"] = self._grow(params, optimizers, state, step)
            out["prune"] = self._prune(params, optimizers, state, step)
            state["grad2d"].zero_()
            state["count"].zero_()
        room = self.cfg.max_resets < 0 or self.resets < self.cfg.max_resets
        if step > 0 and step % sch.reset_every == 0 and room:
            self.reset_opacities(params, optimizers, value=self.cfg.prune_opa * 2.0)
            self.resets += 1
            out["reset"] = 1
        return out

    # -- statistics ---------------------------------------------------------------------------------
    def _update_state(self, state, info) -> None:
        g = info["means2d"].grad
        if g is None:
            return
        g = g.detach().clone()
        ncam = g.shape[0] if g.dim() == 3 else 1
        g[..., 0] *= info["width"] / 2.0 * ncam
        g[..., 1] *= info["height"] / 2.0 * ncam
        radii = info["radii"]
        visible = (radii > 0).all(-1) if radii.dim() == g.dim() else radii > 0
        if g.dim() == 2:
            g, visible = g[None], visible.reshape(1, -1)
        # dense sums over cameras (adding exact zeros for culled Gaussians): no data-dependent shapes,
        # so no host sync; the same numbers as an index_add over the visible ones
        vis = visible.to(device=state["grad2d"].device, dtype=state["grad2d"].dtype)
        norms = g.norm(dim=-1).to(vis)
        state["grad2d"].add_((norms * vis).sum(0))
        state["count"].add_(vis.sum(0).to(state["count"].dtype))

    # -- growth and pruning -------------------------------------------------------------------------
    def _grow_weights(self, state) -> torch.Tensor | float:
        """Per-Gaussian weight of the growth gradient (1 here; region-adaptive strategies override)."""
        return 1.0

    def _world_scales(self, params, state) -> torch.Tensor:
        """Linear world scales [N,3] the size tests read (rigged strategies override)."""
        return params["scales"].detach().exp()

    def _grow(self, params, optimizers, state, step: int = 0) -> tuple[int, int]:
        cfg = self.cfg
        # the growth score: mean 2D gradient, weighted per Gaussian (1 here; regions in rigged strategies)
        score = state["grad2d"] / state["count"].clamp_min(1) * self._grow_weights(state)
        high = score > cfg.grow_grad2d
        small = self._world_scales(params, state).max(-1).values <= cfg.grow_scale3d * self.scene_scale
        n = len(score)
        room = cfg.max_gaussians - n
        if room <= 0:
            return 0, 0
        dupli, split = high & small, high & ~small
        # under the cap, keep the candidates with the highest gradients (a split adds one net)
        want = int(dupli.sum() + split.sum())
        if want > room:
            score = torch.where(high, score, -1.0)
            thresh = torch.topk(score, room).values[-1]
            dupli &= score >= thresh
            split &= score >= thresh
        return self.grow_selected(params, optimizers, state, dupli, split)

    def grow_selected(self, params, optimizers, state, dupli: torch.Tensor,
                      split: torch.Tensor) -> tuple[int, int]:  # fmt: skip
        """Duplicate the ``dupli`` rows, then split the ``split`` rows (masks over the rows before)."""
        n_dupli = int(dupli.sum())
        if n_dupli:
            self.duplicate(params, optimizers, state, dupli)
        split = torch.cat([split, split.new_zeros(n_dupli)])
        n_split = int(split.sum())
        if n_split:
            self.split(params, optimizers, state, split)
        return n_dupli, n_split

    def _prune(self, params, optimizers, state, step: int) -> int:
        prune = torch.sigmoid(params["opacities"].detach().flatten()) < self.cfg.prune_opa
        if step > self.schedule.reset_every:
            big = params["scales"].detach().exp().max(-1).values > self.cfg.prune_scale3d * self.scene_scale
            prune |= big
        if prune.all():  # never prune to nothing
            prune[torch.argmax(params["opacities"].detach().flatten())] = False
        n = int(prune.sum())
        if n:
            self.remove(params, optimizers, state, prune)
        return n

    # -- edits (parameters, Adam moments, strategy state) --------------------------------------------
    @staticmethod
    def duplicate(params, optimizers, state, mask: torch.Tensor) -> None:
        idx = torch.where(mask)[0]
        edit_rows(
            params,
            optimizers,
            lambda _n, p: torch.cat([p, p[idx]]),
            lambda _k, v: torch.cat([v, v.new_zeros((len(idx),) + v.shape[1:])]),
        )
        for k, v in state.items():
            state[k] = torch.cat([v, v[idx]])

    def split(self, params, optimizers, state, mask: torch.Tensor) -> None:
        sel, rest = torch.where(mask)[0], torch.where(~mask)[0]
        scales = params["scales"].detach()[sel].exp()
        rot = quat_to_rotmat(params["quats"].detach()[sel])
        noise = torch.randn(2, len(sel), 3, device="cpu").to(scales.device)  # the same draw on any device
        samples = torch.einsum("nij,nj,bnj->bni", rot, scales, noise)
        revised = self.cfg.revised_opacity

        def new_rows(name: str, p: torch.Tensor) -> torch.Tensor:
            if name == "means":
                return (p[sel] + samples).reshape(-1, 3)
            if name == "scales":
                return torch.log(scales / 1.6).repeat(2, 1)
            if name == "opacities" and revised:
                o = torch.sigmoid(p[sel])
                return torch.logit(1 - torch.sqrt(1 - o), eps=1e-6).repeat((2,) + (1,) * (p.dim() - 1))
            return p[sel].repeat((2,) + (1,) * (p.dim() - 1))

        edit_rows(
            params,
            optimizers,
            lambda n, p: torch.cat([p[rest], new_rows(n, p)]),
            lambda _k, v: torch.cat([v[rest], v.new_zeros((2 * len(sel),) + v.shape[1:])]),
        )
        for k, v in state.items():
            state[k] = torch.cat([v[rest], v[sel].repeat((2,) + (1,) * (v.dim() - 1))])

    @staticmethod
    def remove(params, optimizers, state, mask: torch.Tensor) -> None:
        keep = torch.where(~mask)[0]
        edit_rows(params, optimizers, lambda _n, p: p[keep], lambda _k, v: v[keep])
        for k, v in state.items():
            state[k] = v[keep]

    @staticmethod
    def reset_opacities(params, optimizers, value: float) -> None:
        cap = math.log(value / (1.0 - value))  # logit, on the host
        edit_rows(
            params,
            optimizers,
            lambda _n, p: p.clamp_max(cap),
            lambda _k, v: torch.zeros_like(v),
            names=("opacities",),
        )
