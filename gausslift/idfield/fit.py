"""Fitting the identity field to images: the identity code, the subject's identity and expression
coefficients and the head pose.

Pose: ``world = s R (X - c0) + t`` with ``X`` the subject's mesh at zero rotation/translation, ``c0``
its neutral bounding-box centre, ``R = exp(omega) R0`` and ``s = s0 exp(log_s)`` where ``R0``, ``s0`` are
the training data's mean world-from-subject rotation and scale (``model.world``).

1. **Initialisation** from 68 landmarks (:func:`init_from_landmarks`; synth writes their projections,
   a detector could give them for photos) or else from the mask (:func:`init_from_mask`: the head is
   put on the ray through the mask's centroid, at the depth where the mean head's projected size matches
   the mask's, facing the camera). The landmark stage fits pose, then pose + coefficients, to the
   reprojected landmarks (priors on the coefficients).

   **Depth from one image.** Head size and distance trade off in one view (the identity coefficients
   change the head's size by about 14 %). The normalised world removes the ambiguity: synth (and ingest)
   put the middle of the posed mesh's bounding box at the origin, so the prior pulls exactly that point
   there (``origin="bbox"``), at weight 10, in both stages. Before 2026-12-07 it pulled ``t``, where the
   *neutral* head's box middle lands, at weight 1, which left the fitted head 0.07-0.08 world units off
   along the camera axis after the landmark stage (8 validation identities; 0.027 now).
2. **Photometric fit**: the code starts at the mean of the training codes; Adam on code, coefficients and
   pose against the face-masked image(s) with the training loss (L1/SSIM + alpha vs face mask) plus
   priors (squared coefficients, squared code distance to the mean code). For an image without a face
   mask (a photo), the mask is the fitted mesh's own face region seen by the camera (recomputed every
   ``remask_every`` steps), intersected with the photo's matte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gausslift.idfield import field as fd
from gausslift.idfield.model import IdField, identity_key
from gausslift.idfield.prep import face_mask, rendered_faces
from gausslift.idfield.train import image_loss
from gausslift.subjects.base import axis_angle_to_matrix

Tensor = torch.Tensor


@dataclass
class FitConfig:
    iters: int = 100  # photometric steps
    lm_iters: int = 400  # landmark steps (the first half pose only; 60 before 2026-12-07)
    views_per_step: int = 3  # multi-view fits: cameras per step
    lr_code: float = 0.05
    lr_coeff: float = 0.03
    lr_pose: float = 0.005
    code_prior: float = 1e-2  # x mean squared (code - mean code), relative to the codes' spread
    coeff_prior: float = 1e-3  # x mean squared identity and expression coefficients
    lm_coeff_prior: float = 1e-2
    ssim: float = 0.2
    alpha: float = 0.5
    # x |centre|^2: the normalised world (ingest, synth, FaceLift) centres the head (1.0 before 2026-12-07)
    origin_prior: float = 10.0
    # the centre the prior pulls to the origin: "bbox", the middle of the posed mesh's bounding box (the
    # point synth puts there); "neutral", t (where the neutral head's box middle lands; before 2026-12-07)
    origin: str = "bbox"
    lm_origin_prior: float = -1.0  # the landmark stage's origin prior (< 0: origin_prior)
    fit_scale: bool = False  # also optimise s (a photo of unknown size); synth data keeps s0
    remask_every: int = 20


def fit_config(overrides: list[str]) -> FitConfig:
    """The default :class:`FitConfig` with ``KEY=VALUE`` overrides (the CLI's ``--set``)."""
    from gausslift.config import apply_overrides

    return apply_overrides(FitConfig(), overrides)


class Pose(torch.nn.Module):
    """Head pose and the subject's coefficients (identity, expression; other parameters zero)."""

    def __init__(self, subject, world: dict, t0: np.ndarray | None = None):
        super().__init__()
        self.subject = subject
        self.id_key = identity_key(subject)
        self.keys = [k for k in (self.id_key, "expression") if k in subject.param_shapes]
        self.coeffs = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.zeros(1, *subject.param_shapes[k]))
                                              for k in self.keys})
        self.omega = torch.nn.Parameter(torch.zeros(3))
        t0 = torch.zeros(3) if t0 is None else torch.as_tensor(t0, dtype=torch.float32)
        self.t = torch.nn.Parameter(t0)
        self.log_s = torch.nn.Parameter(torch.zeros(()))
        self.R0 = torch.as_tensor(np.asarray(world["rotation"]), dtype=torch.float32)
        self.s0 = float(world["scale"])
        with torch.no_grad():
            v = subject(subject.zero_params(1)).vertices[0]
        self.c0 = 0.5 * (v.min(0).values + v.max(0).values)
        faces = subject.faces.cpu().numpy()
        self.used = torch.as_tensor(np.unique(faces[rendered_faces(subject)]), dtype=torch.long)

    def params(self) -> dict[str, Tensor]:
        p = self.subject.zero_params(1)
        for k in self.keys:
            p[k] = self.coeffs[k]
        return p

    def rotation(self) -> Tensor:
        return axis_angle_to_matrix(self.omega[None])[0] @ self.R0

    def world_from_subject(self) -> np.ndarray:
        """The pose as a 4x4 world_from_subject of the subject's own frame (rotation/translation 0)."""
        with torch.no_grad():
            sR = self.s0 * self.log_s.exp() * self.rotation()
            T = np.eye(4)
            T[:3, :3] = sR.numpy()
            T[:3, 3] = (self.t - sR @ self.c0).numpy()
        return T

    def vertices(self) -> tuple[Tensor, Tensor | None]:
        """World vertices [V,3] and the subject's keypoints [J,3] in its own frame (or None)."""
        out = self.subject(self.params())
        return self.world(out.vertices[0]), out.keypoints[0] if out.keypoints is not None else None

    def world(self, X: Tensor) -> Tensor:
        return self.s0 * self.log_s.exp() * (X - self.c0) @ self.rotation().T + self.t

    def coeff_prior(self) -> Tensor:
        return sum((self.coeffs[k] ** 2).mean() for k in self.keys)

    def origin_offset(self, verts: Tensor, origin: str = "bbox") -> Tensor:
        """The point the origin prior pulls to the world origin: with ``bbox`` the middle of the bounding
        box of the rendered mesh's world vertices ``verts`` (synth's and ingest's subject centre), with
        ``neutral`` ``t``."""
        if origin == "neutral":
            return self.t
        u = verts[self.used]
        return 0.5 * (u.min(0).values + u.max(0).values)


