"""``gausslift idfield train DATA --out RUN``: the identity field as an auto-decoder on the one training loop.

Each step draws ``frames`` (identity, frame) pairs and ``views`` of their cameras, decodes each identity's
code into Gaussians on that frame's posed mesh (from prep's ``mesh.ply``), renders them on black and
compares with prep's face-masked images: ``(1 - ssim) L1 + ssim (1 - SSIM)`` plus ``alpha`` x L1 of the
render's alpha against the face mask, ``code_reg`` x the mean squared code, and from
``scale_reg_start`` x the planned steps on the scale regulariser (``scale_reg`` = 1e-3 x
GaussianAvatars' term on the local scales). Adam, cosine learning rates. ``RUN/model.pt`` is written with
every checkpoint; every ``snapshot_minutes`` of training a copy goes to ``RUN/snapshots/`` (for the
overfit curve).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from gausslift.binding import scale_reg
from gausslift.idfield import field as fd
from gausslift.idfield.config import IdFieldConfig
from gausslift.idfield.data import Frame, load_dataset
from gausslift.idfield.model import MODEL_FILE, IdField, identity_key, world_stats
from gausslift.metrics import ssim as ssim_fn
from gausslift.train.loop import Loop, LoopOptions, Task

SNAPSHOTS = "snapshots"


def image_loss(rgb, alpha, img, mask, cfg: IdFieldConfig) -> tuple[torch.Tensor, dict]:
    """Render (rgb [C,H,W,3] on black, alpha [C,H,W,1]) against face-masked images and masks."""
    l1 = (rgb - img).abs().mean()
    ls = 1 - ssim_fn(rgb, img).mean() if cfg.ssim > 0 else rgb.new_zeros(())
    la = (alpha[..., 0] - mask).abs().mean()
    loss = (1 - cfg.ssim) * l1 + cfg.ssim * ls + cfg.alpha * la
    return loss, {"l1": l1.detach(), "ssim_loss": ls.detach(), "alpha_l1": la.detach()}


class IdFieldTask(Task):
    name = "idfield"
    columns = ("step", "loss", "l1", "ssim_loss", "alpha_l1", "scale_reg", "elapsed_s")
    shape_keys = ("subject", "region", "res", "const_res", "channels", "code_dim", "w_dim", "map_layers")

    def __init__(self, cfg: IdFieldConfig, frames: list[Frame], subject, out: str | Path):
        self.cfg, self.frames, self.subject, self.out = cfg, frames, subject, Path(out)
        self.names = sorted({f.identity for f in frames})
        self.id_index = np.array([self.names.index(f.identity) for f in frames])
        self.total = int(cfg.iters)
        self.verts = [torch.as_tensor(f.verts) for f in frames]
        self.train_seconds, self._t = 0.0, None
        self.next_snapshot = float(cfg.snapshot_minutes)

    def config(self):
        return self.cfg

    def start(self) -> None:
        c = self.cfg
        torch.manual_seed(c.seed)
        self.rng = np.random.default_rng(c.seed)
        T = np.stack([f.world_from_subject for f in self.frames])
        dist = np.array([np.linalg.norm(np.linalg.inv(f.viewmats)[:, :3, 3], axis=-1).mean()
                         for f in self.frames[:50]])
        world = world_stats(T, dist)
        # each training identity's mesh coefficients (interpolation poses the in-between meshes with them)
        key = identity_key(self.subject)
        world["identity_coeffs"] = {f.identity: f.params[key].reshape(-1).tolist() for f in self.frames
                                    if key in f.params}
        self.model = IdField.fresh(c, self.subject, self.names, world).to(self.device)
        self._optim()

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def _optim(self, state=None):
        m = self.model
        for t in m.P.values():
            t.requires_grad_(True)
        m.codes.requires_grad_(True)
        self.opt = torch.optim.Adam([{"params": list(m.P.values()), "base": self.cfg.lr},
                                     {"params": [m.codes], "base": self.cfg.lr_code}], betas=(0.9, 0.99))
        if state is not None:
            self.opt.load_state_dict(state)

    def state_dict(self) -> dict:
        m = self.model
        return {"generator": {k: v.detach().clone() for k, v in m.P.items()},
                "codes": m.codes.detach().clone(),
                "names": list(m.names), "world": m.world, "optim": self.opt.state_dict(),
                "rng": self.rng.bit_generator.state, "train_seconds": self.train_seconds,
                "next_snapshot": self.next_snapshot}

    def load_state_dict(self, state: dict) -> None:
        P = {k: v.clone() for k, v in state["generator"].items()}
        self.model = IdField(self.cfg, self.subject, P, state["codes"].clone(), state["names"],
                             state["world"]).to(self.device)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.next_snapshot = float(state.get("next_snapshot", self.cfg.snapshot_minutes))
        self._optim(state["optim"])

    def plan(self, total: int) -> None:
        self.total = int(total)

    def loss(self, step: int):
        c, m = self.cfg, self.model
        if self._t is None:
            self._t = time.perf_counter()
        pick = self.rng.choice(len(self.frames), size=min(c.frames, len(self.frames)), replace=False)
        ids = torch.as_tensor(self.id_index[pick], device=self.device)
        raw = m.raw(m.codes[ids])
        total, logs, lsr = 0.0, {}, 0.0
        for b, i in enumerate(pick):
            f = self.frames[i]
            views = self.rng.choice(len(f.Ks), size=min(c.views, len(f.Ks)), replace=False)
            img, mask, vm, K = (t.to(self.device) for t in f.torch_views(views))
            verts = self.verts[i].to(self.device)
            g = fd.gaussians({k: v[b] for k, v in raw.items()}, m.region, m.region.select(verts))
            rgb, alpha = fd.render(g, vm, K, img.shape[2], img.shape[1])
            li, lg = image_loss(rgb, alpha, img, mask, c)
            total = total + li / len(pick)
            lsr = lsr + scale_reg(g["local_log_scales"], c.scale_threshold) / len(pick)
            for k, v in lg.items():
                logs[k] = logs.get(k, 0.0) + v / len(pick)
        on = step >= c.scale_reg_start * self.total
        code_reg = (m.codes[ids] ** 2).mean()
        total = total + c.code_reg * code_reg + (c.scale_reg * lsr if on else 0.0)
        return total, logs | {"scale_reg": lsr.detach(), "scale_reg_on": float(on)}

    def update(self, loss, step: int, lr_scale: float) -> dict:
        frac = min(step / max(self.total, 1), 1.0)
        f = lr_scale * (self.cfg.lr_end + (1 - self.cfg.lr_end) * 0.5 * (1 + np.cos(np.pi * frac)))
        for g in self.opt.param_groups:
            g["lr"] = g["base"] * f
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"lr": self.cfg.lr * f}

    def after_step(self, step: int, log) -> None:
        now = time.perf_counter()
        if self._t is not None:
            self.train_seconds += now - self._t
        self._t = now
        if self.cfg.snapshot_minutes > 0 and self.train_seconds >= self.next_snapshot * 60:
            self.model.save(self.out / SNAPSHOTS / f"model_{int(round(self.next_snapshot)):04d}min.pt")
            self.next_snapshot += self.cfg.snapshot_minutes

    def finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.model.P.values()) and bool(
            torch.isfinite(self.model.codes).all())

    def save_outputs(self) -> None:
        self.model.save(self.out / MODEL_FILE)


def train(cfg: IdFieldConfig, data: str | Path, out: str | Path, opts: LoopOptions,
          identities: list[str] | None = None, device: str | None = "auto") -> dict:
    """``device``: auto | cpu | cuda | cuda:N (``gausslift.train.device.resolve_device``); on CUDA the
    renders go through gsplat (the ``gsplat`` extra)."""
    from gausslift.subjects import load_subject
    from gausslift.train.device import DeviceError, gsplat_installed, resolve_device
    from gausslift.train.dist import setup_dist

    dev = resolve_device(device, "auto")  # auto: CUDA only where gsplat can render on it
    if dev.type == "cuda" and not gsplat_installed():
        raise DeviceError("idfield train renders with gsplat on CUDA: pip install 'gausslift[gsplat]' "
                          "(or --device cpu)")
    frames = load_dataset(data, identities, progress_bar=not opts.quiet)
    dist = setup_dist(dev)
    return Loop(IdFieldTask(cfg, frames, load_subject(cfg.subject), out), out, opts, dist).run()
