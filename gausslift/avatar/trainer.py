"""Fitting an avatar to a sequence: ``AvatarTrainer(seq, subject, cfg, out).fit(resume=False)``.

The trainer is a :class:`gausslift.train.loop.Task` run by :class:`~gausslift.train.loop.Loop`, which
owns the budget, the run folder (a fresh fit refuses a non-empty ``RUN``; ``resume`` continues it),
the checkpoints (``RUN/checkpoint.pt``, named state), the logs (``log.jsonl``, ``log.csv``,
TensorBoard), and the non-finite guard with rollback. The trainer keeps its model, batch and loss.

Held-out data is fixed at the start and recorded in ``RUN/avatar.json``: the last
``holdout_frames`` fraction of the frames (self-reenactment) and every ``holdout_cameras``-th camera
(indices ``i % n == 0``; novel views). Training draws (frame, camera) pairs from the rest only; the
pair (and the random background) of step k is drawn from a generator seeded with (seed, k), so a
resumed run draws what an uninterrupted one would, and the steps after a rollback draw new pairs.

One step renders one training view: the subject posed with that frame's parameters (fine-tuned when
``finetune_params``, each kind at its own rate: :func:`gausslift.avatar.model.param_lr`), plus its
dynamic offsets (``dynamic_offsets``), carries the bound Gaussians.
Loss: (1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM) + lambda_perceptual * VGG19/LPIPS (switch 1) +
GaussianAvatars' local position/scale regularisers + lambda_temporal * (first and second order terms
on the fine-tuned per-frame parameters and the dynamic offsets) (switch 3), plus the strategy's own
penalties (the ``mcmc`` kind's). Densification is ``strategy.kind``'s: ``default``
(:class:`~gausslift.avatar.strategy.AvatarStrategy`, clone / split / prune) or ``mcmc``
(:class:`~gausslift.avatar.mcmc.AvatarMCMCStrategy`, relocation capped at ``strategy.cap_max``),
region-adaptive when ``adaptive_densify_ratio > 0`` (switch 2), with its schedule scaled to the run's
length.

Schedules (the means' learning-rate decay, the SH degree, densification) are functions of the step
and the run's planned length: ``iters``, or with ``minutes > 0`` (which overrides ``iters``) the
length the loop plans once from the measured speed (``iters`` stands in for it during the warm-up).
The loop's learning-rate scale (halved by each rollback) multiplies every rate.

Exports, written with every checkpoint: ``RUN/avatar.pt`` (what evaluation and animation need) and
``RUN/avatar.json`` (the split, the config, ``finished`` and the run's figures once it has ended).
"""

from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gausslift import binding as B
from gausslift.avatar import model as M
from gausslift.avatar.config import AvatarConfig
from gausslift.avatar.mcmc import AvatarMCMCStrategy, make_avatar_strategy
from gausslift.avatar.strategy import face_weights
from gausslift.avatar.temporal import temporal_terms
from gausslift.errors import InputError
from gausslift.fit.losses import ssim_map
from gausslift.io.sequence import Sequence, apply_static_offset, check_against_subject, load_image
from gausslift.ioutil import atomic_write_json
from gausslift.train.checkpoint import load_checkpoint, save_checkpoint
from gausslift.train.device import resolve_device, set_threads
from gausslift.train.dist import Dist
from gausslift.train.loop import CHECKPOINT, REPLAN_AT, Loop, LoopOptions, Task

CKPT, INFO = CHECKPOINT, "avatar.json"
SH_C0 = 0.28209479177387814
# Config keys a resume may not change. Shapes of the saved state: subject (vertices, faces, parameter
# kinds), sh_degree (shN), holdout_frames (rows of the fine-tuned parameters and offsets),
# finetune_params and dynamic_offsets (the tracking optimiser's groups, the offsets). And the layout
# and split the state was built on: gaussians_per_face (the initial Gaussians per triangle; a new
# value would be recorded but never used) and holdout_cameras (a new one would train on cameras that
# avatar.json holds out, or leave trained-on cameras in the evaluation). strategy.kind: the strategy's
# state (default: grad2d, count, binding; mcmc: binding only).
SHAPE_KEYS = (
    "subject",
    "sh_degree",
    "holdout_frames",
    "finetune_params",
    "dynamic_offsets",
    "gaussians_per_face",
    "holdout_cameras",
    "strategy.kind",
)


