"""Fitting an avatar to a sequence: ``fit_avatar(seq, cfg, out, resume=False)``.

Held-out data is fixed at the start and recorded in ``RUN/avatar.json``: the last
``holdout_frames`` fraction of the frames (self-reenactment) and every ``holdout_cameras``-th camera
(indices ``i % n == 0``; novel views). Training draws (frame, camera) pairs from the rest only.

One step renders one training view: the subject posed with that frame's parameters (fine-tuned when
``finetune_params``), plus its dynamic offsets (``dynamic_offsets``), carries the bound Gaussians.
Loss: (1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM) + lambda_perceptual * VGG19/LPIPS (switch 1) +
GaussianAvatars' local position/scale regularisers + lambda_temporal * (first and second order terms
on the fine-tuned per-frame parameters and the dynamic offsets) (switch 3). Densification is
:class:`~gausslift.avatar.strategy.AvatarStrategy` (region-adaptive when
``adaptive_densify_ratio > 0``: switch 2), with gsplat's schedule scaled to the run's length.
A ``minutes`` budget measures the speed over the first steps and plans the length from it.
Checkpoints (``RUN/checkpoint.pt``) every ``checkpoint_minutes`` and at the end; ``resume`` continues.
"""

from __future__ import annotations

import json
import math
import resource
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gausslift.avatar import binding as B
from gausslift.avatar import model as M
from gausslift.avatar.config import AvatarConfig
from gausslift.avatar.data import Sequence, check_against_subject, load_image
from gausslift.avatar.strategy import AvatarStrategy, face_weights
from gausslift.avatar.temporal import temporal_terms
from gausslift.config import save_config
from gausslift.errors import InputError
from gausslift.fit.losses import ssim_map
from gausslift.fit.strategy import scaled_schedule
from gausslift.ioutil import atomic_write_json
from gausslift.progress import progress as progress_bar
from gausslift.train.budget import Budget
from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gausslift.train.device import resolve_device, set_threads

CKPT, INFO, CONFIG = "checkpoint.pt", "avatar.json", "config.yaml"
SH_C0 = 0.28209479177387814


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


