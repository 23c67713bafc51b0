"""The trained identity field: subject, face-region texel layout, generator parameters, the training
identities' codes and the world the data lived in. ``RUN/model.pt`` holds everything but the subject
(loaded by its spec) and the layout (rebuilt from the subject and ``res``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.idfield import field as fd
from gausslift.idfield import generator as gen
from gausslift.idfield.config import IdFieldConfig
from gausslift.idfield.uvmap import build_layout
from gausslift.ioutil import atomic_path

MODEL_FILE = "model.pt"
MODEL_FORMAT = "gausslift-idfield"


class IdField:
    def __init__(self, cfg: IdFieldConfig, subject, params: dict, codes: torch.Tensor, names: list[str],
                 world: dict):
        self.cfg, self.subject, self.P, self.codes = cfg, subject, params, codes
        self.names, self.world = names, world
        self.layout = build_layout(subject, cfg.res, cfg.region)
        with torch.no_grad():
            rest = subject(subject.zero_params(1)).vertices[0].numpy()
        self.region = fd.Region(self.layout, subject.faces.cpu().numpy(), rest)

    @staticmethod
    def fresh(cfg: IdFieldConfig, subject, names: list[str], world: dict) -> IdField:
        g = torch.Generator().manual_seed(int(cfg.seed))
        P = gen.init_generator(cfg.code_dim, cfg.w_dim, cfg.map_layers, list(cfg.channels), cfg.const_res,
                               cfg.res, fd.N_ATTRS, g)
        codes = torch.randn(len(names), cfg.code_dim, generator=g) * cfg.code_init
        return IdField(cfg, subject, P, codes, names, world)

    def to(self, device) -> IdField:
        """Generator, codes and region buffers on ``device`` (in place; returns self). The subject stays
        where it is: posed meshes are moved by the caller."""
        self.P = {k: v.detach().to(device) for k, v in self.P.items()}
        self.codes = self.codes.detach().to(device)
        self.region.to(device)
        return self

    def mean_code(self) -> torch.Tensor:
        return self.codes.detach().mean(0)

    def code_of(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise InputError(None, f"unknown identity {name!r}: the model knows {len(self.names)} "
                             f"({', '.join(self.names[:3])}, ...)")
        return self.codes[self.names.index(name)].detach()

    def raw(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Codes [B,Z] -> per-Gaussian raw attributes {name: [B,N,c]}."""
        return fd.split(gen.generate(self.P, codes), self.region.texels)

    def gaussians(self, code: torch.Tensor, verts_full: torch.Tensor) -> dict[str, torch.Tensor]:
        """World Gaussians of one code [Z] on one posed full mesh [V,3]."""
        raw = {k: v[0] for k, v in self.raw(code[None]).items()}
        return fd.gaussians(raw, self.region, self.region.select(verts_full))

    def save(self, path: str | Path) -> None:
        data = {"format": MODEL_FORMAT, "config": asdict(self.cfg),
                "generator": {k: v.detach().clone() for k, v in self.P.items()},
                "codes": self.codes.detach().clone(), "names": list(self.names), "world": self.world}
        with atomic_path(path) as tmp:
            torch.save(data, tmp)


def load_model(run: str | Path, subject=None) -> IdField:
    """``RUN/model.pt`` (or a model file) -> :class:`IdField` (the subject loaded from its spec)."""
    from gausslift.subjects import load_subject

    p = Path(run)
    p = p / MODEL_FILE if p.is_dir() else p
    if not p.is_file():
        raise InputError(p, "idfield model not found (expected RUN/model.pt from 'gausslift idfield train')")
    d = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
        raise InputError(p, f"not an idfield model (format {MODEL_FORMAT!r} expected)")
    cfg = IdFieldConfig(**d["config"])
    subject = subject if subject is not None else load_subject(cfg.subject)
    return IdField(cfg, subject, d["generator"], d["codes"], d["names"], d["world"])


def identity_key(subject) -> str:
    """The subject's identity (shape) coefficients: ``identity`` (ICT) or ``shape`` (FLAME)."""
    return "identity" if "identity" in subject.param_shapes else "shape"


def world_stats(transforms: np.ndarray, distances: np.ndarray) -> dict:
    """Mean scale and rotation of the data's world_from_subject [M,4,4] (the fit's starting pose), and
    the mean camera distance."""
    A = transforms[:, :3, :3]
    s = np.cbrt(np.linalg.det(A))
    U, _, Vt = np.linalg.svd((A / s[:, None, None]).mean(0))
    return {"scale": float(s.mean()), "rotation": (U @ Vt).tolist(), "distance": float(np.mean(distances))}
