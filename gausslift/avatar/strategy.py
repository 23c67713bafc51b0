"""Densification for bound Gaussians, optionally region-adaptive (the second switch).

:class:`AvatarStrategy` keeps gsplat ``DefaultStrategy``'s hooks and schedule
(:mod:`gausslift.fit.strategy`) for parameters that live in triangle-local frames
(:mod:`gausslift.binding`):

* the parent triangle ``binding`` is part of the strategy state, so clones, splits and prunes carry it
  with every other per-Gaussian tensor (children keep their parent's triangle);
* splits draw their offsets in the local frame and apply them there (:func:`binding.split_local`);
* "small"/"large" compare *world* sizes (local scale times the rest-pose triangle factor ``k``) with
  the scene scale, as GaussianAvatars compares ``get_scaling``;
* pruning never removes the last Gaussian of a triangle (GaussianAvatars keeps one per face).

Region-adaptive densification (``adaptive_densify_ratio`` r > 0): every triangle gets a weight ``w``
(1 + r for triangles in important regions -- eyes, mouth and nose by default -- else 1.0; r = 0.5 gives
the seed's 1.5), read from the subject's region map (``Subject.face_regions``). A Gaussian grows when
its mean 2D gradient exceeds ``grow_grad2d / w`` and is pruned as transparent below ``prune_opa / w``:
important regions densify earlier and keep more low-opacity Gaussians.
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.binding import split_local
from gausslift.fit.config import StrategyConfig
from gausslift.fit.optim import edit_rows
from gausslift.fit.strategy import DefaultStrategy, Schedule

IMPORTANT = ("eyes", "mouth", "nose")


def face_weights(face_regions: dict[str, np.ndarray], ratio: float, important=IMPORTANT) -> np.ndarray:
    """[F] weights: 1 + ratio on triangles of the ``important`` regions, 1 elsewhere. Regions the
    subject lacks are skipped (the mouse has no 'eyes' region: its 'head' counts when none match)."""
    n = len(next(iter(face_regions.values())))
    imp = np.zeros(n, bool)
    names = [r for r in important if r in face_regions] or [r for r in ("head",) if r in face_regions]
    for r in names:
        imp |= np.asarray(face_regions[r], bool)
    return np.where(imp, 1.0 + ratio, 1.0)


class AvatarStrategy(DefaultStrategy):
    def __init__(self, cfg: StrategyConfig, schedule: Schedule, scene_scale: float,
                 face_k: torch.Tensor, face_weight: torch.Tensor | None = None):
        """``face_k`` [F] rest-pose triangle factors; ``face_weight`` [F] or None (not adaptive)."""
        super().__init__(cfg, schedule, scene_scale)
        self.face_k = face_k.detach().float()
        self.face_weight = None if face_weight is None else face_weight.detach().float()

    def initialize_state(self, binding: torch.Tensor, device="cpu") -> dict[str, torch.Tensor]:
        st = super().initialize_state(len(binding), device)
        st["binding"] = binding.to(device=device, dtype=torch.long)
        return st

    def regularizer(self, params, state=None) -> dict:
        """No loss terms (the ``mcmc`` kind's penalties need the binding, hence ``state``)."""
        return {}

    def _weights(self, state) -> torch.Tensor:
        b = state["binding"]
        if self.face_weight is None:
            return torch.ones(len(b), device=b.device)
        return self.face_weight.to(b.device)[b]

    def world_scales(self, params, state) -> torch.Tensor:
        b = state["binding"]
        return params["scales"].detach().exp() * self.face_k.to(b.device)[b][:, None]

    # -- growth and pruning (DefaultStrategy._grow with these hooks) ------------------------------------
    def _grow_weights(self, state) -> torch.Tensor:
        """Region weight per Gaussian: threshold = base / weight, ties under the cap by weighted gradient."""
        return self._weights(state)

    def _world_scales(self, params, state) -> torch.Tensor:
        return self.world_scales(params, state)

    def _prune(self, params, optimizers, state, step: int) -> int:
        opa = torch.sigmoid(params["opacities"].detach().flatten())
        prune = opa < self.cfg.prune_opa / self._weights(state)
        if step > self.schedule.reset_every:
            big = self.world_scales(params, state).max(-1).values > self.cfg.prune_scale3d * self.scene_scale
            prune |= big
        prune = keep_one_per_face(prune, state["binding"], opa)
        n = int(prune.sum())
        if n:
            self.remove(params, optimizers, state, prune)
        return n

    def split(self, params, optimizers, state, mask: torch.Tensor) -> None:
        sel, rest = torch.where(mask)[0], torch.where(~mask)[0]
        noise = torch.randn(2, len(sel), 3, device="cpu").to(params["means"].device)  # same on any device
        kids = split_local({k: params[k].detach() for k in ("means", "quats", "scales")}, sel, noise)
        revised = self.cfg.revised_opacity

        def new_rows(name: str, p: torch.Tensor) -> torch.Tensor:
            if name in kids:
                return kids[name]
            if name == "opacities" and revised:
                o = torch.sigmoid(p[sel])
                return torch.logit(1 - torch.sqrt(1 - o), eps=1e-6).repeat((2,) + (1,) * (p.dim() - 1))
            return p[sel].repeat((2,) + (1,) * (p.dim() - 1))

        edit_rows(params, optimizers, lambda n, p: torch.cat([p[rest], new_rows(n, p)]),
                  lambda _k, v: torch.cat([v[rest], v.new_zeros((2 * len(sel),) + v.shape[1:])]))
        for k, v in state.items():
            state[k] = torch.cat([v[rest], v[sel].repeat((2,) + (1,) * (v.dim() - 1))])


def keep_one_per_face(prune: torch.Tensor, binding: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """``prune`` with, for every triangle that would lose all its Gaussians, its most opaque one kept."""
    nf = int(binding.max()) + 1 if len(binding) else 0
    kept = torch.zeros(nf, dtype=torch.long, device=binding.device).index_add_(0, binding, (~prune).long())
    orphan = kept[binding] == 0  # Gaussians of triangles left empty
    if not bool(orphan.any()):
        return prune
    # per orphaned face, the index of its most opaque Gaussian
    score = torch.where(orphan, opacity, torch.full_like(opacity, -1.0))
    best = torch.full((nf,), -1.0, device=binding.device).scatter_reduce(0, binding, score, "amax")
    keep = orphan & (score == best[binding])
    # ties: keep only the first of each face
    idx = torch.where(keep)[0]
    first = torch.full((nf,), len(binding), dtype=torch.long, device=binding.device)
    first = first.scatter_reduce(0, binding[idx], idx, "amin")
    out = prune.clone()
    out[first[first < len(binding)]] = False
    return out
