"""3DGS-MCMC density control for bound Gaussians: an avatar fit's ``strategy.kind=mcmc``.

:class:`AvatarMCMCStrategy` is :class:`gausslift.fit.mcmc.MCMCStrategy` (its relocation formula, its
draws, the 5 % growth up to the cap ``min(cap_max, max_gaussians)``, the zeroed Adam moments of every
rewritten row, the opacity / scale penalties, the noise) on parameters stored in triangle-local frames
(:mod:`gausslift.binding`):

* **Copies stay on their source's triangle.** A relocated or new Gaussian copies its source's row
  (local mean, rotation, colour) and its triangle (``binding``, the strategy's only state). The
  binomial formula's scale is a world scale, ``exp(local) * k``; source and copies share ``k``, so
  multiplying the local scale by the formula's factor multiplies the world scale by it.
* **Nothing is pruned.** Dead Gaussians (opacity <= ``mcmc_min_opacity``) are moved, never removed, so
  the count never falls; and as the default avatar strategy never prunes a triangle's last Gaussian,
  relocation never moves it: of a triangle whose Gaussians are all dead the most opaque one stays.
* **Noise** is ``mcmc.py``'s formula in world units, written in the local frame: a local step of the
  means' rate ``lr`` moves the world mean by ``lr * k`` and the world covariance is
  ``k^2 R Sigma_local R^T``, so the local offset moves by ``k^2 Sigma_local n * gate(opacity) * lr *
  mcmc_noise_lr`` (``k`` of the rest pose). Without ``k^2`` gsplat's ``noise_lr`` (5e5) would throw a
  transparent Gaussian about a thousand of its own sizes per step (local sizes are ~0.5, ``lr`` 5e-3).
* **Penalties** as ``mcmc.py``: L1 of the opacities, L1 of the *world* scales.
* **Region-adaptive** (``adaptive_densify_ratio`` r > 0, triangle weights ``w`` of
  :func:`gausslift.avatar.strategy.face_weights`): relocation and growth draw their sources with
  probability proportional to opacity times ``w``, so important regions receive (1 + r) times the
  Gaussians per unit opacity.
"""

from __future__ import annotations

import torch

from gausslift.avatar.strategy import AvatarStrategy, keep_one_per_face
from gausslift.errors import InputError
from gausslift.fit.config import StrategyConfig
from gausslift.fit.mcmc import MCMCStrategy, _sample
from gausslift.fit.strategy import DefaultStrategy, Schedule

UNPLANNED = Schedule(1 << 40, 1 << 40, 1 << 40, 1 << 40)  # until the trainer plans the run's length


class AvatarMCMCStrategy(MCMCStrategy):
    def __init__(self, cfg: StrategyConfig, schedule: Schedule, scene_scale: float,
                 face_k: torch.Tensor, face_weight: torch.Tensor | None = None):  # fmt: skip
        """``face_k`` [F] rest-pose triangle factors; ``face_weight`` [F] or None (not adaptive)."""
        super().__init__(cfg, schedule, scene_scale)
        self.face_k = face_k.detach().float()
        self.log_k = torch.log(self.face_k)
        self.face_weight = None if face_weight is None else face_weight.detach().float()

    def initialize_state(self, binding: torch.Tensor, device="cpu") -> dict[str, torch.Tensor]:
        return {"binding": binding.to(device=device, dtype=torch.long)}

    def _world_log_scales(self, params, state) -> torch.Tensor:
        b = state["binding"]
        return params["scales"] + self.log_k.to(b.device)[b][:, None]

    def regularizer(self, params, state=None) -> dict[str, torch.Tensor]:
        """``mcmc.py``'s penalties; the scale term on world scales (local scales times ``k``)."""
        world = {"opacities": params["opacities"], "scales": self._world_log_scales(params, state)}
        return super().regularizer(world)

    def draw_weights(self, params, state) -> torch.Tensor:
        w = super().draw_weights(params, state)
        if self.face_weight is None:
            return w
        return w * self.face_weight.to(w.device)[state["binding"]]

    def noise_params(self, params, state) -> dict:
        """The world covariance in local units: the local covariance of the world scales (k^2 Sigma);
        ``means`` (local) is moved in place."""
        return {"opacities": params["opacities"], "quats": params["quats"], "means": params["means"],
                "scales": self._world_log_scales(params, state).detach()}

    def relocate(self, params, optimizers, state) -> int:
        """Dead Gaussians onto live ones (drawn by :meth:`draw_weights`), except a triangle's last."""
        opa = torch.sigmoid(params["opacities"].detach().flatten())
        dead = opa <= self.cfg.mcmc_min_opacity
        alive = torch.where(~dead)[0]
        move = torch.where(keep_one_per_face(dead, state["binding"], opa))[0]
        if len(move) == 0 or len(alive) == 0:  # nothing to move, or nothing alive to move onto
            return 0
        src = alive[_sample(self.draw_weights(params, state)[alive], len(move))]
        self._rewrite(params, optimizers, state, src, move, 0)
        return len(move)

    def _rewrite(self, params, optimizers, state, src, dst, n_new) -> None:
        """``MCMCStrategy._rewrite``; the copies take their source's triangle (not a zeroed one)."""
        b = state.pop("binding")
        super()._rewrite(params, optimizers, state, src, dst, n_new)
        if dst is None:
            b = torch.cat([b, b[src]])
        else:
            b = b.clone()
            b[dst] = b[src]
        state["binding"] = b


def make_avatar_strategy(cfg: StrategyConfig, scene_scale: float, face_k: torch.Tensor,
                         face_weight: torch.Tensor | None = None) -> DefaultStrategy:  # fmt: skip
    """``cfg.kind``: ``default`` (:class:`AvatarStrategy`: clone / split / prune) or ``mcmc``
    (:class:`AvatarMCMCStrategy`). Its schedule is set by the trainer's plan (``plan_schedule``)."""
    kinds = {"default": AvatarStrategy, "mcmc": AvatarMCMCStrategy}
    if cfg.kind not in kinds:
        raise InputError(None, f"an avatar fit's strategy.kind must be default or mcmc, got '{cfg.kind}'")
    return kinds[cfg.kind](cfg, UNPLANNED, scene_scale, face_k, face_weight)
