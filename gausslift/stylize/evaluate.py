"""``gausslift stylize eval``: a stylised model against the truth, with the baselines.

Held-out set (``--style NAME``): ``n`` random (identity, expression) samples of the base subject
(pose at zero; a seed no training run uses), the truth being the procedural style of each mesh. Every
method maps the input mesh ``X`` (latent ``z``) to a stylised mesh:

* ``delta transfer``: ``X + (S - N)`` of the example pair;
* ``deformation transfer``: the pair's per-triangle deformation gradients on ``X``'s triangles, then
  the Poisson solve (:mod:`gausslift.stylize.transfer`);
* ``pretrained (no fine-tune)``: ``X + P(z) - P(z)`` = ``X`` (and ``pretrained decoder``: ``P(z)``);
* ``fine-tuned``: ``X + D(z) - P(z)`` (the style's change, as the stylised subject applies it), also
  ``fine-tuned decoder`` (``D(z)`` itself) and ``fine-tuned, encoded z`` (``z`` read by the encoder
  from ``X``, as ``apply MESH.ply`` does);
* every ``--compare NAME=STY`` model the same way as ``fine-tuned``.

A model of the gradient-domain branch (:mod:`gausslift.stylize.jacobian`) applies its Jacobians to
``X``'s own triangles (``fine-tuned``, ``fine-tuned, encoded z``) or to ``P(z)``'s (``fine-tuned
decoder``).

Metrics (mm, degrees): per-vertex error (mean and 95th percentile over every vertex of every sample),
the mean angle between vertex normals (skin vertices), and expression fidelity: the mean distance of
the change between the sample's neutral-expression mesh and the sample, stylised, from the truth's
change. ``expressive``: the half of the samples with the largest mean expression displacement.
``--truth DIR``: pairs ``*input*.ply`` / ``*styled*.ply`` (sorted names) scored with encoded latents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.io.meshply import read_ply
from gausslift.stylize import jacobian as J
from gausslift.stylize import model as M
from gausslift.stylize.pretrain import mm_per_unit
from gausslift.stylize.styles import apply_style, subject_style
from gausslift.stylize.transfer import DeformationTransfer
from gausslift.subjects.styled import decode, style_change

EVAL_SEED = 2_000_029


def _change(sty: dict):
    return lambda z: style_change(sty["pretrained"], sty["finetuned"], z)


@torch.no_grad()
def _batched(fn, *xs, size: int = 10) -> torch.Tensor:
    return torch.cat([fn(*(x[i : i + size] for x in xs)) for i in range(0, len(xs[0]), size)])


def _apply(sty: dict, faces):
    """(f(X, z) -> stylised X, g(z) -> decoder output) of a model of either branch."""
    if sty.get("format") == J.FORMAT_J:
        m = J.Model(sty, faces)
        return m.apply, m.decoder
    ch = _change(sty)
    return (lambda X, z: X + ch(z)), (lambda z: decode(sty["finetuned"], z))


def methods(sty: dict, compare: dict[str, dict], faces) -> dict:
    """name -> f(X, z, encoded z) -> stylised meshes."""
    N, S = sty["pair"]["neutral"], sty["pair"]["styled"]
    d = S - N
    dt = DeformationTransfer(N.double().numpy(), S.double().numpy(), faces)
    app, dec = _apply(sty, faces)
    out = {
        "delta transfer": lambda X, z, ze: X + d,
        "deformation transfer": lambda X, z, ze: dt(X),
        "pretrained (no fine-tune)": lambda X, z, ze: X,
        "pretrained decoder": lambda X, z, ze: decode(sty["pretrained"], z),
        "fine-tuned": lambda X, z, ze: app(X, z),
        "fine-tuned decoder": lambda X, z, ze: dec(z),
        "fine-tuned, encoded z": lambda X, z, ze: app(X, ze),
    }
    for name, other in compare.items():
        out[name] = (lambda a: lambda X, z, ze: a(X, z))(_apply(other, faces)[0])
    return out


def _normal_angle(P, T, faces, mask) -> torch.Tensor:
    a, b = M.vertex_normals(P, faces), M.vertex_normals(T, faces)
    ang = torch.rad2deg(torch.arccos((a * b).sum(-1).clamp(-1, 1)))
    return ang[:, mask]


def scores(P, T, faces, mm, skin, P0=None, T0=None) -> dict:
    err = (P - T).norm(dim=-1) * mm
    out = {
        "vertex_mm_mean": float(err.mean()),
        "vertex_mm_p95": float(torch.quantile(err.flatten()[::7], 0.95)),
        "normal_deg_mean": float(_batched(lambda p, t: _normal_angle(p, t, faces, skin), P, T).mean()),
    }
    if P0 is not None:
        out["expression_mm_mean"] = float((((P - P0) - (T - T0)).norm(dim=-1) * mm).mean())
    return out


def evaluate_style(sty: dict, subject, style: str, n: int = 100, compare: dict | None = None) -> dict:
    keys, faces, mm = tuple(sty["latent_keys"]), subject.faces, mm_per_unit(subject)
    st = subject_style(style, subject)
    rng = np.random.default_rng(EVAL_SEED)
    p = M.sample_latents(subject, rng, n)
    p0 = dict(p)
    if "expression" in p0:
        p0["expression"] = torch.zeros_like(p["expression"])
    X, X0 = M.meshes(subject, p), M.meshes(subject, p0)
    z, z0 = M.latent(p, keys).float(), M.latent(p0, keys).float()
    enc = lambda X: M.encode(sty["encoder"], M.points(X, faces, *sty["enc_samples"]))  # noqa: E731
    ze, ze0 = _batched(enc, X), _batched(enc, X0)
    T, T0 = apply_style(st, X), apply_style(st, X0)
    motion = ((X - X0).norm(dim=-1) * mm).mean(1)
    expressive = motion >= motion.median()
    skin = torch.as_tensor(subject.regions.get("skin", np.ones(subject.num_vertices, bool)))
    table = {}
    for name, f in methods(sty, compare or {}, faces).items():
        P, P0 = _batched(f, X, z, ze), _batched(f, X0, z0, ze0)
        table[name] = {
            "all": scores(P, T, faces, mm, skin, P0, T0),
            "expressive": scores(
                P[expressive], T[expressive], faces, mm, skin, P0[expressive], T0[expressive]
            ),
        }
    return {
        "style": style,
        "samples": n,
        "expressive_samples": int(expressive.sum()),
        "expression_motion_mm_mean": float(motion.mean()),
        "methods": table,
    }


def evaluate_truth(sty: dict, subject, folder: str | Path) -> dict:
    folder = Path(folder)
    ins, outs = sorted(folder.rglob("*input*.ply")), sorted(folder.rglob("*styled*.ply"))
    if not ins or len(ins) != len(outs):
        raise InputError(
            folder, f"expected pairs of *input*.ply and *styled*.ply, found {len(ins)} and {len(outs)}"
        )
    X = torch.as_tensor(np.stack([read_ply(f)[0] for f in ins]), dtype=torch.float32)
    T = torch.as_tensor(np.stack([read_ply(f)[0] for f in outs]), dtype=torch.float32)
    if X.shape[1:] != (subject.num_vertices, 3) or T.shape != X.shape:
        raise InputError(folder, f"the meshes must have the subject's {subject.num_vertices} vertices")
    faces, mm = subject.faces, mm_per_unit(subject)
    enc = lambda X: M.encode(sty["encoder"], M.points(X, faces, *sty["enc_samples"]))  # noqa: E731
    ze = _batched(enc, X)
    skin = torch.as_tensor(subject.regions.get("skin", np.ones(subject.num_vertices, bool)))
    table = {}
    for name, f in methods(sty, {}, faces).items():
        if name in ("pretrained decoder", "fine-tuned decoder", "fine-tuned"):
            continue  # these need the true latents
        table[name] = {"all": scores(_batched(f, X, ze, ze), T, faces, mm, skin)}
    return {"truth": str(folder), "samples": len(X), "methods": table}


def markdown(result: dict) -> str:
    rows = [
        "| method | split | vertex mm mean | vertex mm p95 | normal deg | expression mm |",
        "|---|---|---|---|---|---|",
    ]
    for name, splits in result["methods"].items():
        for split, s in splits.items():
            rows.append(
                f"| {name} | {split} | {s['vertex_mm_mean']:.3f} | {s['vertex_mm_p95']:.3f} | "
                f"{s['normal_deg_mean']:.2f} | {s.get('expression_mm_mean', float('nan')):.3f} |"
            )
    return "\n".join(rows)
