"""``gausslift stylize finetune``: a copy of the pretrained decoder fine-tuned on ONE example pair
(a neutral mesh and its stylised version, same topology), on the one training loop.

The loss terms are in :mod:`gausslift.stylize.losses`; each has a switch and a weight in
:class:`FinetuneConfig`. Distances are in units of 1% of the head's half-diagonal (about 1.5 mm on
ICT), so the weights do not depend on the model's units. ``train``: ``field`` (default) fine-tunes
only the decoder's style field (the latent part stays the pretrained one, so ``distill`` is zero),
``all`` fine-tunes every decoder weight (then ``distill`` keeps the latent part general).

Output: ``STY/style.pt`` (``gausslift.subjects.styled`` format: base spec, latent keys, the pretrained
and fine-tuned decoders, plus the encoder and the pair) written with every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path
from gausslift.stylize import features as F
from gausslift.stylize import losses as Ls
from gausslift.stylize import model as M
from gausslift.subjects.styled import FORMAT, STYLE_FILE, field, query
from gausslift.train.loop import Task

TERMS = ("vertex", "feature", "direction", "normal", "distill")


@dataclass
class FinetuneConfig:
    base: str = ""
    neutral: str = ""
    styled: str = ""
    train: str = "field"  # field | all
    vertex: bool = True
    w_vertex: float = 1.0
    feature: bool = True
    w_feature: float = 1.0
    direction: bool = True
    w_direction: float = 0.1
    normal: bool = True
    w_normal: float = 1.0
    distill: bool = True
    w_distill: float = 1.0
    field_points: int = 1024  # the style field's control points
    field_width: float = 0.7  # its Gaussian width, in control-point spacings
    query: str = "canonical"  # canonical: the field is read on the mean identity; posed: on the mesh
    style_model: str = "field"  # field (offset field) | jacobian (per-triangle Jacobians + Poisson solve)
    jacobian_rank: int = 4  # jacobian: rank of the latent-conditioned correction
    jacobian_init: str = "identity"  # jacobian: identity | transfer (the pair's deformation gradients)
    jacobian: bool = True  # jacobian branch: the Jacobians at z* against the pair's deformation gradients
    w_jacobian: float = 1.0
    encoder: str = "pyramid"  # pyramid | clip
    clip: str = ""  # folder of CLIP vision weights (encoder: clip)
    views: int = 3
    size: int = 64
    batch: int = 1
    samples: int = 4096
    lr: float = 1e-2
    seed: int = 0
    iters: int = 100
    minutes: float = 0.0
    log_every: int = 25


class FinetuneTask(Task):
    name = "stylize-finetune"
    columns = ("step", "loss", *TERMS, "elapsed_s")
    shape_keys = ("train", "field_points", "query")

    def __init__(self, cfg: FinetuneConfig, base: dict, subject, neutral, styled, out):
        if cfg.train not in ("field", "all"):
            raise InputError(None, f"train must be 'field' or 'all', got {cfg.train!r}")
        V = subject.num_vertices
        for what, m in (("neutral", neutral), ("styled", styled)):
            if np.shape(m) != (V, 3):
                raise InputError(
                    None,
                    f"the {what} mesh has {np.shape(m)[0]} vertices; the subject "
                    f"{base['subject']!r} has {V} (the pair must share its topology)",
                )
        self.cfg, self.base, self.subject, self.out = cfg, base, subject, Path(out)
        self.keys = tuple(base["latent_keys"])
        self.pre = {k: base["decoder"][k].float() for k in (*M.DECODER_BASE, "scale")}
        with torch.no_grad():
            self.pre |= M.init_field(
                M.base_decode(self.pre, torch.zeros(1, M.latent_size(subject)))[0],
                cfg.field_points,
                cfg.field_width,
            )
        if cfg.query == "canonical":  # the field is read on the mean identity with the same expression
            canon = torch.zeros(M.latent_size(subject))
            if "expression" in self.keys:
                canon[-subject.param_shapes["expression"][0] :] = 1
            self.pre["canon"] = canon
        elif cfg.query != "posed":
            raise InputError(None, f"query must be 'posed' or 'canonical', got {cfg.query!r}")
        self.enc, self.enc_samples = base["encoder"], tuple(base["enc_samples"])
        self.N = torch.as_tensor(np.asarray(neutral), dtype=torch.float32)
        self.S = torch.as_tensor(np.asarray(styled), dtype=torch.float32)
        self.faces = subject.faces
        self.unit = 0.01 * float(self.pre["scale"])
        self.distance = F.pyramid_distance
        if cfg.feature and cfg.encoder == "clip":
            self.distance = F.Clip(cfg.clip).distance
        elif cfg.encoder not in ("pyramid", "clip"):
            raise InputError(None, f"encoder must be 'pyramid' or 'clip', got {cfg.encoder!r}")
        self._targets()

    @torch.no_grad()
    def _targets(self) -> None:
        self.z_star = M.encode(self.enc, M.points(self.N[None], self.faces, *self.enc_samples))
        self.delta_star = self.S - self.N
        self.target = M.decode(self.pre, self.z_star)[0] + self.delta_star
        self.target_normals = M.vertex_normals(self.target[None], self.faces)[0]
        self.views = F.views(
            self.target.numpy(), yaws=np.linspace(-75, 75, self.cfg.views), size=self.cfg.size
        )
        self.target_images = [
            F.image(self.target, self.faces, v, F.rasterize(self.target, self.faces, v)) for v in self.views
        ]

    def config(self):
        return self.cfg

    def trainable(self) -> tuple[str, ...]:
        return M.DECODER_FIELD if self.cfg.train == "field" else M.DECODER_FIELD + M.DECODER_BASE

    def start(self) -> None:
        torch.manual_seed(self.cfg.seed)
        self.rng = np.random.default_rng(self.cfg.seed)
        self.ft = {k: v.clone() for k, v in self.pre.items()}
        self._optim()

    def _optim(self, state=None) -> None:
        ps = [self.ft[k].requires_grad_(True) for k in self.trainable()]
        self.opt = torch.optim.Adam(ps, lr=self.cfg.lr)
        if state is not None:
            self.opt.load_state_dict(state)

    def state_dict(self) -> dict:
        return {
            "finetuned": {k: v.detach().clone() for k, v in self.ft.items()},
            "optim": self.opt.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.ft = {k: v.clone() for k, v in state["finetuned"].items()}
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self._optim(state["optim"])

    def plan(self, total: int) -> None:
        self.total = int(total)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The fine-tuned decoder; with ``train: field`` its latent part is the pretrained one's and
        runs without gradients."""
        if self.cfg.train == "all":
            return M.decode(self.ft, z)
        with torch.no_grad():
            base = M.base_decode(self.pre, z)
            q = query(self.pre, z, base)
        return base + field(self.ft, q)

    def loss(self, step: int):
        c, f, u = self.cfg, self.faces, self.unit
        terms = {}
        pred = self.decode(self.z_star)
        if c.vertex:
            fi, bary = M.surface_samples(self.target.numpy(), f.numpy(), c.samples, self.rng)
            terms["vertex"] = (
                Ls.vertex_loss(M.points(pred, f, fi, bary), M.points(self.target[None], f, fi, bary)) / u**2
            )
        if c.feature:
            n = M.vertex_normals(pred, f)[0]
            imgs = [F.image(pred[0], f, v, F.rasterize(pred[0], f, v), n) for v in self.views]
            terms["feature"] = Ls.feature_loss(imgs, self.target_images, self.distance)
        if c.direction or c.normal or (c.distill and c.train == "all"):
            p = M.sample_latents(self.subject, self.rng, c.batch)
            z = M.latent(p, self.keys).float()
            if c.direction:
                with torch.no_grad():
                    d_pre = M.decode(self.pre, z)
                terms["direction"] = Ls.direction_loss(self.decode(z) - d_pre, self.delta_star)
            if c.distill and c.train == "all":
                with torch.no_grad():
                    b_pre = M.base_decode(self.pre, z)
                terms["distill"] = Ls.distill_loss(M.base_decode(self.ft, z), b_pre) / u**2
            if c.normal:
                z2 = z.clone()
                if "expression" in self.keys:
                    n_ex = self.subject.param_shapes["expression"][0]
                    z2[:, -n_ex:] = self.z_star[:, -n_ex:]
                n = M.vertex_normals(self.decode(z2), f)
                terms["normal"] = Ls.normal_loss(n, self.target_normals)
        loss = sum(getattr(c, f"w_{k}") * v for k, v in terms.items())
        return loss, {k: v.detach() for k, v in terms.items()}

    def update(self, loss, step: int, lr_scale: float) -> dict:
        frac = min(step / max(getattr(self, "total", self.cfg.iters), 1), 1.0)
        lr = self.cfg.lr * lr_scale * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"lr": lr}

    def finite(self) -> bool:
        return all(bool(torch.isfinite(self.ft[k]).all()) for k in self.trainable())

    def save_outputs(self) -> None:
        with atomic_path(self.out / STYLE_FILE) as tmp:
            torch.save(self.saved(), tmp)

    def saved(self) -> dict:
        """What ``STY/style.pt`` holds."""
        from gausslift.config import to_dict

        return {
            "format": FORMAT,
            "base": self.base["subject"],
            "latent_keys": list(self.keys),
            "pretrained": self.pre,
            "finetuned": {k: v.detach().clone() for k, v in self.ft.items()},
            "encoder": self.enc,
            "enc_samples": list(self.enc_samples),
            "pair": {"neutral": self.N, "styled": self.S, "latent": self.z_star[0]},
            "config": to_dict(self.cfg),
        }
