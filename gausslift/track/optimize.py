"""Fitting the articulated model to every frame of a sequence from 2D keypoints.

Unknowns: per frame a rotation and translation (the model's root pose and ``world_from_subject``'s
translation) and the axis-angles of the joints that have limits in the model (spine, neck, skull,
tail, limbs, ears, jaw: ``subject.limits``); shared by the sequence: the scale (capture units per model
unit), one bone-length factor per ``bone_length_group`` and the per-node offsets (see
:mod:`gausslift.track.posing`).

Loss (each term a mean)::

    reprojection   confidence-weighted robust rho of the pixel error in every camera that labelled the
                   point (missing points have weight 0): Cauchy log(1 + r^2/sigma^2) by default
                   (Geman-McClure and Huber on request); sigma is annealed from anneal x robust_px
                   to robust_px over the first half of each stage
    pose prior     w_pose  * (theta / limit)^2        (rest pose = 0)
    joint limits   w_limit * relu(|theta| - margin * limit)^2 / limit^2
    smoothness     w_vel * |X_t+1 - X_t|^2 + w_acc * |X_t+1 - 2 X_t + X_t-1|^2 of the model points
                   (model units / sigma_3d) and w_pose_acc * the same on the joint angles; only
                   between frames whose ids differ by 1
    shape priors   w_bone * log(bone factor)^2 / 0.1^2, w_offset * |offset|^2 / 0.03^2

The 3D terms are measured in units of the *initial* scale, so that growing the scale does not make them
cheaper (measured in the fitted scale, the scale drifted up and the offsets made up for it). Offsets
are bounded (``max_offset`` per coordinate, tanh) and only move in the second half of the articulated
stage, after the pose has settled.

Initialisation: :mod:`gausslift.track.init` on the DLT triangulation of the labels (or the session's own
3D points, ``init="points3d"``). Then Adam: ``rigid_iters`` steps on the similarity alone, ``iters``
steps on everything (cosine-decayed learning rate), optionally a final L-BFGS polish.

The Adam part is a :class:`gausslift.train.loop.Task` (:class:`gausslift.track.task.TrackTask`) run by
the one training loop: one loop step is one Adam step, ``rigid_iters + iters`` steps in all (or a
``minutes`` budget planned once). The stage of a step and every schedule (the stage's cosine learning
rate, the annealed robust scale, the offsets' second half) are functions of the step and the planned
total alone, so a killed track resumes bit for bit. The L-BFGS polish runs after the loop, in
``TrackTask.finish``, on the final Adam state; the per-frame outputs are written there too (``write``,
see :func:`gausslift.track.track_session`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.subjects.base import axis_angle_to_matrix
from gausslift.track.init import similarity_init, torso_nodes
from gausslift.track.observations import Observations
from gausslift.track.posing import KeypointModel, camera_tensors, project
from gausslift.track.skeleton import KeypointMap
from gausslift.track.triangulate import triangulate


@dataclass
class TrackOptions:
    iters: int = 400  # articulated Adam steps
    rigid_iters: int = 100  # similarity-only Adam steps first
    lbfgs_iters: int = 0  # optional L-BFGS polish after Adam
    lr: float = 0.02
    robust_px: float = 10.0  # robust scale sigma (pixels) at the end
    robust: str = "cauchy"  # gm (Geman-McClure) | cauchy | huber
    anneal: float = 10.0  # sigma starts at anneal x robust_px and decays to robust_px over the first
    # half of each stage (graduated non-convexity: far-off points still pull at the start)
    sigma_3d: float = 0.01  # model units a smoothness residual is measured in (~1.4 mm on a mouse)
    w_pose: float = 0.01
    w_limit: float = 1.0
    limit_margin: float = 1.5  # the sampling limits of the model are modest; real mice go further
    w_vel: float = 0.001
    w_acc: float = 0.03
    w_pose_acc: float = 0.01
    w_bone: float = 0.01
    w_offset: float = 0.01
    fit_offsets: bool = True
    max_offset: float = 0.05  # bound on each offset coordinate (model units, ~7 mm on a mouse)
    init: str = "dlt"  # dlt | points3d
    # the silhouette term (with masks: gausslift.track.silhouette.SilhouetteTerm, see docs/track.md)
    silhouette: bool = True  # fit to the masks when the track is given some (False: measure IoU only)
    w_silhouette: float = 0.3  # weight of (outside + cover) next to keypoints (see docs/benchmarks.md)
    w_silhouette_alone: float = 1.0  # its weight when there are no keypoints (masks alone)
    silhouette_px: float = 5.0  # its Cauchy scale, in ingest pixels (512 across)
    silhouette_points: int = 1000  # model vertices posed for it (farthest-point sampled)
    silhouette_tail: bool = False  # include the tail's vertices (ingest's masks miss the thin tail)
    silhouette_res: int = 256  # working resolution of the masks' distance transforms
    silhouette_samples: int = 96  # contour samples per mask
    mask_init_steps: int = 60  # masks alone: Adam steps scoring each of the 24 initial orientations
    mask_init_up: str = "cameras"  # masks alone: the animal's up points towards the cameras (they look down
    # on the arena: keep the orientations whose up is within 60 deg of that) | any (score all 24)
    log_every: int = 50  # history and log.jsonl rows
    # the loop (gausslift.train.loop): a wall-clock budget > 0 replaces the rigid_iters + iters steps by
    # a total planned from the step time, split in the ratio rigid_iters : iters
    minutes: float = 0.0
    checkpoint_every: int = 0  # steps (0: every 3 minutes, and at the start, on Ctrl-C and at the end)
    snapshot_every: int = 50  # in-memory rollback state for the non-finite guard (0: the last checkpoint)

    def check(self) -> None:
        if int(self.iters) < 0 or int(self.rigid_iters) < 0 or int(self.lbfgs_iters) < 0:
            raise InputError(None, f"--iters must be >= 0, got {self.iters}")
        if self.minutes < 0 or self.checkpoint_every < 0 or self.snapshot_every < 0 or self.log_every < 1:
            raise InputError(None, "minutes, checkpoint_every and snapshot_every must be >= 0 and "
                                   "log_every >= 1")
        if self.robust not in ("gm", "cauchy", "huber"):
            raise InputError(None, f"robust must be gm, cauchy or huber, got {self.robust!r}")
        if self.mask_init_up not in ("cameras", "any"):
            raise InputError(None, f"mask_init_up must be cameras or any, got {self.mask_init_up!r}")
        if self.init not in ("dlt", "points3d"):
            raise InputError(None, f"init must be dlt or points3d, got {self.init!r}")
        if self.robust_px <= 0:
            raise InputError(None, "robust_px must be positive")
        if min(self.w_silhouette, self.w_silhouette_alone) < 0 or self.silhouette_px <= 0 \
                or self.silhouette_points < 10 or self.silhouette_res < 32 or self.silhouette_samples < 8:
            raise InputError(None, "w_silhouette(_alone) must be >= 0, silhouette_px > 0, silhouette_points "
                                   ">= 10, silhouette_res >= 32 and silhouette_samples >= 8")


@dataclass
class TrackResult:
    nodes: list[str]
    params: dict[str, np.ndarray]  # the subject's per-frame pose, bone_lengths, scale, translation
    world_from_subject: np.ndarray  # [F,4,4]
    points3d: np.ndarray  # [F,K,3] tracked node positions (world)
    offsets: np.ndarray  # [K,3] fitted offsets (model units, rest axes)
    scale: float  # world units per model unit
    init_points3d: np.ndarray  # [F,K,3] the triangulation used to initialise
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    run: dict = field(default_factory=dict)  # the loop's summary: steps, rollbacks, events, ...


def _exp(w: torch.Tensor) -> torch.Tensor:
    return axis_angle_to_matrix(w)


def _rotvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def temporal_masks(frame_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bool [F-1] (pair t, t+1 consecutive) and [F-2] (triple t-1, t, t+1 consecutive)."""
    d = np.diff(np.asarray(frame_ids)) == 1
    return d, d[:-1] & d[1:] if len(d) > 1 else np.zeros(0, bool)


