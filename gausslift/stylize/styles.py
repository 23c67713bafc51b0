"""Procedural styles: functions of a mesh, so the true stylised version of any identity and expression
is known.

A style is a list of parts. A part has a hard vertex set (from the subject's region map) and a soft
per-vertex weight ``w`` (1 on the set, ``exp(-d^2 / 2 sigma^2)`` at distance ``d`` from it on the
neutral template; ``sigma`` = 4% of the skin's bounding-box diagonal). It moves every vertex by

    v' = v + w * (A - I) (v - c(mesh))

with ``c(mesh)`` the mean of the part's set on the mesh being styled (so it follows identity and
expression) and ``A`` a 3x3 scale (model axes: x left, y up, z forward). Parts apply one after the
other. The weights hang on vertices (interior parts such as teeth move with the skin around them).

``goblin``: each ear x(1.35, 1.7, 1.35); the nose x1.5; the chin (face below the mouth) sharpened
x(0.7, 1.25, 1.25). ``cartoon``: each eye (eye skin + eyeball) x1.3; the jaw (face and mouth below
the nose) x(0.82, 0.82, 0.88).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from gausslift.errors import InputError

STYLES = ("goblin", "cartoon")


@dataclass
class Style:
    name: str
    sets: list[np.ndarray]  # [V] bool per part
    weights: torch.Tensor  # [K, V]
    scales: torch.Tensor  # [K, 3, 3]


def _soft(template: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    d, _ = cKDTree(template[mask]).query(template)
    return np.exp(-0.5 * (d / sigma) ** 2)


def _sides(template: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    return [m for m in (mask & (template[:, 0] > 0), mask & (template[:, 0] < 0)) if m.any()]


def _need(regions: dict, *names: str) -> None:
    missing = [n for n in names if n not in regions or not regions[n].any()]
    if missing:
        raise InputError(None, f"this subject's region map has no {missing}: the procedural styles need them")


def part_sets(name: str, template: np.ndarray, regions: dict) -> list[tuple[np.ndarray, tuple]]:
    """(vertex set, diagonal scale) per part of style ``name``."""
    y = template[:, 1]
    if name == "goblin":
        _need(regions, "ears", "nose", "mouth", "face")
        mouth_y = (
            template[regions["mouth"] & regions["face"], 1]
            if (regions["mouth"] & regions["face"]).any()
            else template[regions["mouth"], 1]
        )
        chin = regions["face"] & (y < mouth_y.min())
        parts = [(m, (1.35, 1.7, 1.35)) for m in _sides(template, regions["ears"])]
        return parts + [(regions["nose"], (1.5, 1.5, 1.5)), (chin, (0.7, 1.25, 1.25))]
    if name == "cartoon":
        _need(regions, "eyes", "nose", "face")
        nose_y = template[regions["nose"], 1].min()
        low = (regions["face"] | regions.get("mouth", np.zeros_like(regions["face"]))) & (y < nose_y)
        if "mouth_interior" in regions:
            low |= regions["mouth_interior"]
        parts = [(m, (1.3, 1.3, 1.3)) for m in _sides(template, regions["eyes"])]
        return parts + [(low, (0.82, 0.82, 0.88))]
    raise InputError(None, f"unknown style {name!r}; built in: {', '.join(STYLES)}")


def make_style(name: str, template, regions: dict) -> Style:
    """The style ``name`` on a subject with neutral ``template`` [V, 3] and ``regions``."""
    t = np.asarray(template, np.float64)
    skin = regions.get("skin", np.ones(len(t), bool))
    sigma = 0.04 * float(np.linalg.norm(np.ptp(t[skin], 0)))
    parts = [(m, s) for m, s in part_sets(name, t, regions) if m.any()]
    w = np.stack([_soft(t, m, sigma) for m, _ in parts])
    A = np.stack([np.diag(s) for _, s in parts])
    return Style(
        name,
        [m for m, _ in parts],
        torch.as_tensor(w, dtype=torch.float32),
        torch.as_tensor(A, dtype=torch.float32),
    )


def apply_style(style: Style, verts) -> torch.Tensor:
    """Stylise meshes [B, V, 3] or [V, 3] (numpy or torch) -> torch, same shape."""
    v = torch.as_tensor(verts)
    squeeze = v.ndim == 2
    v = v[None] if squeeze else v
    eye = torch.eye(3, dtype=v.dtype)
    for k, m in enumerate(style.sets):
        idx = torch.as_tensor(np.flatnonzero(m))
        c = v[:, idx].mean(1, keepdim=True)
        d = (v - c) @ (style.scales[k].to(v.dtype) - eye).T
        v = v + style.weights[k].to(v.dtype)[None, :, None] * d
    return v[0] if squeeze else v


def subject_style(name: str, subject) -> Style:
    """The style on a parametric subject (its neutral mesh and region map)."""
    with torch.no_grad():
        t = subject(subject.zero_params(1)).vertices[0].double().numpy()
    return make_style(name, t, subject.regions)