def holdout(seq: Sequence, cfg: AvatarConfig) -> dict:
    T, C = seq.num_frames, seq.num_cameras
    n_hold = int(round(T * cfg.holdout_frames)) if cfg.holdout_frames > 0 else 0
    if T - n_hold < 1:
        raise InputError(
            seq.root, f"{T} frames leave none to train on with holdout_frames={cfg.holdout_frames}"
        )
    cams = [c for c in range(C) if cfg.holdout_cameras > 0 and c % cfg.holdout_cameras == 0]
    if len(cams) == C:
        raise InputError(
            seq.root, f"{C} cameras leave none to train on with holdout_cameras={cfg.holdout_cameras}"
        )
    return {
        "train_frames": list(range(T - n_hold)),
        "test_frames": list(range(T - n_hold, T)),
        "train_cameras": [c for c in range(C) if c not in cams],
        "test_cameras": cams,
    }


def load_frames(seq: Sequence, frames, cameras, bg) -> dict:
    """{(t, c): (image [H,W,3] on bg, mask [H,W,1] or None)} as float32 tensors."""
    out = {}
    for t in frames:
        for c in cameras:
            rgb, mask = load_image(seq.images[t][c], seq.masks[t][c], seq.cameras[t][c])
            img = torch.from_numpy(rgb).float() / 255
            m = None if mask is None else torch.from_numpy(mask).float()[..., None] / 255
            out[(t, c)] = (img, m)
    return out