def project(X: Tensor, viewmat: Tensor, K: Tensor) -> Tensor:
    c = X @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = c @ K.T
    return uv[:, :2] / uv[:, 2:3].clamp_min(1e-6)


def camera_ray(viewmat: np.ndarray, K: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre, unit world direction) of the ray through pixel ``px`` (+0.5 convention)."""
    R, tv = viewmat[:3, :3], viewmat[:3, 3]
    C = -R.T @ tv
    d = R.T @ np.linalg.solve(K, np.array([px[0], px[1], 1.0]))
    return C, d / np.linalg.norm(d)


def facing_rotation(pose: Pose, viewmat: np.ndarray) -> None:
    """Turn the head (about the world up axis) so that its face points at the camera."""
    with torch.no_grad():
        fwd = pose.R0 @ torch.tensor([0.0, 0.0, 1.0])  # subjects face +z (ICT, FLAME)
        C = -viewmat[:3, :3].T @ viewmat[:3, 3]
        to_cam = torch.as_tensor(C, dtype=torch.float32) - pose.t
        a = torch.atan2(to_cam[1], to_cam[0]) - torch.atan2(fwd[1], fwd[0])
        pose.omega.copy_(torch.tensor([0.0, 0.0, float(a)]))


def init_from_mask(pose: Pose, mask: np.ndarray, viewmat: np.ndarray, K: np.ndarray, origin: bool = True
                   ) -> None:
    """With ``origin`` (the normalised world centres the subject, and a photo's matte may hold the
    shoulders too) the head starts at the origin facing the camera and is then shifted parallel to the
    image so that the mesh's projected top meets the matte's top row and its centre the centre of the
    matte's top fifth, after scaling the head (``log_s``) so that its projected width matches the matte's
    (the 90th percentile of row widths over the upper half head height); otherwise it starts on the ray
    through the matte's centroid at the depth where a head-sized sphere covers the matte's area."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        from gausslift.errors import InputError

        raise InputError(None, "the mask is empty: nothing to fit")
    if origin:
        vm, Kt = torch.as_tensor(viewmat, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32)
        top = ys.min()
        with torch.no_grad():
            pose.t.zero_()
            facing_rotation(pose, viewmat)
            for _ in range(3):  # scale: the matte's head width (upper rows) against the mesh's
                uv = project(pose.vertices()[0], vm, Kt)
                w_m, h_m = float(np.ptp(uv[:, 0].numpy())), float(np.ptp(uv[:, 1].numpy()))
                rows = (ys >= top) & (ys < top + 0.5 * h_m)
                widths = [np.ptp(xs[rows & (ys == y)]) + 1 for y in np.unique(ys[rows])]
                pose.log_s.add_(float(np.log(max(np.percentile(widths, 90), 1) / max(w_m, 1e-6))))
            uv = project(pose.vertices()[0], vm, Kt)
            band = xs[ys < top + 0.2 * (ys.max() - top + 1)]
            du = 0.5 * (band.min() + band.max()) + 0.5 - 0.5 * float(uv[:, 0].min() + uv[:, 0].max())
            dv = top + 0.5 - float(uv[:, 1].min())
            depth = float(viewmat[2, :3] @ pose.t.numpy() + viewmat[2, 3])
            shift = viewmat[:3, :3].T @ np.array([du / K[0, 0] * depth, dv / K[1, 1] * depth, 0.0])
            pose.t.add_(torch.as_tensor(shift, dtype=torch.float32))
        return
    C, d = camera_ray(viewmat, K, np.array([xs.mean() + 0.5, ys.mean() + 0.5]))
    with torch.no_grad():
        v, _ = pose.vertices()
        radius = float((v.max(0).values - v.min(0).values).norm() / 2)
    # a sphere of the head's radius seen at depth z covers ~ pi (f r / z)^2 pixels; the matte covers len(xs)
    f = float(K[0, 0])
    z = f * radius * np.sqrt(np.pi / len(xs)) * 0.85
    with torch.no_grad():
        pose.t.copy_(torch.as_tensor(C + d * z, dtype=torch.float32))
    facing_rotation(pose, viewmat)