class AvatarTrainer:
    def __init__(self, seq: Sequence, subject, cfg: AvatarConfig, out: str | Path):
        check_against_subject(seq, subject)
        if cfg.threads > 0:
            set_threads(cfg.threads)
        self.seq, self.subject, self.cfg, self.out = seq, subject, cfg, Path(out)
        self.device = resolve_device(cfg.device, cfg.backend)
        self.subject.to(self.device)
        self.split = holdout(seq, cfg)
        self.bg = torch.tensor(
            [1.0, 1.0, 1.0] if cfg.background == "white" else [0.0] * 3, device=self.device
        )
        self.views = load_frames(seq, self.split["train_frames"], self.split["train_cameras"], self.bg)
        self.pairs = list(self.views)
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
        self.strategy = AvatarStrategy(
            cfg.strategy,
            scaled_schedule(cfg.strategy, cfg.iters, cfg.schedule_ref_iters),
            self.scene_scale,
            k,
            w,
        )
        self.perceptual = None
        if cfg.lambda_perceptual > 0:
            from gausslift.fit.losses import Perceptual

            self.perceptual = Perceptual(cfg, self.device)  # reads use_vgg_loss / use_lpips_loss / weights
        self.gen = torch.Generator().manual_seed(cfg.seed)

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

    # -- state ----------------------------------------------------------------------------------------
    def _fresh(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        nf = len(self.faces)
        binding = torch.arange(nf).repeat(cfg.gaussians_per_face)
        loc = B.init_local(binding, cfg.init_scale)
        if cfg.gaussians_per_face > 1:
            loc["means"][nf:] = 0.3 * torch.randn(len(binding) - nf, 3, generator=self.gen)
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
        self.step, self.total = 0, cfg.iters
        self.clock = Budget(minutes=cfg.minutes)

    def _make_optim(self) -> None:
        cfg = self.cfg
        lrs = {
            "means": cfg.lr_means,
            "quats": cfg.lr_quats,
            "scales": cfg.lr_scales,
            "opacities": cfg.lr_opacities,
            "sh0": cfg.lr_sh0,
            "shN": cfg.lr_shN,
        }
        self.optimizers = {
            k: torch.optim.Adam([{"params": [self.params[k]], "lr": lrs[k], "name": k}], eps=1e-15)
            for k in self.params
        }
        extra = []
        if cfg.finetune_params:
            for k, v in self.tuned.items():
                extra.append({"params": [v], "lr": M.param_lr(k, cfg), "name": k})
        if cfg.dynamic_offsets:
            extra.append({"params": [self.offsets], "lr": cfg.lr_offsets})
        self.extra_opt = torch.optim.Adam(extra) if extra else None

    def _checkpoint(self) -> None:
        s = self.strategy.schedule
        save_checkpoint(
            self.out / CKPT,
            {
                "params": {k: v.detach() for k, v in self.params.items()},
                "state": self.sstate,
                "tuned": {k: v.detach() for k, v in self.tuned.items()},
                "offsets": self.offsets.detach(),
                "optim": {k: o.state_dict() for k, o in self.optimizers.items()},
                "extra_opt": None if self.extra_opt is None else self.extra_opt.state_dict(),
                "step": self.step,
                "total": self.total,
                "budget": self.clock.state(),
                "schedule": [s.refine_start, s.refine_stop, s.refine_every, s.reset_every],
                "rng": rng_state(self.gen),
            },
        )

    def _restore(self) -> None:
        d = load_checkpoint(self.out / CKPT)
        dev = self.device
        self.params = {k: torch.nn.Parameter(v.to(dev)) for k, v in d["params"].items()}
        self.sstate = {k: v.to(dev) for k, v in d["state"].items()}
        self.tuned = {k: torch.nn.Parameter(v.to(dev)) for k, v in d["tuned"].items()}
        self.offsets = torch.nn.Parameter(d["offsets"].to(dev))
        self._make_optim()
        for k, o in self.optimizers.items():
            o.load_state_dict(d["optim"][k])
        if self.extra_opt is not None and d["extra_opt"] is not None:
            if len(d["extra_opt"]["param_groups"]) == len(self.extra_opt.param_groups):
                self.extra_opt.load_state_dict(d["extra_opt"])
            else:  # a checkpoint from before the per-kind tracking rates (one group for all)
                warnings.warn(
                    f"{self.out / CKPT}: tracking optimiser state from an older layout; "
                    "the fine-tuned parameters continue with fresh Adam moments",
                    stacklevel=2,
                )
        self.step, self.total = d["step"], d["total"]
        from gausslift.fit.strategy import Schedule

        self.strategy.schedule = Schedule(*d["schedule"])
        set_rng_state(d["rng"], self.gen)
        self.clock = Budget(minutes=self.cfg.minutes)
        self.clock.restore(d["budget"])

    # -- one step -------------------------------------------------------------------------------------
    def _lr(self) -> None:
        c = self.cfg
        f = min(self.step / max(self.total, 1), 1.0)
        lr = math.exp(math.log(c.lr_means) + f * (math.log(c.lr_means_final) - math.log(c.lr_means)))
        self.optimizers["means"].param_groups[0]["lr"] = lr

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
                with torch.no_grad():
                    self._vcache = {}
            if t not in self._vcache:
                with torch.no_grad():
                    self._vcache[t] = self._verts(t, self.all_params)
            v = self._vcache[t]
        return v + self.offsets[t] if cfg.dynamic_offsets else v

    def train_step(self) -> dict:
        cfg = self.cfg
        t, c = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=self.gen))]
        img, mask = (x if x is None else x.to(self.device) for x in self.views[(t, c)])
        bg = self.bg
        if cfg.random_background and mask is not None:
            bg = torch.rand(3, generator=self.gen).to(self.device)
        gt = img if mask is None else img * mask + bg * (1 - mask)
        cam = self.seq.cameras[t][c]
        vm = torch.as_tensor(cam.viewmat, dtype=torch.float32, device=self.device)[None]
        K = torch.as_tensor(cam.K, dtype=torch.float32, device=self.device)[None]
        sh = min(
            self.step // max(1, round(cfg.sh_degree_interval * self.total / cfg.schedule_ref_iters)),
            cfg.sh_degree,
        )
        self._lr()
        verts = self.posed(t)
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
        info = dict(meta, width=cam.width, height=cam.height, n_cameras=1)
        self.strategy.step_pre_backward(self.params, self.optimizers, self.sstate, self.step, info)
        if not bool(torch.isfinite(loss)):
            return {"skipped": 1}
        loss.backward()
        for o in [*self.optimizers.values(), *([self.extra_opt] if self.extra_opt else [])]:
            o.step()
            o.zero_grad(set_to_none=True)
        edits = self.strategy.step_post_backward(self.params, self.optimizers, self.sstate, self.step, info)
        mse = float(((out.detach() - gt) ** 2).mean())
        return {"loss": float(loss.detach()), "psnr": -10 * math.log10(max(mse, 1e-10)), **edits}

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, progress: bool = True) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._restore()
        else:
            self._fresh()
        save_config(cfg, self.out / CONFIG)
        self._write_info({"finished": False})
        planned = cfg.minutes <= 0 or resume
        last_ckpt, t_start, warm = time.perf_counter(), time.perf_counter(), None
        bar = progress_bar(
            total=self.total if planned else None, initial=self.step, disable=not progress, desc="avatar fit"
        )
        log = open(self.out / "log.jsonl", "a")
        try:
            while True:
                if cfg.minutes > 0:
                    if self.clock.done(self.step, reserve=min(10.0, 0.03 * cfg.minutes * 60)):
                        break
                    if not planned and self.step == 5:
                        warm = (time.perf_counter(), self.step)
                    if (
                        not planned
                        and warm
                        and time.perf_counter() - warm[0] > min(20.0, 0.05 * cfg.minutes * 60)
                    ):
                        rate = (self.step - warm[1]) / (time.perf_counter() - warm[0])
                        self.total = self.step + max(1, int(0.7 * rate * self.clock.left()))
                        self.strategy.schedule = scaled_schedule(
                            cfg.strategy, self.total, cfg.schedule_ref_iters
                        )
                        planned, bar.total = True, self.total
                elif self.step >= self.total:
                    break
                stats = self.train_step()
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 and "loss" in stats:
                    row = {
                        "step": self.step,
                        "elapsed_s": round(self.clock.elapsed(), 2),
                        "num_gaussians": len(self.sstate["binding"]),
                        **stats,
                    }
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix(psnr=f"{stats['psnr']:.2f}", n=row["num_gaussians"])
                if time.perf_counter() - last_ckpt > cfg.checkpoint_minutes * 60:
                    self._checkpoint()
                    last_ckpt = time.perf_counter()
        except KeyboardInterrupt:  # keep everything so far: resumable with --resume
            self._checkpoint()
            raise
        finally:
            bar.close()
            log.close()
        self._checkpoint()
        self.save_avatar()
        return self._write_info(
            {
                "finished": True,
                "iters": self.step,
                "train_seconds": round(self.clock.elapsed(), 2),
                "wall_seconds_this_process": round(time.perf_counter() - t_start, 2),
                "num_gaussians": len(self.sstate["binding"]),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "peak_cuda_mb": (
                    round(torch.cuda.max_memory_allocated() / 2**20, 1)
                    if self.device.type == "cuda"
                    else None
                ),
            }
        )

    def save_avatar(self) -> None:
        """``RUN/avatar.pt``: everything evaluation and animation need."""
        save_checkpoint(
            self.out / "avatar.pt",
            {
                "params": {k: v.detach() for k, v in self.params.items()},
                "binding": self.sstate["binding"],
                "faces_idx": self.faces_idx,
                "frame_table": {k: v.detach() for k, v in self.frame_table().items()},
                "offsets": self.offsets.detach(),
                "sh_degree": self.cfg.sh_degree,
            },
        )

    def _write_info(self, extra: dict) -> dict:
        info = {
            "sequence": str(self.seq.root),
            "format": self.seq.format,
            "subject": self.cfg.subject or self.seq.model,
            **self.split,
            "camera_names": self.seq.camera_names,
            "config": asdict(self.cfg),
            **extra,
        }
        atomic_write_json(self.out / INFO, info)
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
