"""3DGS-MCMC density control (Kheradmand et al. 2024) with gsplat ``MCMCStrategy`` semantics.

In place of clone / split / prune, every ``refine_every`` steps (between ``refine_start`` and
``refine_stop``):

* **relocate**: the dead Gaussians (opacity <= ``mcmc_min_opacity``) are moved onto live ones drawn
  with probability proportional to opacity; a Gaussian drawn ``n - 1`` times becomes ``n`` copies whose
  opacities ``1 - (1 - o)^(1/n)`` and scales (the paper's binomial formula) keep the rendered sum
  approximately unchanged;
* **grow** by ``mcmc_grow_rate`` (5 %) of the current count, drawn the same way, up to
  ``min(cap_max, max_gaussians)``: the count never exceeds the cap, and nothing is ever removed (so
  a fit never loses every Gaussian).

After every step, the means get noise scaled by the means' learning rate times ``mcmc_noise_lr``, by
each Gaussian's covariance, and gated by a steep sigmoid of its transparency (so opaque Gaussians stay
put, nearly transparent ones explore). The losses it needs, opacity and scale L1 penalties
(``mcmc_opacity_reg``, ``mcmc_scale_reg``), come from :meth:`MCMCStrategy.regularizer`.

Every edit zeroes the Adam moments of the rows it rewrites (the drawn sources and the relocated or
new copies; gsplat leaves the relocated rows' old moments, which belong to another Gaussian). The
random draws come from torch's global generator on the CPU, as the default strategy's split noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gausslift.fit.config import StrategyConfig
from gausslift.fit.optim import edit_rows
from gausslift.fit.strategy import DefaultStrategy, Schedule, counts_after, quat_to_rotmat, refine_steps


def relocation(opacities: torch.Tensor, scales: torch.Tensor, ratios: torch.Tensor, n_max: int = 51):
    """New (opacities [M], linear scales [M,3]) for Gaussians each replaced by ``ratios`` copies.

    o' = 1 - (1 - o)^(1/n);  s' = s * o / sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1).
    """
    n = ratios.clamp(1, n_max).to(torch.float64)
    o = opacities.to(torch.float64).clamp(0.0, 1.0 - 1e-7)
    new_o = 1.0 - (1.0 - o) ** (1.0 / n)
    denom = torch.zeros_like(o)
    for i in range(1, int(n.max().item()) + 1 if len(n) else 1):
        use = n >= i
        for k in range(i):
            term = math.comb(i - 1, k) * (-1.0) ** k / math.sqrt(k + 1) * new_o ** (k + 1)
            denom = denom + torch.where(use, term, torch.zeros_like(term))
    factor = (o / denom.clamp_min(1e-12)).to(scales.dtype)
    return new_o.to(opacities.dtype), scales * factor[:, None]


def _sample(weights: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` indices drawn with replacement, proportional to ``weights`` (on the CPU generator)."""
    w = weights.detach().float().cpu().clamp_min(0)
    if not torch.isfinite(w).all() or w.sum() <= 0:
        w = torch.ones_like(w)
    return torch.multinomial(w, n, replacement=True).to(weights.device)