def init_from_landmarks(pose: Pose, lm2d: np.ndarray, viewmat: np.ndarray, K: np.ndarray, cfg: FitConfig
                        ) -> float:
    """Pose (then pose + coefficients) from 68 pixel landmarks; returns the final RMS pixel error. The
    start: on the ray through the landmarks' centroid, at the depth where the mean head's landmark spread
    matches theirs, facing the camera. With ``cfg.origin_prior`` the start is the ray's point nearest
    the world origin instead (the normalised world centres the subject there) and the squared distance of
    the centre (``cfg.origin``) from it is a prior."""
    C, d = camera_ray(viewmat, K, lm2d.mean(0))
    with torch.no_grad():
        _, kp = pose.vertices()
        w = kp * pose.s0
        spread3 = float((w - w.mean(0)).norm(dim=-1).pow(2).mean().sqrt())
    spread2 = float(np.sqrt(((lm2d - lm2d.mean(0)) ** 2).sum(-1).mean()))
    z = float(K[0, 0]) * spread3 / max(spread2, 1e-6)
    if cfg.origin_prior > 0 and -C @ d > 0:
        z = float(-C @ d)
    with torch.no_grad():
        pose.t.copy_(torch.as_tensor(C + d * z, dtype=torch.float32))
    facing_rotation(pose, viewmat)
    vm, Kt = torch.as_tensor(viewmat, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32)
    target = torch.as_tensor(lm2d, dtype=torch.float32)
    opt = torch.optim.Adam([{"params": [pose.omega], "lr": 0.02}, {"params": [pose.t], "lr": 0.02},
                            {"params": list(pose.coeffs.values()), "lr": 0.0}])
    err = float("nan")
    w_origin = cfg.origin_prior if cfg.lm_origin_prior < 0 else cfg.lm_origin_prior
    for i in range(cfg.lm_iters):
        if i == cfg.lm_iters // 2:
            opt.param_groups[2]["lr"] = 0.05
            opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = 0.005
        v, kp = pose.vertices()
        r = project(pose.world(kp), vm, Kt) - target
        e = (r ** 2).sum(-1).mean()
        loss = e / float(K[0, 0]) ** 2 * 1e3 + cfg.lm_coeff_prior * pose.coeff_prior() \
            + w_origin * (pose.origin_offset(v, cfg.origin) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        err = float(e.detach().sqrt())
    return err


@dataclass
class Target:
    """One view to fit: face-masked image [H,W,3], face mask [H,W] (None: from the mesh, within ``matte``),
    camera."""

    image: np.ndarray
    mask: np.ndarray | None
    viewmat: np.ndarray
    K: np.ndarray
    matte: np.ndarray | None = None  # a photo's head matte (used when mask is None)
    full: np.ndarray | None = None  # the photo's unmasked RGB (when mask is None)


def own_face_mask(model: IdField, verts: Tensor, t: Target) -> np.ndarray:
    """The face region of the fitted mesh seen by ``t``'s camera (occluded by the rest of the mesh)."""
    faces = model.subject.faces.cpu().numpy()
    occ = rendered_faces(model.subject)
    reg = np.zeros(len(faces), bool)
    reg[model.layout.region_faces] = True
    H, W = t.image.shape[:2]
    cam = {"fx": t.K[0, 0], "fy": t.K[1, 1], "cx": t.K[0, 2], "cy": t.K[1, 2], "w": W, "h": H,
           "w2c": t.viewmat}
    return face_mask(verts.detach().double().numpy(), faces, occ, reg[occ], cam).astype(np.float32)


def fit(model: IdField, targets: list[Target], cfg: FitConfig, lm2d: np.ndarray | None = None,
        code0: Tensor | None = None, pose: Pose | None = None, seed: int = 0) -> dict:
    """Fit code, coefficients and pose to ``targets`` (the first one initialises the pose). Returns
    {"code", "pose", "seconds", "landmark_rms_px", "loss"}."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    first = targets[0]
    lm_err = None
    if pose is None:
        pose = Pose(model.subject, model.world)
        if lm2d is not None:
            lm_err = init_from_landmarks(pose, lm2d, first.viewmat, first.K, cfg)
        else:
            matte = first.matte if first.mask is None else first.mask
            init_from_mask(pose, matte, first.viewmat, first.K, cfg.origin_prior > 0)
    mean = model.mean_code()
    spread = float(((model.codes.detach() - mean) ** 2).mean())
    code = (mean if code0 is None else code0).clone().requires_grad_(True)
    groups = [{"params": [code], "lr": cfg.lr_code},
              {"params": list(pose.coeffs.values()), "lr": cfg.lr_coeff},
              {"params": [pose.omega, pose.t] + ([pose.log_s] if cfg.fit_scale else []), "lr": cfg.lr_pose}]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    tens = [(torch.as_tensor(t.viewmat, dtype=torch.float32)[None],
             torch.as_tensor(t.K, dtype=torch.float32)[None]) for t in targets]
    masks = [None if t.mask is None else torch.as_tensor(t.mask, dtype=torch.float32)[None] for t in targets]
    imgs = [torch.as_tensor(t.image, dtype=torch.float32)[None] for t in targets]
    loss = torch.zeros(())
    for step in range(cfg.iters):
        frac = step / max(cfg.iters, 1)
        for g, base in zip(opt.param_groups, (cfg.lr_code, cfg.lr_coeff, cfg.lr_pose)):
            g["lr"] = base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        verts, _ = pose.vertices()
        idx = range(len(targets)) if len(targets) <= cfg.views_per_step else \
            rng.choice(len(targets), cfg.views_per_step, replace=False)
        g = model.gaussians(code, verts)
        loss = 0.0
        for i in idx:
            t = targets[i]
            if t.mask is None and (masks[i] is None or step % cfg.remask_every == 0):
                m = own_face_mask(model, verts, t) * (t.matte > 0.5)
                masks[i] = torch.as_tensor(m)[None]
                imgs[i] = torch.as_tensor(t.full * m[..., None], dtype=torch.float32)[None]
            rgb, alpha = fd.render(g, tens[i][0], tens[i][1], t.image.shape[1], t.image.shape[0])
            li, _ = image_loss(rgb, alpha, imgs[i], masks[i], cfg)
            loss = loss + li / len(idx)
        loss = loss + cfg.code_prior * ((code - mean) ** 2).mean() / max(spread, 1e-8) \
            + cfg.coeff_prior * pose.coeff_prior() \
            + cfg.origin_prior * (pose.origin_offset(verts, cfg.origin) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"code": code.detach(), "pose": pose, "seconds": time.perf_counter() - t0,
            "landmark_rms_px": lm_err, "loss": float(loss.detach())}


def fitted_params(pose: Pose, code: Tensor) -> dict[str, np.ndarray]:
    """The fit as arrays (a synth/avatar-style params.npz: [1,...] each, plus world_from_subject)."""
    p = {k: v.detach().numpy() for k, v in pose.params().items()}
    return p | {"world_from_subject": pose.world_from_subject()[None], "code": code.numpy()[None]}


def reanimate(model: IdField, code: Tensor, identity: np.ndarray, params: dict, world_from_subject: np.ndarray
              ) -> dict[str, Tensor]:
    """Gaussians of a fitted head (code, identity coefficients) posed by another frame's parameters
    (expression, eyes, rotation, translation) and world_from_subject."""
    s = model.subject
    p = s.zero_params(1)
    for k in p:
        if k in params:
            p[k] = torch.as_tensor(np.asarray(params[k], np.float32).reshape(1, -1))
    p[identity_key(s)] = torch.as_tensor(np.asarray(identity, np.float32).reshape(1, -1))
    with torch.no_grad():
        X = s(p).vertices[0]
        T = torch.as_tensor(world_from_subject, dtype=torch.float32)
        return model.gaussians(code, X @ T[:3, :3].T + T[:3, 3])


__all__ = ["FitConfig", "Pose", "Target", "fit", "fit_config", "fitted_params", "reanimate"]
