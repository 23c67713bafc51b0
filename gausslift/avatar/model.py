"""The avatar: a subject, its bound Gaussians and per-frame parameters; posing and rendering.

``AvatarModel.vertices(frame_params, world_from_subject)`` poses the subject (model units) and moves
it to the sequence's world; ``AvatarModel.render(params, binding, verts, viewmats, Ks, W, H, ...)``
places the Gaussians on that mesh (:mod:`gausslift.binding`) and rasterises them with
``gausslift.render.rasterize`` (any backend). Local parameters: ``means`` [N,3], ``quats`` [N,4],
``scales`` [N,3] (log, units of k), ``opacities`` [N] (logit), ``sh0`` [N,1,3], ``shN`` [N,K-1,3].
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.binding import face_frames, local_to_world
from gausslift.fit.model import render_geometry

SHARED_KEYS = ("identity", "shape", "bone_lengths", "scale")  # per-subject, never per-frame
HIDDEN_REGIONS = ("eye_aux",)  # ICT's see-through helper meshes: synth does not render them


def bound_faces(subject) -> np.ndarray:
    """Indices of the subject's faces that carry Gaussians (all but the hidden helper regions)."""
    fr = subject.face_regions()
    keep = np.ones(len(subject.faces), bool)
    for r in HIDDEN_REGIONS:
        if r in fr:
            keep &= ~fr[r]
    return np.where(keep)[0]


ROTATION_KEYS = ("rotation", "neck", "jaw", "eyes", "pose")  # axis-angle rotations of every subject


def param_lr(key: str, cfg) -> float:
    """The fine-tuning learning rate of a per-frame parameter, by kind (as GaussianAvatars)."""
    if key == "translation":
        return cfg.lr_translation
    return cfg.lr_pose if key in ROTATION_KEYS else cfg.lr_params


def per_frame_keys(subject) -> list[str]:
    return [k for k in subject.param_shapes if k not in SHARED_KEYS]


def pose_vertices(subject, params: dict[str, torch.Tensor], world_from_subject: torch.Tensor) -> torch.Tensor:
    """Posed vertices [B,V,3] in the world for params [B,...] and ``world_from_subject`` [B,4,4]."""
    v = subject(params).vertices
    A = world_from_subject.to(v)
    return v @ A[:, :3, :3].transpose(-1, -2) + A[:, None, :3, 3]


def keypoints_world(subject, params, world_from_subject) -> torch.Tensor | None:
    out = subject(params)
    if out.keypoints is None:
        return None
    A = world_from_subject.to(out.keypoints)
    return out.keypoints @ A[:, :3, :3].transpose(-1, -2) + A[:, None, :3, 3]


def world_gaussians(
    params: dict[str, torch.Tensor], binding: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor
):
    """World (means, quats, scales) of the Gaussians on mesh ``verts`` [V,3] (faces = bound faces)."""
    return local_to_world(params, binding, face_frames(verts, faces))


def render(params, binding, verts, faces, viewmats, Ks, width, height, sh_degree, background, backend="auto"):
    """([C,H,W,3], [C,H,W,1], meta) of the avatar on ``background`` [3]."""
    geometry = world_gaussians(params, binding, verts, faces)
    return render_geometry(geometry, params, viewmats, Ks, width, height, sh_degree, background, backend)
