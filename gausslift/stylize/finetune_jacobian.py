"""Fine-tuning the gradient-domain style branch (:mod:`gausslift.stylize.jacobian`) on one pair.

The same task as the field branch (:class:`gausslift.stylize.finetune.FinetuneTask`: the loss terms
``vertex``, ``feature``, ``direction``, ``normal`` with their switches and weights, the pair's target
``S'``, the loop), with the decoder replaced: ``D(z)`` integrates the predicted per-triangle Jacobians
applied to ``P(z)``'s triangles, and one more term, ``jacobian`` (switch and weight as the others): the
Jacobians at the pair's latent against the pair's deformation gradients on each triangle's plane (as
Neural Jacobian Fields train). Without it the vertex term alone leaves the part of the Jacobians that
the Poisson solve projects away (the non-integrable part on the pair's triangles) free, Adam fills it,
and on other meshes it is no longer invisible (measured on validation seeds: 7-11 mm). Only the
Jacobian branch is trained (``train: field``; ``distill`` is then zero). ``jacobian_init``:
``identity`` (``C = 0``, ``D = P`` at the start) or ``transfer``
(``C`` starts at the pair's deformation gradients minus ``I`` on the triangle's plane: deformation
transfer without its normal column).
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.stylize import jacobian as J
from gausslift.stylize import losses as Ls
from gausslift.stylize.finetune import FinetuneTask
from gausslift.stylize.transfer import deformation_gradients


class JacobianTask(FinetuneTask):
    name = "stylize-finetune-jacobian"
    columns = ("step", "loss", "vertex", "feature", "direction", "normal", "jacobian", "elapsed_s")
    shape_keys = ("style_model", "jacobian_rank")

    def __init__(self, cfg, base, subject, neutral, styled, out):
        if cfg.train != "field":
            raise InputError(None, "style_model: jacobian fine-tunes only its branch (train: field)")
        if cfg.jacobian_init not in ("identity", "transfer"):
            raise InputError(None, f"jacobian_init must be identity or transfer, got {cfg.jacobian_init!r}")
        super().__init__(cfg, base, subject, neutral, styled, out)
        self.solver = J.solver(self.faces, self.N.double().numpy(), self.S.double().numpy())
        R = J.local_frames(self.N.double(), self.faces)
        Q = deformation_gradients(self.N.double(), self.S.double(), self.faces)
        self.q_plane = ((Q - torch.eye(3, dtype=Q.dtype)) @ R).float()  # the pair's, in-plane [F, 3, 2]

    def trainable(self) -> tuple[str, ...]:
        return J.KEYS

    def start(self) -> None:
        torch.manual_seed(self.cfg.seed)
        self.rng = np.random.default_rng(self.cfg.seed)
        w = J.init_jacobian(
            self.N,
            self.faces,
            self.z_star[0],
            self.cfg.jacobian_rank,
            len(self.solver.components),
            self.cfg.seed,
        )
        if self.cfg.jacobian_init == "transfer":
            w["C"] = self.q_plane.clone()
        self.ft = w
        self._optim()

    def _optim(self, state=None) -> None:
        ps = [self.ft[k].requires_grad_(True) for k in J.KEYS]
        self.opt = torch.optim.Adam(ps, lr=self.cfg.lr)
        if state is not None:
            self.opt.load_state_dict(state)

    def loss(self, step: int):
        loss, terms = super().loss(step)
        if self.cfg.jacobian:
            corr = J.jacobians(self.ft, self.z_star) @ self.ft["R"] - self.ft["R"]  # [1, F, 3, 2]
            terms["jacobian"] = Ls.jacobian_loss(corr, self.q_plane)
            loss = loss + self.cfg.w_jacobian * terms["jacobian"]
            terms["jacobian"] = terms["jacobian"].detach()
        return loss, terms

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return J.decode(self.pre, self.ft, self.solver, self.faces, z, self.unit)

    def saved(self) -> dict:
        data = super().saved()
        del data["finetuned"]
        return data | {"format": J.FORMAT_J, "jacobian": {k: v.detach().clone() for k, v in self.ft.items()},
                       "unit": self.unit}  # fmt: skip