class AvatarTrainer(Task):
    """The avatar's model (bound Gaussians, the fine-tuned per-frame parameters, dynamic offsets and
    the densification state), its batch (one (frame, camera) pair) and its loss, for the loop."""

    name = "avatar"
    columns = ("step", "elapsed_s", "loss", "psnr", "num_gaussians")
    shape_keys = SHAPE_KEYS

    def __init__(self, seq: Sequence, subject, cfg: AvatarConfig, out: str | Path | None = None):
        check_against_subject(seq, subject)
        apply_static_offset(seq, subject)
        if cfg.threads > 0:
            set_threads(cfg.threads)
        self.seq, self.subject, self.cfg = seq, subject, cfg
        self.out = None if out is None else Path(out)
        self.sh_reached = 0
        self.device = resolve_device(cfg.device, cfg.backend)
        self.subject.to(self.device)
        self.split = holdout(seq, cfg)
        self.bg = torch.tensor(
            [1.0, 1.0, 1.0] if cfg.background == "white" else [0.0] * 3, device=self.device
        )
        self.pairs = [(t, c) for t in self.split["train_frames"] for c in self.split["train_cameras"]]
        self.views: dict | None = None  # the training images, read by start()
        self.faces_idx = torch.as_tensor(M.bound_faces(subject))
        self.faces = subject.faces[self.faces_idx.to(subject.faces.device)].to(self.device)
        dt = torch.float32
        self.all_params = {k: torch.as_tensor(v, dtype=dt, device=self.device) for k, v in seq.params.items()}
        self.wfs = torch.as_tensor(seq.world_from_subject, dtype=dt, device=self.device)
        self.frame_keys = M.per_frame_keys(subject)
        self.Ttrain = len(self.split["train_frames"])
        if cfg.param_noise > 0:
            g = torch.Generator().manual_seed(12345)
            for k in self.frame_keys:
                x = self.all_params[k]
                noise = cfg.param_noise * torch.randn(x[: self.Ttrain].shape, generator=g)
                self.all_params[k] = torch.cat([x[: self.Ttrain] + noise.to(x), x[self.Ttrain :]])
        with torch.no_grad():
            rest = self._verts(0, self.all_params)
            _, _, k = B.face_frames(rest, self.faces)
        self.scene_scale = float((rest.max(0).values - rest.min(0).values).norm()) / 2
        w = None
        if cfg.adaptive_densify_ratio > 0:
            fr = {n: m[self.faces_idx.numpy()] for n, m in subject.face_regions().items()}
            w = torch.as_tensor(face_weights(fr, cfg.adaptive_densify_ratio), dtype=dt)
        self.total = max(int(cfg.iters), 1)  # until plan(): the schedules' stand-in length
        self.strategy = make_avatar_strategy(cfg.strategy, self.scene_scale, k, w)
        self.plan(self.total)
        n0 = len(self.faces) * cfg.gaussians_per_face
        if isinstance(self.strategy, AvatarMCMCStrategy) and n0 > self.strategy.cap:
            raise InputError(
                self.out,
                f"strategy.kind=mcmc never exceeds min(strategy.cap_max, strategy.max_gaussians) = "
                f"{self.strategy.cap} Gaussians, but the avatar starts with {n0} ({len(self.faces)} "
                f"triangles x gaussians_per_face={cfg.gaussians_per_face}): raise strategy.cap_max",
            )
        self.perceptual = None
        if cfg.lambda_perceptual > 0:
            from gausslift.fit.losses import Perceptual

            self.perceptual = Perceptual(cfg, self.device)  # reads use_vgg_loss / use_lpips_loss / weights
        self._info: dict | None = None
        self._t0 = time.perf_counter()  # this process's start of the run (reset by start())

    # -- posing ---------------------------------------------------------------------------------------
    def _frame_params(self, t: int, table: dict) -> dict:
        return {k: table[k][t : t + 1] for k in self.subject.param_shapes}

    def _verts(self, t: int, table: dict) -> torch.Tensor:
        return M.pose_vertices(self.subject, self._frame_params(t, table), self.wfs[t : t + 1])[0]

    def frame_table(self) -> dict:
        """Per-frame parameters with the fine-tuned rows in place (training frames)."""
        tab = dict(self.all_params)
        if self.cfg.finetune_params:
            for k in self.frame_keys:
                tab[k] = torch.cat([self.tuned[k], self.all_params[k][self.Ttrain :]])
        return tab

    def posed(self, t: int) -> torch.Tensor:
        """World vertices of training frame ``t`` with the fine-tuned parameters and offsets."""
        cfg = self.cfg
        if cfg.finetune_params:
            p = {
                k: (self.tuned[k][t : t + 1] if k in self.tuned else self.all_params[k][t : t + 1])
                for k in self.subject.param_shapes
            }
            v = M.pose_vertices(self.subject, p, self.wfs[t : t + 1])[0]
        else:
            if not hasattr(self, "_vcache"):
                self._vcache = {}
            if t not in self._vcache:
                with torch.no_grad():
                    self._vcache[t] = self._verts(t, self.all_params)
            v = self._vcache[t]
        return v + self.offsets[t] if cfg.dynamic_offsets else v

    # -- the Task: config, state ----------------------------------------------------------------------
    def config(self) -> AvatarConfig:
        return self.cfg

    def loop_options(self, resume: bool = False, quiet: bool = False) -> LoopOptions:
        """The loop's options from the config: ``minutes > 0`` plans the length from the measured speed
        (``iters`` is then only the warm-up's stand-in), else ``iters`` steps."""
        return LoopOptions.from_config(self.cfg, resume=resume, quiet=quiet, replan_at=REPLAN_AT)

    def fit(self, resume: bool = False, progress: bool = True, out: str | Path | None = None) -> dict:
        """Train in ``out`` (default: the constructor's) on the one loop; returns ``avatar.json``."""
        out = Path(out) if out is not None else self.out
        if out is None:
            raise ValueError("AvatarTrainer.fit needs a run folder")
        self.out = out
        return Loop(self, out, self.loop_options(resume, not progress), Dist(device=self.device)).run()

    def start(self) -> None:
        """Fresh state, seeded: ``gaussians_per_face`` Gaussians on every bound triangle, the sequence's
        per-frame parameters as the tracking to fine-tune, zero offsets. Reads the training images
        (once)."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self.sh_reached = 0  # the highest SH degree trained so far: a re-plan never lowers it
        if self.views is None:
            sp = self.split
            self.views = load_frames(self.seq, sp["train_frames"], sp["train_cameras"], self.bg)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        nf = len(self.faces)
        binding = torch.arange(nf).repeat(cfg.gaussians_per_face)
        loc = B.init_local(binding, cfg.init_scale)
        if cfg.gaussians_per_face > 1:
            loc["means"][nf:] = 0.3 * torch.randn(len(binding) - nf, 3, generator=gen)
        n = len(binding)
        sh0 = torch.full((n, 1, 3), (0.5 - 0.5) / SH_C0)
        shN = torch.zeros(n, (cfg.sh_degree + 1) ** 2 - 1, 3)
        raw = {**loc, "opacities": torch.logit(torch.full((n,), 0.1)), "sh0": sh0, "shN": shN}
        self.params = {k: torch.nn.Parameter(v.to(self.device)) for k, v in raw.items()}
        self.sstate = self.strategy.initialize_state(binding, self.device)
        self.tuned = {
            k: torch.nn.Parameter(self.all_params[k][: self.Ttrain].clone()) for k in self.frame_keys
        }
        V = self.subject.num_vertices
        self.offsets = torch.nn.Parameter(
            torch.zeros(self.Ttrain if cfg.dynamic_offsets else 0, V, 3, device=self.device)
        )
        self._make_optim()

    def _gaussian_lrs(self, step: int) -> dict[str, float]:
        """The Gaussians' rates at ``step``: the means' decay exponentially over the planned length."""
        c = self.cfg
        f = self.progress(step)  # continuous across re-plans
        return {
            "means": math.exp(math.log(c.lr_means) + f * (math.log(c.lr_means_final) - math.log(c.lr_means))),
            "quats": c.lr_quats,
            "scales": c.lr_scales,
            "opacities": c.lr_opacities,
            "sh0": c.lr_sh0,
            "shN": c.lr_shN,
        }

    def _tracking_lr(self, name: str) -> float:
        """A tracking group's rate: the per-frame parameters by kind, or the dynamic offsets'."""
        return self.cfg.lr_offsets if name == "offsets" else M.param_lr(name, self.cfg)

    def _make_optim(self) -> None:
        cfg = self.cfg
        lrs = self._gaussian_lrs(0)
        self.optimizers = {
            k: torch.optim.Adam([{"params": [self.params[k]], "lr": lrs[k], "name": k}], eps=1e-15)
            for k in self.params
        }
        extra = []
        if cfg.finetune_params:  # one group per parameter kind, each at its own rate
            for k, v in self.tuned.items():
                extra.append({"params": [v], "lr": self._tracking_lr(k), "name": k})
        if cfg.dynamic_offsets:
            extra.append({"params": [self.offsets], "lr": self._tracking_lr("offsets"), "name": "offsets"})
        self.extra_opt = torch.optim.Adam(extra) if extra else None

    def state_dict(self) -> dict:
        return {
            "gaussians": {k: v.detach() for k, v in self.params.items()},
            "strategy": dict(self.sstate),  # each Gaussian's triangle (binding); default: grad2d, count
            "tracking": {k: v.detach() for k, v in self.tuned.items()},
            "offsets": self.offsets.detach(),
            "optim": {k: o.state_dict() for k, o in self.optimizers.items()},
            "tracking_optim": None if self.extra_opt is None else self.extra_opt.state_dict(),
            "sh_reached": self.sh_reached, "strategy_meta": self.strategy.meta_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        dev = self.device
        tracking, offsets = state["tracking"], state["offsets"]
        want = {k: tuple(self.all_params[k][: self.Ttrain].shape) for k in self.frame_keys}
        have = {k: tuple(v.shape) for k, v in tracking.items()}
        n_off = self.Ttrain if self.cfg.dynamic_offsets else 0
        if have != want or tuple(offsets.shape) != (n_off, self.subject.num_vertices, 3):
            raise InputError(
                self.out / CKPT if self.out else None,
                f"its per-frame parameters {have} do not fit this sequence's {self.Ttrain} training "
                f"frames {want}: resume with the sequence the run was trained on",
            )
        self.params = {k: torch.nn.Parameter(v.to(dev, copy=True)) for k, v in state["gaussians"].items()}
        self.sstate = {k: v.to(dev, copy=True) for k, v in state["strategy"].items()}
        self.tuned = {k: torch.nn.Parameter(v.to(dev, copy=True)) for k, v in tracking.items()}
        self.offsets = torch.nn.Parameter(offsets.to(dev, copy=True))
        self.sh_reached = int(state.get("sh_reached", 0))  # checkpoints before it: no floor
        self.strategy.load_meta_state(state.get("strategy_meta", {}))
        self._make_optim()
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optim"][k])
        if self.extra_opt is not None:
            self.extra_opt.load_state_dict(state["tracking_optim"])

    def finite(self) -> bool:
        ts = [*self.params.values(), *self.tuned.values(), self.offsets]
        return bool(torch.stack([torch.isfinite(t.detach()).all() for t in ts]).all())

    # -- schedules: functions of the step and the planned length --------------------------------------
    def plan(self, total: int) -> None:
        self.total = int(total)
        self.strategy.schedule = self.strategy.plan_schedule(self.total, self.cfg.schedule_ref_iters)

    def speed_factor(self) -> float:
        return 0.7  # densification grows the model: later steps are slower than the warm-up's

    def sh_degree_at(self, step: int) -> int:
        """One degree more every ``sh_degree_interval`` (scaled) steps, never below a degree already
        trained at (a re-plan that lengthens the run lengthens the interval)."""
        c = self.cfg
        every = max(1, round(c.sh_degree_interval * self.total / c.schedule_ref_iters))
        return max(min(step // every, c.sh_degree), self.sh_reached)

    # -- one step -------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[int, int, torch.Tensor, torch.Tensor]:
        """Step ``step``'s (frame, camera), its target on the background, and that background."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed % 2**32, step])
        t, c = self.pairs[int(rng.integers(len(self.pairs)))]
        bg_rgb = rng.random(3)
        img, mask = (x if x is None else x.to(self.device) for x in self.views[(t, c)])
        bg = self.bg
        if cfg.random_background and mask is not None:
            bg = torch.as_tensor(bg_rgb, dtype=torch.float32, device=self.device)
        gt = img if mask is None else img * mask + bg * (1 - mask)
        return t, c, gt, bg

    def loss(self, step: int) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        t, c, gt, bg = self.batch(step)
        cam = self.seq.cameras[t][c]
        vm = torch.as_tensor(cam.viewmat, dtype=torch.float32, device=self.device)[None]
        K = torch.as_tensor(cam.K, dtype=torch.float32, device=self.device)[None]
        verts = self.posed(t)
        sh = self.sh_reached = self.sh_degree_at(step)
        rgb, alpha, meta = M.render(
            self.params,
            self.sstate["binding"],
            verts,
            self.faces,
            vm,
            K,
            cam.width,
            cam.height,
            sh,
            bg,
            cfg.backend,
        )
        out = rgb[0]
        parts = {
            "l1": (1 - cfg.ssim_lambda) * (out - gt).abs().mean(),
            "ssim": cfg.ssim_lambda * (1 - ssim_map(out, gt).mean()),
        }
        if self.perceptual is not None:
            parts["perceptual"] = cfg.lambda_perceptual * self.perceptual(out, gt)
        if cfg.lambda_xyz > 0:
            parts["xyz"] = cfg.lambda_xyz * B.position_reg(self.params["means"], cfg.threshold_xyz)
        if cfg.lambda_scale > 0:
            parts["scale"] = cfg.lambda_scale * B.scale_reg(self.params["scales"], cfg.threshold_scale)
        for name, term in self.strategy.regularizer(self.params, self.sstate).items():  # mcmc's penalties
            parts[name] = term
        if cfg.lambda_temporal > 0:
            tl = out.new_zeros(())
            if cfg.finetune_params:
                for k in self.frame_keys:
                    tl = tl + temporal_terms(self.tuned[k], None, cfg.temporal_first, cfg.temporal_second)
            if cfg.dynamic_offsets:
                tl = tl + temporal_terms(
                    self.offsets, torch.tensor([t]), cfg.temporal_first, cfg.temporal_second
                )
            parts["temporal"] = cfg.lambda_temporal * tl
        loss = sum(parts.values())
        self._info = dict(meta, width=cam.width, height=cam.height, n_cameras=1)
        self.strategy.step_pre_backward(self.params, self.optimizers, self.sstate, step, self._info)
        mse = ((out.detach() - gt) ** 2).mean()
        terms = {k: v.detach() for k, v in parts.items()}
        return loss, terms | {"psnr": -10 * torch.log10(mse.clamp_min(1e-10))}

    def update(self, loss: torch.Tensor, step: int, lr_scale: float) -> dict:
        for k, lr in self._gaussian_lrs(step).items():
            self.optimizers[k].param_groups[0]["lr"] = lr * lr_scale
        if self.extra_opt is not None:
            for g in self.extra_opt.param_groups:
                g["lr"] = self._tracking_lr(g["name"]) * lr_scale
        loss.backward()
        for o in [*self.optimizers.values(), *([self.extra_opt] if self.extra_opt else [])]:
            o.step()
            o.zero_grad(set_to_none=True)
        info, self._info = self._info, None
        edits = self.strategy.step_post_backward(self.params, self.optimizers, self.sstate, step, info)
        return {"num_gaussians": len(self.sstate["binding"]), **edits}

    # -- exports --------------------------------------------------------------------------------------
    def save_outputs(self) -> None:
        self.save_avatar()
        self._write_info({"finished": False})

    def finish(self, result: dict) -> dict:
        return self._write_info(
            {
                "finished": True,
                "iters": result["steps"],
                "planned_iters": result["planned_steps"],
                "stopped_by": result["stopped_by"],
                "train_seconds": result["seconds"],
                "wall_seconds_this_process": round(time.perf_counter() - self._t0, 2),
                "num_gaussians": len(self.sstate["binding"]),
                "nonfinite_skipped": result["nonfinite_skipped"],
                "rollbacks": result["rollbacks"],
                "events": result["events"],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "peak_cuda_mb": (
                    round(torch.cuda.max_memory_allocated() / 2**20, 1)
                    if self.device.type == "cuda"
                    else None
                ),
            }
        )

    def _run_dir(self, out) -> Path:
        out = out if out is not None else (self.loop.out if self.loop is not None else self.out)
        if out is None:
            raise ValueError("no run folder")
        return Path(out)

    def save_avatar(self, out: str | Path | None = None) -> None:
        """``OUT/avatar.pt`` (default: the run folder): everything evaluation and animation need."""
        save_checkpoint(
            self._run_dir(out) / "avatar.pt",
            {
                "params": {k: v.detach() for k, v in self.params.items()},
                "binding": self.sstate["binding"],
                "faces_idx": self.faces_idx,
                "frame_table": {k: v.detach() for k, v in self.frame_table().items()},
                "offsets": self.offsets.detach(),
                "sh_degree": self.cfg.sh_degree,
                "static_offset": getattr(self.subject, "static_offset", None),
            },
        )

    def _write_info(self, extra: dict, out: str | Path | None = None) -> dict:
        info = {
            "sequence": str(self.seq.root),
            "format": self.seq.format,
            "subject": self.cfg.subject or self.seq.model,
            **self.split,
            "camera_names": self.seq.camera_names,
            "config": asdict(self.cfg),
            **extra,
        }
        run = self._run_dir(out)
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / INFO, info)
        return info


def read_run(run: str | Path) -> dict:
    p = Path(run) / INFO
    if not p.is_file():
        raise InputError(run, f"not an avatar run (no {INFO})")
    info = json.loads(p.read_text())
    info["avatar"] = load_checkpoint(Path(run) / "avatar.pt")
    return info


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