class Tracker:
    """Holds the fit's tensors; :meth:`run` optimises them."""

    def __init__(self, subject, kmap: KeypointMap, obs: Observations, opts: TrackOptions, masks=None):
        """``masks``: a :class:`gausslift.track.masks.MaskSet` of the same frames (None: keypoints
        only); with ``opts.silhouette`` the fit uses it (:class:`SilhouetteTerm`). Observations without
        any label track from the masks alone (initialised by :func:`gausslift.track.init.mask_init`)."""
        opts.check()
        self.subject, self.obs, self.opts = subject, obs, opts
        self.nodes = kmap.select(obs.names)
        self.obs = obs = obs.select(nodes=self.nodes)
        F, K = obs.num_frames, len(self.nodes)
        self.sil = None
        if masks is not None and opts.silhouette:
            from gausslift.track.silhouette import SilhouetteTerm

            if len(masks.frame_ids) != F or np.any(np.asarray(masks.frame_ids) != np.asarray(obs.frame_ids)):
                raise InputError(masks.root, "the masks were loaded for other frames than the track's")
            self.sil = SilhouetteTerm(subject, masks, opts.silhouette_points, opts.silhouette_tail,
                                      opts.silhouette_px)
        # one LBS call poses the keypoints' vertices and the silhouette's
        self.km = KeypointModel(subject, kmap, self.nodes, None if self.sil is None else self.sil.vids)
        self.cams = [camera_tensors(c) for c in obs.camera_models]
        self.uv = torch.as_tensor(np.nan_to_num(obs.points2d), dtype=torch.float64)  # [C,F,K,2]
        self.w = torch.as_tensor(obs.confidence * np.isfinite(obs.points2d).all(-1), dtype=torch.float64)
        self.masks_only = float(self.w.sum()) == 0
        if self.masks_only and self.sil is None:
            raise InputError(obs.root, "no keypoint is labelled in the selected cameras and frames")
        # initialisation
        if self.masks_only:
            X0 = np.full((F, K, 3), np.nan)
            s0, R0, t0 = self._mask_init(steps=max(1, int(opts.mask_init_steps)))
        else:
            X0, views = triangulate(obs.camera_models, obs.points2d, obs.confidence)
            if opts.init == "points3d":
                if obs.points3d is None:
                    raise InputError(obs.root, "init=points3d: the session has no 3D points (points3d.h5)")
                X0 = np.where(np.isfinite(obs.points3d), obs.points3d, X0)
                views = np.maximum(views, 2 * np.isfinite(obs.points3d).all(-1))
            rest = (self.km.rest_points + self.km.init_offsets).double().numpy()
            s0, R0, t0 = similarity_init(rest, X0, views, torso_nodes(kmap, self.nodes, subject))
        self.init_points3d = X0
        self.s0 = s0
        self.R0 = torch.as_tensor(R0, dtype=torch.float64)
        self.t0 = torch.as_tensor(t0, dtype=torch.float64)
        # unknowns
        lim = np.asarray(subject.limits, np.float64)
        self.active = np.flatnonzero(lim.max(1) > 0)
        L = lim[self.active]
        self.L = torch.as_tensor(np.where(L > 0, L, 1.0), dtype=torch.float32)
        self.axis_mask = torch.as_tensor(L > 0, dtype=torch.float32)
        G = int(subject.bone_length_group.max()) + 1
        self.omega = torch.zeros(F, 3, dtype=torch.float64, requires_grad=True)
        self.tau = torch.zeros(F, 3, dtype=torch.float64, requires_grad=True)
        self.log_s = torch.zeros((), dtype=torch.float64, requires_grad=True)
        self.theta = torch.zeros(F, len(self.active), 3, requires_grad=True)
        self.log_b = torch.zeros(G, requires_grad=True)
        self.d_off = torch.zeros(K, 3, requires_grad=True)
        pair, triple = temporal_masks(obs.frame_ids)
        self.pair = torch.as_tensor(pair, dtype=torch.float64)
        self.triple = torch.as_tensor(triple, dtype=torch.float64)
        self.history: list[dict] = []
        self.sigma_factor = 1.0

    def _mask_init(self, frames: int = 8, steps: int = 60) -> tuple[float, np.ndarray, np.ndarray]:
        """The similarity from the masks alone: the 24 candidates of :func:`mask_init` (the ways of
        laying the model's axes on the visual hull's principal axes; with ``mask_init_up="cameras"``
        only those whose up is within 60 degrees of the direction towards the cameras), each refined by
        ``steps`` Adam steps of the silhouette term on the rest pose at ``frames`` evenly spaced frames;
        the one with the lowest loss wins, with its refined scale, and its rotation and translation
        changes carried to every frame from the nearest refined one."""
        from gausslift.track.init import mask_init

        m = self.sil.masks
        s0, cands = mask_init(m.P.numpy(), m.present.reshape(m.num_frames, -1).numpy(), m.masks,
                              self.sil.rest)
        F = m.num_frames
        sub = np.unique(np.linspace(0, F - 1, min(frames, F)).round().astype(np.int64))
        sub = sub[m.present.reshape(F, -1)[sub].any(1).numpy()]
        Xm = torch.as_tensor(self.sil.rest, dtype=torch.float64)
        if self.opts.mask_init_up == "cameras":  # the 3rd row of a projection is its viewing direction
            P = m.P.reshape(-1, 3, 4)[m.present].numpy()
            view = P[:, 2, :3] / np.linalg.norm(P[:, 2, :3], axis=1, keepdims=True)
            up = -view.mean(0) / max(np.linalg.norm(view.mean(0)), 1e-12)
            keep = [c for c in cands if np.median(c[0][:, :, 2] @ up) > 0.5]
            cands = keep or cands
        scores, refined = [], []
        for R, t in cands:
            Rt, tt = torch.as_tensor(R[sub]), torch.as_tensor(t[sub])
            om = torch.zeros(len(sub), 3, dtype=torch.float64, requires_grad=True)
            ta = torch.zeros(len(sub), 3, dtype=torch.float64, requires_grad=True)
            ls = torch.zeros((), dtype=torch.float64, requires_grad=True)
            opt = torch.optim.Adam([om, ta, ls], lr=0.05)
            for i in range(steps + 1):
                Xw = s0 * torch.exp(ls) * Xm @ (_exp(om) @ Rt).transpose(-1, -2) + (tt + s0 * ta)[:, None]
                terms = self.sil(Xw, torch.as_tensor(sub))
                loss = terms["outside"] + terms["cover"]
                if i == steps:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
            scores.append(float(loss.detach()))
            refined.append((om.detach(), ta.detach(), float(torch.exp(ls.detach()))))
        best = int(np.argmin(scores))
        self.init_scores = scores
        R, t = cands[best]
        # the winner's refinement, carried to every frame from the nearest refined one
        om, ta, k = refined[best]
        near = np.abs(np.arange(F)[:, None] - sub[None]).argmin(1)
        R = (_exp(om[near]) @ torch.as_tensor(R)).numpy()
        return s0 * k, R, t + s0 * ta[near].numpy()

    # ------------------------------------------------------------------ model
    def subject_params(self) -> dict[str, torch.Tensor]:
        F = self.theta.shape[0]
        J = len(self.subject.joint_names)
        theta = self.theta * self.axis_mask
        pose = torch.zeros(F, J, 3).index_copy(1, torch.as_tensor(self.active), theta)
        b = self.subject.group_bone_lengths(torch.exp(self.log_b))
        return {"pose": pose, "bone_lengths": b.expand(F, J), "scale": torch.ones(F, 1),
                "translation": torch.zeros(F, 3)}

    def offset_deltas(self) -> torch.Tensor:
        """Fitted change of each node's offset [K,3]: bounded by ``max_offset`` per coordinate."""
        if not self.opts.fit_offsets:
            return torch.zeros_like(self.d_off)
        m = self.opts.max_offset
        return m * torch.tanh(self.d_off / m) * self.km.fit_offset[:, None]

    def offsets(self) -> torch.Tensor:
        return self.km.init_offsets + self.offset_deltas()

    def rotations(self) -> torch.Tensor:
        return _exp(self.omega) @ self.R0

    def scale(self) -> torch.Tensor:
        return self.s0 * torch.exp(self.log_s)

    def world_points(self, silhouette: bool = False):
        """(model points [F,K,3] in model units, world points [F,K,3]); ``silhouette``: and the
        silhouette term's vertices in the world [F,n,3]."""
        Xm, V = self.km(self.subject_params(), self.offsets(), extra=True)
        Xm = Xm.double()
        s, R = self.scale(), self.rotations().transpose(-1, -2)
        t = (self.t0 + self.s0 * self.tau)[:, None]
        if silhouette:
            return Xm, s * Xm @ R + t, s * V.double() @ R + t
        return Xm, s * Xm @ R + t

    # ------------------------------------------------------------------ loss
    def reprojection(self, Xw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean robust loss, pixel errors [C,F,K])."""
        errs = torch.stack([(project(c, Xw) - self.uv[i]).norm(dim=-1) for i, c in enumerate(self.cams)])
        s2 = (self.opts.robust_px * self.sigma_factor) ** 2
        q = errs ** 2 / s2
        if self.opts.robust == "gm":
            rho = q / (q + 1)
        elif self.opts.robust == "cauchy":
            rho = torch.log1p(q)
        else:  # huber, quadratic below sigma
            rho = torch.where(q < 1, q, 2 * torch.sqrt(q + 1e-12) - 1)
        return (self.w * rho).sum() / self.w.sum(), errs

    def silhouette(self) -> dict[str, torch.Tensor]:
        """The silhouette term's {"outside", "cover"} at the current parameters."""
        return self.sil(self.world_points(True)[2])

    def loss(self, articulated: bool = True) -> tuple[torch.Tensor, dict]:
        o = self.opts
        use_sil = self.sil is not None and (articulated or self.masks_only)
        Xm, Xw, *Vw = self.world_points(use_sil)
        if self.masks_only:
            terms = {"reprojection": Xw.sum() * 0}
        else:
            rep, _ = self.reprojection(Xw)
            terms = {"reprojection": rep}
        if use_sil:
            sil = self.sil(Vw[0])
            w = o.w_silhouette_alone if self.masks_only else o.w_silhouette
            terms["silhouette"] = w * (sil["outside"] + sil["cover"])
        if articulated:
            th = self.theta / self.L * self.axis_mask
            terms["pose"] = o.w_pose * (th ** 2).mean()
            excess = torch.relu(th.abs() - o.limit_margin)
            terms["limits"] = o.w_limit * (excess ** 2).mean()
            terms["bones"] = o.w_bone * (self.log_b ** 2).mean() / 0.1 ** 2
            if o.fit_offsets:  # measured at the initial scale, so that growing the scale does not pay
                d = self.offset_deltas().double() * torch.exp(self.log_s)
                terms["offsets"] = o.w_offset * (d ** 2).sum(-1).mean() / 0.03 ** 2
        Xn = Xw / self.s0 / o.sigma_3d  # initial model units / sigma_3d (fixed: no gain in scaling)
        if self.pair.numel() and self.pair.sum() > 0:
            v = ((Xn[1:] - Xn[:-1]) ** 2).sum(-1).mean(-1)
            terms["velocity"] = o.w_vel * (v * self.pair).sum() / self.pair.sum()
        if self.triple.numel() and self.triple.sum() > 0:
            a = ((Xn[2:] - 2 * Xn[1:-1] + Xn[:-2]) ** 2).sum(-1).mean(-1)
            terms["acceleration"] = o.w_acc * (a * self.triple).sum() / self.triple.sum()
            if articulated:
                th = self.theta.double()
                aa = ((th[2:] - 2 * th[1:-1] + th[:-2]) ** 2).sum(-1).mean(-1) / 0.01 ** 2
                terms["pose_acceleration"] = o.w_pose_acc * (aa * self.triple).sum() / self.triple.sum()
        total = sum(terms.values())
        return total, {k: float(v.detach()) for k, v in terms.items()}

    # ------------------------------------------------------------------ optimisation
    def tensors(self) -> dict[str, torch.Tensor]:
        """The unknowns by name (the leaves Adam moves)."""
        return {"omega": self.omega, "tau": self.tau, "log_s": self.log_s, "theta": self.theta,
                "log_b": self.log_b, "d_off": self.d_off}

    def stage_params(self, stage: str) -> list[torch.Tensor]:
        """What a stage optimises: the similarity (``rigid``) or everything (``articulated``)."""
        rigid = [self.omega, self.tau, self.log_s]
        if stage == "rigid":
            return rigid
        return rigid + [self.theta, self.log_b] + ([self.d_off] if self.opts.fit_offsets else [])

    def _lbfgs(self, params: list, steps: int) -> None:
        if steps <= 0:
            return
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=True)
            total, _ = self.loss(True)
            total.backward()
            return total

        self.sigma_factor = 1.0
        opt.step(closure)
        total, terms = self.loss(True)
        self.history.append({"stage": "lbfgs", "step": steps, "loss": float(total.detach()), **terms})

    @torch.no_grad()
    def result(self, seconds: float = 0.0) -> TrackResult:
        p = {k: v.detach().double().numpy() for k, v in self.subject_params().items()}
        R = self.rotations().numpy()
        p["pose"][:, self.subject.root] = _rotvec(R)
        s = float(self.scale())
        F = R.shape[0]
        W = np.tile(np.eye(4), (F, 1, 1))
        W[:, :3, :3] *= s
        W[:, :3, 3] = (self.t0 + self.s0 * self.tau).numpy()
        _, Xw = self.world_points()
        return TrackResult(self.nodes, p, W, Xw.numpy(), self.offsets().detach().double().numpy(), s,
                           self.init_points3d, list(self.history), seconds)
