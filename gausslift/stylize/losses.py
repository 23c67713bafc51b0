"""The fine-tuning loss terms, each a plain differentiable function (gradient-checked in the tests).

With ``D`` the fine-tuned decoder, ``P`` the pretrained one, the pair (``N`` neutral, ``S`` styled)
and ``z*`` the pair's latent (the encoder's code of ``N``), the target is ``S' = P(z*) + (S - N)``
(the pretrained decoder's own output moved by the example's change, so its approximation error of
``N`` is not learned as style):

1. ``vertex``: mean squared distance of dense surface points of ``D(z*)`` and ``S'``;
2. ``feature``: rendered normal / depth / silhouette images of ``D(z*)`` and ``S'`` from several views,
   compared in the feature encoder's space (:mod:`gausslift.stylize.features`);
3. ``direction``: for sampled latents ``z``, ``1 - cos(D(z) - P(z), S - N)`` (the change as one
   flattened vector; smoothed at zero): every input should move the way the example did;
4. ``normal``: sampled identities at the pair's expression: ``1 - <n(D(z)), n(S')>`` per vertex;
5. ``distill``: the decoder's latent part (before the style field) stays the pretrained one on
   sampled latents: mean squared distance (zero when only the field is fine-tuned);
6. ``jacobian`` (the gradient-domain branch only): the branch's Jacobians at ``z*`` against the pair's
   deformation gradients, on each triangle's plane (mean squared Frobenius distance), as Neural
   Jacobian Fields train theirs.
"""

from __future__ import annotations

import torch


def vertex_loss(pred_pts: torch.Tensor, target_pts: torch.Tensor) -> torch.Tensor:
    return ((pred_pts - target_pts) ** 2).sum(-1).mean()


def direction_loss(delta: torch.Tensor, delta_star: torch.Tensor) -> torch.Tensor:
    """``delta`` [B, V, 3] against the example's ``delta_star`` [V, 3]: ``1 - <a, b> / (max(|a|, |b|) |b|)``,
    the cosine distance once ``|a| >= |b|``; below that the projection, so the loss is smooth at
    ``a = 0`` (where fine-tuning starts) instead of the cosine's ``1 / |a|`` gradient."""
    a = delta.flatten(1)
    b = delta_star.flatten()
    nb = b.norm().clamp_min(1e-12)
    return (1 - (a @ b) / (torch.maximum(a.norm(dim=1), nb) * nb)).mean()


def normal_loss(pred_normals: torch.Tensor, target_normals: torch.Tensor) -> torch.Tensor:
    """Unit normals [B, V, 3] against [V, 3]: mean ``1 - cos``."""
    return (1 - (pred_normals * target_normals[None]).sum(-1)).mean()


def distill_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum(-1).mean()


def feature_loss(
    pred_images: list[torch.Tensor], target_images: list[torch.Tensor], distance
) -> torch.Tensor:
    """Mean over views of ``distance(pred, target)`` (an encoder's distance of two [H, W, C] images)."""
    return sum(distance(p, t) for p, t in zip(pred_images, target_images)) / len(pred_images)


def jacobian_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """In-plane Jacobians [..., F, 3, 2] against [F, 3, 2]: mean squared Frobenius distance."""
    return ((pred - target) ** 2).sum((-2, -1)).mean()
