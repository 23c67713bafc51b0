"""``gausslift stylize apply`` and ``make-pair``.

A mesh: its latent is read by the encoder, and the style's change ``D(z) - P(z)`` is added to the
mesh itself (so the output keeps the input's detail). A parameter sequence (``.npz``, each key
``[T, ...]`` as ``synth`` writes ``params.npz``): the stylised subject (``load_subject("styled:STY")``)
poses every frame, the same code path ``synth`` and ``avatar`` take; one PLY per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.io.meshply import read_ply, write_ply
from gausslift.stylize import model as M
from gausslift.stylize.styles import apply_style, subject_style
from gausslift.subjects import load_subject
from gausslift.subjects.styled import read_style, style_change


@torch.no_grad()
def stylise_mesh(sty: dict, verts, faces) -> np.ndarray:
    X = torch.as_tensor(np.asarray(verts), dtype=torch.float32)[None]
    z = M.encode(sty["encoder"], M.points(X, torch.as_tensor(faces), *sty["enc_samples"]))
    return (X + style_change(sty["pretrained"], sty["finetuned"], z))[0].numpy()


def apply_mesh(sty_dir, mesh, out) -> str:
    sty = read_style(sty_dir)
    subject = load_subject(str(sty["base"]))
    v, _ = read_ply(mesh)
    if v.shape != (subject.num_vertices, 3):
        raise InputError(mesh, f"has {len(v)} vertices; the model's subject has {subject.num_vertices}")
    faces = subject.faces.numpy()
    write_ply(out, stylise_mesh(sty, v, faces), faces)
    return str(out)


def read_params(path, subject) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: torch.as_tensor(z[k], dtype=torch.float32) for k in subject.param_shapes if k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read parameters ({e})") from None
    missing = [k for k in subject.param_shapes if k not in d]
    T = len(next(iter(d.values()))) if d else 1
    zero = subject.zero_params(T)
    for k in missing:  # e.g. a file without eyes or translation: the rest pose for those
        d[k] = zero[k]
    subject.check_params(d)
    return d


@torch.no_grad()
def apply_params(sty_dir, params, out) -> str:
    subject = load_subject(f"styled:{sty_dir}")
    p = read_params(params, subject)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faces = subject.faces.numpy()
    T = len(next(iter(p.values())))
    for t in range(T):
        v = subject({k: x[t : t + 1] for k, x in p.items()}).vertices[0].numpy()
        write_ply(out / f"frame_{t:04d}.ply", v, faces)
    return str(out)


@torch.no_grad()
def make_pair(spec: str, style: str, seed: int, out) -> str:
    """A random identity at the neutral expression and its procedural style: neutral.ply, styled.ply."""
    subject = load_subject(spec)
    st = subject_style(style, subject)
    rng = np.random.default_rng(seed)
    p = M.sample_latents(subject, rng, 1)
    if "expression" in p:
        p["expression"] = torch.zeros_like(p["expression"])
    N = M.meshes(subject, p)[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faces = subject.faces.numpy()
    write_ply(out / "neutral.ply", N.numpy(), faces)
    write_ply(out / "styled.ply", apply_style(st, N).numpy(), faces)
    return str(out)