class MCMCStrategy(DefaultStrategy):
    """Relocation of dead Gaussians and capped growth; no gradient statistics (empty state)."""

    def __init__(self, cfg: StrategyConfig, schedule: Schedule, scene_scale: float):
        super().__init__(cfg, schedule, scene_scale)

    @property
    def cap(self) -> int:
        """The count never exceeds min(cap_max, max_gaussians) (max_gaussians: every kind's ceiling)."""
        return self.cfg.cap

    def plan_schedule(self, total: int, ref_iters: int) -> Schedule:
        return mcmc_schedule(self.cfg, total, ref_iters)

    def counts_ahead(self, n: int, step: int, total: int, ref_iters: int, growth: float = 1.0) -> np.ndarray:
        """The count of each step in ``[step, total)``: :meth:`grow`'s rule at each refinement of the
        schedule planned for ``total`` steps (relocation keeps the count; ``growth`` is not needed)."""
        sch, cap, rate = self.plan_schedule(total, ref_iters), self.cap, self.cfg.mcmc_grow_rate
        return counts_after(n, step, total, refine_steps(sch, step, total),
                            lambda k, _e: max(k, min(cap, int(rate * k) + k)))  # fmt: skip

    def initialize_state(self, n: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {}

    def step_pre_backward(self, params, optimizers, state, step: int, info: dict) -> None:
        return None

    def regularizer(self, params) -> dict[str, torch.Tensor]:
        cfg, out = self.cfg, {}
        if cfg.mcmc_opacity_reg > 0:
            out["opacity_reg"] = cfg.mcmc_opacity_reg * torch.sigmoid(params["opacities"]).mean()
        if cfg.mcmc_scale_reg > 0:
            out["scale_reg"] = cfg.mcmc_scale_reg * params["scales"].exp().mean()
        return out

    def step_post_backward(self, params, optimizers, state, step: int, info: dict) -> dict:
        sch, out = self.schedule, {}
        if sch.refine_start < step < sch.refine_stop and step % sch.refine_every == 0:
            out["relocated"] = self.relocate(params, optimizers, state)
            out["added"] = self.grow(params, optimizers, state, self.cap)
        if self.cfg.mcmc_noise_lr > 0:
            lr = optimizers["means"].param_groups[0]["lr"] if "means" in optimizers else 0.0
            self.inject_noise(self.noise_params(params, state), lr * self.cfg.mcmc_noise_lr)
        return out

    def noise_params(self, params, state) -> dict:
        """What the noise step reads (opacities, quats, scales) and moves in place (means)."""
        return params

    # -- edits --------------------------------------------------------------------------------------
    def _rewrite(self, params, optimizers, state, src: torch.Tensor, dst: torch.Tensor | None, n_new: int):
        """The drawn sources ``src`` get their relocated opacity / scale; rows ``dst`` (relocation) or
        ``n_new`` appended rows (growth) become copies of them; all of these rows' moments are zeroed."""
        cnt = torch.bincount(src, minlength=len(params["means"]))
        o = torch.sigmoid(params["opacities"].detach().flatten())[src]
        s = params["scales"].detach().exp()[src]
        new_o, new_s = relocation(o, s, cnt[src] + 1)
        new_o = new_o.clamp(self.cfg.mcmc_min_opacity, 1.0 - 1e-6)
        new_logit = torch.logit(new_o).reshape((-1,) + params["opacities"].shape[1:])
        new_logs = torch.log(new_s.clamp_min(1e-12))
        touched = src if dst is None else torch.cat([src, dst])

        def param_fn(name, p):
            p = p.clone()
            if name == "opacities":
                p[src] = new_logit
            elif name == "scales":
                p[src] = new_logs
            if dst is not None:
                p[dst] = p[src]
                return p
            return torch.cat([p, p[src]])

        def moment_fn(_key, v):
            v = v.clone()
            v[touched] = 0
            return v if dst is not None else torch.cat([v, v.new_zeros((n_new,) + v.shape[1:])])

        edit_rows(params, optimizers, param_fn, moment_fn)
        for k, v in state.items():
            v = v.clone()
            v[touched] = 0
            state[k] = v if dst is not None else torch.cat([v, v.new_zeros((n_new,) + v.shape[1:])])

    def draw_weights(self, params, state) -> torch.Tensor:
        """[N] weights the relocation and growth draw their sources by: the opacity (the avatar's
        region-adaptive strategy multiplies in its region weights)."""
        return torch.sigmoid(params["opacities"].detach().flatten())

    def relocate(self, params, optimizers, state) -> int:
        opa = torch.sigmoid(params["opacities"].detach().flatten())
        dead = opa <= self.cfg.mcmc_min_opacity
        n_dead = int(dead.sum())
        if n_dead == 0 or n_dead == len(opa):  # nothing to move, or nothing alive to move onto
            return 0
        alive = torch.where(~dead)[0]
        src = alive[_sample(self.draw_weights(params, state)[alive], n_dead)]
        self._rewrite(params, optimizers, state, src, torch.where(dead)[0], 0)
        return n_dead

    def grow(self, params, optimizers, state, cap: int) -> int:
        n = len(params["means"])
        n_new = max(0, min(cap, int(self.cfg.mcmc_grow_rate * n) + n) - n)
        if n_new == 0:
            return 0
        src = _sample(self.draw_weights(params, state), n_new)
        self._rewrite(params, optimizers, state, src, None, n_new)
        return n_new

    def inject_noise(self, params, scaler: float) -> None:
        """means += Sigma @ (N(0, I) * sigmoid(100 (1 - o - 0.995)) * scaler) (in place, no autograd).

        Only the rows whose gate exceeds 1e-6 (opacity below about 0.14) are computed: for the others
        the shift is below 1e-6 of a transparent Gaussian's, and the covariances of every row cost
        about 10 % of a CPU step at 60k Gaussians."""
        if scaler <= 0:
            return
        with torch.no_grad():
            opa = torch.sigmoid(params["opacities"].flatten())
            gate = torch.sigmoid(100.0 * ((1.0 - opa) - 0.995))
            idx = torch.where(gate > 1e-6)[0]
            if len(idx) == 0:
                return
            rot = quat_to_rotmat(params["quats"][idx])
            s2 = params["scales"][idx].exp() ** 2
            cov = rot @ (s2[:, :, None] * rot.transpose(1, 2))
            noise = torch.randn((len(idx), 3), device="cpu").to(opa.device)
            noise = noise * (gate[idx] * scaler)[:, None]
            params["means"].index_add_(0, idx, torch.einsum("bij,bj->bi", cov, noise))


def mcmc_schedule(cfg: StrategyConfig, total: int, ref_iters: int) -> Schedule:
    s = total / ref_iters
    every = max(cfg.min_refine_every, round(cfg.refine_every * s))
    start = max(every, round(cfg.refine_start_iter * s))
    stop = max(start + 1, round(cfg.mcmc_refine_stop_iter * s))
    return Schedule(start, stop, every, 1 << 40)
