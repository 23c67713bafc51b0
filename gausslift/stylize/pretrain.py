"""``gausslift stylize pretrain``: the latent -> mesh decoder and the mesh -> latent encoder of a
parametric subject, trained on its random samples (fresh every step) on the one training loop.

Each step draws ``batch`` random (identity, expression) samples (pose at zero) and ``samples`` dense
surface points (area-weighted random triangles and barycentrics: the subdivided surface, not only the
vertices). The decoder's loss is the mean squared distance of those points on its mesh and on the
subject's; the encoder's is the squared error of the latents it reads from the true mesh's points
(at its ``enc_points`` fixed surface samples; expression weights count ``expr_weight`` times).
Before step 0 both linear parts are warm-started by ridge regression on ``warm_samples`` samples.
At the end ``BASE/check.json`` scores both on ``holdout`` held-out samples (a seed of their own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.ioutil import atomic_path, atomic_write_json
from gausslift.stylize import model as M
from gausslift.train.loop import Loop, LoopOptions, Task

BASE_FILE = "base.pt"
BASE_FORMAT = "gausslift-stylize-base"
HOLDOUT_SEED = 1_000_003
LINEAR = ("template", "L", "c")  # present in the decoder (template, L) or the encoder (template, L, c)


@dataclass
class PretrainConfig:
    subject: str = "ict"
    seed: int = 0
    batch: int = 8
    samples: int = 8192
    hidden: int = 128
    enc_points: int = 1024
    enc_hidden: int = 256
    warm_samples: int = 4096
    lr: float = 3e-5  # the non-linear parts
    lr_linear: float = 3e-6  # the warm-started linear parts (template, L; the encoder's L, c)
    expr_weight: float = 4.0
    holdout: int = 100
    iters: int = 2000
    minutes: float = 0.0
    log_every: int = 50


def mm_per_unit(subject) -> float:
    u = (subject.units or "").split(";")[0].strip()
    return {"cm": 10.0, "m": 1000.0, "mm": 1.0}.get(u, 1.0)


def head_scale(subject) -> float:
    with torch.no_grad():
        v = subject(subject.zero_params(1)).vertices[0]
    return float((v.max(0).values - v.min(0).values).norm() / 2)


class PretrainTask(Task):
    name = "stylize-pretrain"
    columns = ("step", "loss", "decoder", "encoder", "elapsed_s")
    shape_keys = ("subject", "hidden", "enc_points", "enc_hidden")

    def __init__(self, cfg: PretrainConfig, subject, out: str | Path):
        self.cfg, self.subject, self.out = cfg, subject, Path(out)
        self.keys = M.latent_keys(subject)
        self.Z, self.V = M.latent_size(subject), subject.num_vertices
        self.total = int(cfg.iters)

    def config(self):
        return self.cfg

    def start(self) -> None:
        c, s = self.cfg, self.subject
        torch.manual_seed(c.seed)
        self.rng = np.random.default_rng(c.seed)
        scale = head_scale(s)
        self.dec = M.init_decoder(self.Z, self.V, c.hidden, scale, self.rng)
        self.enc = M.init_encoder(c.enc_points, self.Z, c.enc_hidden, scale, self.rng)
        with torch.no_grad():
            t = s(s.zero_params(1)).vertices[0]
        self.enc_samples = M.surface_samples(t.numpy(), s.faces.numpy(), c.enc_points, self.rng)
        with torch.no_grad():  # the template starts at the mean of 64 samples
            self.dec["template"] = M.meshes(s, M.sample_latents(s, self.rng, 64)).mean(0)
        if c.warm_samples > 0:
            M.warm_start(self.dec, self.enc, s, self.enc_samples, self.rng, c.warm_samples)
        self._optim()

    def _params(self):
        return [self.dec[k] for k in M.DECODER_BASE] + [v for k, v in self.enc.items() if k != "scale"]

    def _optim(self, state=None):
        for t in self._params():
            t.requires_grad_(True)
        lin = [d[k] for d in (self.dec, self.enc) for k in LINEAR if k in d]
        rest = [t for t in self._params() if not any(t is u for u in lin)]
        self.opt = torch.optim.Adam(
            [{"params": lin, "base": self.cfg.lr_linear}, {"params": rest, "base": self.cfg.lr}]
        )
        if state is not None:
            self.opt.load_state_dict(state)

    def state_dict(self) -> dict:
        return {
            "decoder": {k: v.detach().clone() for k, v in self.dec.items()},
            "encoder": {k: v.detach().clone() for k, v in self.enc.items()},
            "enc_samples": list(self.enc_samples),
            "optim": self.opt.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.dec = {k: v.clone() for k, v in state["decoder"].items()}
        self.enc = {k: v.clone() for k, v in state["encoder"].items()}
        self.enc_samples = tuple(state["enc_samples"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self._optim(state["optim"])

    def plan(self, total: int) -> None:
        self.total = int(total)

    def loss(self, step: int):
        c, s = self.cfg, self.subject
        p = M.sample_latents(s, self.rng, c.batch)
        z, v = M.latent(p, self.keys).float(), M.meshes(s, p)
        fi, bary = M.surface_samples(v[0].numpy(), s.faces.numpy(), c.samples, self.rng)
        pred = M.base_decode(self.dec, z)
        l_dec = ((M.points(pred, s.faces, fi, bary) - M.points(v, s.faces, fi, bary)) ** 2).sum(-1).mean()
        zhat = M.encode(self.enc, M.points(v, s.faces, *self.enc_samples))
        w = torch.ones(self.Z)
        if "expression" in self.keys:
            w[-s.param_shapes["expression"][0] :] = c.expr_weight
        l_enc = (w * (zhat - z) ** 2).mean()
        return l_dec / self.dec["scale"] ** 2 * 1e4 + l_enc, {
            "decoder": l_dec.detach(),
            "encoder": l_enc.detach(),
        }

    def update(self, loss, step: int, lr_scale: float) -> dict:
        frac = min(step / max(self.total, 1), 1.0)
        f = lr_scale * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        for g in self.opt.param_groups:
            g["lr"] = g["base"] * f
        lr = self.cfg.lr * f
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"lr": lr}

    def finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self._params())

    def save_outputs(self) -> None:
        data = {
            "format": BASE_FORMAT,
            "subject": self.cfg.subject,
            "latent_keys": list(self.keys),
            "decoder": {k: v.detach().clone() for k, v in self.dec.items()},
            "encoder": {k: v.detach().clone() for k, v in self.enc.items()},
            "enc_samples": [t.clone() for t in self.enc_samples],
        }
        with atomic_path(self.out / BASE_FILE) as tmp:
            torch.save(data, tmp)

    def finish(self, result: dict) -> dict:
        check = holdout_check(self.subject, self.dec, self.enc, self.enc_samples, self.cfg.holdout)
        result = result | {"check": check}
        atomic_write_json(self.out / "check.json", result)
        return result


@torch.no_grad()
def holdout_check(subject, dec, enc, enc_samples, n: int) -> dict:
    """Decoder mm error against the subject, encoder coefficient recovery, on ``n`` held-out samples."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    keys, mm = M.latent_keys(subject), mm_per_unit(subject)
    p = M.sample_latents(subject, rng, n)
    z, v = M.latent(p, keys).float(), M.meshes(subject, p)
    err = (M.base_decode(dec, z) - v).norm(dim=-1) * mm
    zhat = M.encode(enc, M.points(v, subject.faces, *enc_samples))
    out = {
        "samples": n,
        "decoder_mm_mean": float(err.mean()),
        "decoder_mm_p95": float(err.quantile(0.95)),
        "decoder_mm_max": float(err.max()),
    }
    start = 0
    for k in keys:
        d = subject.param_shapes[k][0]
        a, b = z[:, start : start + d], zhat[:, start : start + d]
        out[f"{k}_rmse"] = float(((a - b) ** 2).mean().sqrt())
        out[f"{k}_r2"] = float(1 - ((a - b) ** 2).sum() / ((a - a.mean(0)) ** 2).sum())
        start += d
    rec = (M.base_decode(dec, zhat) - v).norm(dim=-1) * mm
    out["encode_decode_mm_mean"] = float(rec.mean())
    return out


def read_base(path: str | Path) -> dict:
    from gausslift.errors import InputError

    p = Path(path)
    p = p / BASE_FILE if p.is_dir() else p
    if not p.is_file():
        raise InputError(
            p, "pretrained base not found (expected BASE/base.pt from 'gausslift stylize pretrain')"
        )
    d = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(d, dict) or d.get("format") != BASE_FORMAT:
        raise InputError(p, f"not a stylize base (format {BASE_FORMAT!r} expected)")
    return d


def pretrain(cfg: PretrainConfig, subject, out, opts: LoopOptions) -> dict:
    return Loop(PretrainTask(cfg, subject, out), out, opts).run()
